"""Holding Ctrl-C (SIGINT) and SIGTERM back while something must finish: a git write, the loop's clean-up."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


_holding: list[bool] = []
"""The holds in force in the main thread, outermost first: an inner hold leaves the outer one's rule."""


@contextmanager
def interrupts_held(raise_after: bool = False) -> Iterator[None]:
    """Inside, SIGINT and SIGTERM do not interrupt: they are dropped (the run is already stopping), or with
    `raise_after` delivered once the block is done, to the handler they would have reached (so a Ctrl-C
    raises KeyboardInterrupt then). With `raise_after` SIGHUP is held too. Outside the main thread, and
    inside another hold, a no-op."""
    if threading.current_thread() is not threading.main_thread() or _holding:
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if raise_after else (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in held}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    _holding.append(raise_after)
    try:
        yield
    finally:
        _holding.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and raise_after:
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        raise KeyboardInterrupt
