"""A file that grows by whole lines (the ledger's results.tsv and events.jsonl), and when its lines reach the disk.

Every line is written at once, so a killed process loses none (the kernel holds the bytes). When it reaches
the disk, which is what a power cut spares, is the writer's choice for each line:

- `NOW`: fsynced before `append` returns;
- `SOON`: fsynced by the file's own thread within `SOON_SECONDS`, together with the lines written
  meanwhile: a run of cheap attempts pays for one fsync every half second, not two an attempt (each one
  also stalls the other writes to that disk while the journal commits). `sync()` syncs at once and waits,
  and must come before anything that relies on the line being on disk, such as the branch moving past a row;
- `WITH_NEXT`: on disk with the next line that is synced (progress a power cut may lose).

A write the disk refuses part-way (full, read-only) is cut back off, so the next line after a resume never
lands glued to half of one. An fsync that fails in the thread is raised by the next `append` or `sync`.
"""

from __future__ import annotations

import os
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Callable

SOON_SECONDS = 0.5
"""How long a `SOON` line may wait for its fsync: what a power cut can take back (rows of attempts that
were not kept, whose commits a resume finds and sets aside to be proposed again)."""


class Sync(Enum):
    NOW = "now"
    SOON = "soon"
    WITH_NEXT = "with the next"


class LineFile:
    def __init__(self, path: Path, after: Callable[[bytes], None] | None = None) -> None:
        """`after`: called with each text written, in the file's order (under the lock)."""
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._lock = threading.Lock()
        """Slots of a parallel round append from their threads: a cut-back must not take another's line."""
        self._after = after
        self._synced = threading.Condition()
        self._written = 0
        """Appends made so far; `_on_disk` of them are known to be on disk."""
        self._on_disk = 0
        self._failed: OSError | None = None
        self._syncer: threading.Thread | None = None
        self._urgent = False
        """`sync()` is waiting: fsync without waiting for more lines."""
        self._idle = False
        """The thread waits for a line to sync (and only then needs waking)."""
        self._closing = False

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def append(self, text: str, sync: Sync = Sync.NOW) -> None:
        data = text.encode("utf-8")
        self._raise_failure()
        with self._lock:
            before = self.size()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
                if sync is Sync.NOW:
                    os.fsync(self.fd)
            except OSError:
                try:
                    os.ftruncate(self.fd, before)
                except OSError:
                    pass
                raise
            with self._synced:
                self._written += 1
                if sync is Sync.NOW:
                    self._on_disk = self._written
                elif sync is Sync.SOON and (self._syncer is None or self._idle):
                    self._start_syncer()
                    self._synced.notify_all()
            if self._after is not None:
                self._after(text.encode("utf-8"))

    def sync(self) -> None:
        """Return once every line written so far is on disk."""
        with self._synced:
            wanted = self._written
            if self._on_disk < wanted:
                self._urgent = True
                self._start_syncer()
                self._synced.notify_all()
            while self._on_disk < wanted and self._failed is None:
                self._synced.wait()
        self._raise_failure()

    @property
    def unsynced(self) -> bool:
        with self._synced:
            return self._on_disk < self._written

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.sync()
        except OSError:
            pass  # raised already, or it will be by the next writer: the bytes are written either way
        with self._synced:
            self._closing = True
            self._synced.notify_all()
        if self._syncer is not None:
            self._syncer.join()
        os.close(self.fd)
        self.fd = -1

    def _start_syncer(self) -> None:
        """(Under `_synced`.)"""
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_forever, name=f"fsync {self.path.name}", daemon=True)
            self._syncer.start()

    def _sync_forever(self) -> None:
        while True:
            with self._synced:
                while self._on_disk >= self._written and not self._closing:
                    self._idle = True
                    self._synced.wait()
                self._idle = False
                if self._on_disk >= self._written:
                    return
                due = time.monotonic() + SOON_SECONDS
                while not (self._urgent or self._closing) and (left := due - time.monotonic()) > 0:
                    self._synced.wait(left)
                self._urgent = False
                target = self._written
            try:
                os.fsync(self.fd)
            except OSError as exc:  # kept with the file's name, so the run's fault names it (a full disk)
                with self._synced:
                    self._failed = OSError(exc.errno, exc.strerror, str(self.path))
                    self._synced.notify_all()
                return
            with self._synced:
                self._on_disk = max(self._on_disk, target)
                self._synced.notify_all()

    def _raise_failure(self) -> None:
        failed = self._failed
        if failed is not None:
            raise failed
