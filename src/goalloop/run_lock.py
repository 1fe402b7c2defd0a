"""The exclusive lock a run holds on itself and on its goal."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from goalloop.errors import LockHeld


class RunLock:
    """An exclusive lock on a run and on its goal, released when the process dies (kill -9 included).

    The holder's pid and run id are written beside the lock so a second process can say who holds it.
    """

    def __init__(self, lock_path: Path, what: str) -> None:
        self.lock_path = lock_path
        self.what = what
        self._lock = FileLock(str(lock_path))
        self._owner = lock_path.with_suffix(".owner")

    def acquire(self, run_id: str) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            owner = self._owner.read_text(encoding="utf-8").strip() if self._owner.exists() else "another process"
            raise LockHeld(
                f"{self.what} is already being run by {owner}",
                fix="wait for it to finish, or stop that process; a lock left by a dead process is taken over",
            ) from None
        self._owner.write_text(f"pid {os.getpid()} (run {run_id})\n", encoding="utf-8")

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
