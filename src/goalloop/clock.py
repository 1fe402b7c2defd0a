"""How goalloop writes a length of time: `2h05m`, `3m`, `0.4s`. The standard library alone, so that
`goalloop status` can import it without the goal's models."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def format_seconds(seconds: float) -> str:
    """A short time in tenths (`0.4s`), a longer one as `format_duration` writes it."""
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)
