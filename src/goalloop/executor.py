"""Executors run a round's candidates (propose, commit, check: one task a slot) and hand back their results.

The loop decides verdicts and records; an executor only runs tasks. `ThreadExecutor` runs them in threads
of this process (the heavy work is subprocesses, so threads suffice); a distributed engine can take the
checks later by implementing the same protocol, without touching loop.py.

Ctrl-C reaches only the main thread. On KeyboardInterrupt the thread executor kills every process group
the slots recorded (their `child*.pgid` files), again and again until every worker thread has ended (a
worker that goes on to its next command finds it killed too), then re-raises: the loop then saves what
the proposals left, as for a single attempt. A round of one runs in the calling thread, exactly as a
single attempt always has. A second Ctrl-C while the slots are being stopped is noted, not raised: it
would leave workers running beside the loop's own clean-up (`interrupts_held`).

Whether a worker has ended is told by an event it sets, never by `Thread.is_alive`: on CPython 3.11 a
`join(timeout)` that a Ctrl-C interrupts marks the thread stopped while it still runs (the loop's clean-up
then raced a worker still committing its attempt).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from goalloop.check import kill_leftover_group
from goalloop.interrupts import interrupts_held

T = TypeVar("T")
STOP_WAIT_SECONDS = 60.0
"""How long an interrupted round waits for its workers (a proposer mid-way through an API call) to end."""


class Executor(Protocol):
    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Run every task, at once where possible; return their results in task order.

        If a task raised, the first such exception (in task order) is raised once every task has ended.
        """
        ...


class ThreadExecutor:
    def __init__(self, pid_files: Callable[[], Sequence[Path]]) -> None:
        self.pid_files = pid_files
        """The process-group files of every slot, read again at each kill (a worker may start a new process)."""

    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        if len(tasks) == 1:
            return [tasks[0]()]
        results: list[T | None] = [None] * len(tasks)
        errors: list[BaseException | None] = [None] * len(tasks)
        ended = [threading.Event() for _ in tasks]

        def work(index: int) -> None:
            try:
                results[index] = tasks[index]()
            except BaseException as exc:  # handed to the main thread
                errors[index] = exc
            finally:
                ended[index].set()

        threads = [threading.Thread(target=work, args=(i,), name=f"goalloop-slot-{i}", daemon=True)
                   for i in range(len(tasks))]
        try:
            with interrupts_held(raise_after=True):  # a Ctrl-C lands once every worker is under way
                for thread in threads:
                    thread.start()
            for event in ended:
                event.wait()
        except KeyboardInterrupt:
            with interrupts_held():
                self._stop(ended)
            raise
        for error in errors:
            if error is not None:
                raise error
        return results  # type: ignore[return-value]

    def _stop(self, ended: list[threading.Event]) -> None:
        """Kill the slots' process groups until every worker has ended (or STOP_WAIT_SECONDS have passed)."""
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while not all(event.is_set() for event in ended) and time.monotonic() < deadline:
            for pid_file in self.pid_files():
                kill_leftover_group(pid_file)
            for event in ended:
                event.wait(0.05)
