"""How a goal file writes durations, sums of money and deadlines, and the Mistake a validator raises.

Durations are written `90s`, `10m`, `8h` (or `1h30m`, or a plain number of seconds); sums of money as `5`,
`5.00` or `"$5"`; a deadline as a clock time "07:30" or a date and time.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from goalloop.clock import format_duration, format_seconds  # noqa: F401 (spelled there for status, which starts light)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_FORMS = "a number followed by s, m, h or d, such as 90s, 10m, 8h or 1h30m"
_DURATION_WORDS = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)\s*(?:,\s*|and\s+)?", re.IGNORECASE)
_UNIT_WORDS = {
    **dict.fromkeys(["ms", "msec", "msecs", "millisecond", "milliseconds"], "ms"),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "s"),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], "m"),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "h"),
    **dict.fromkeys(["d", "day", "days"], "d"),
}


class Mistake(ValueError):
    """A validator's complaint that knows the fix and, when it is about one key of the model, that key.

    `parse_goal` reports it at the line of `at` (relative to the model that raised it), with `fix`.
    """

    def __init__(self, message: str, fix: str, at: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.at = at


def _duration_spelled_out(text: str) -> str | None:
    """`10 minutes` -> `10m`, `1 hour and 30 mins` -> `1h30m`; None when `text` is no such thing."""
    parts, end = [], 0
    for match in _DURATION_WORDS.finditer(text):
        unit = _UNIT_WORDS.get(match.group(2).lower())
        if match.start() != end or unit is None:
            return None
        parts.append(match.group(1) + unit)
        end = match.end()
    return "".join(parts) if parts and end == len(text) else None


def parse_duration(value: Any) -> float:
    """`90s`, `10m`, `8h`, `1h30m` or a number of seconds -> seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Mistake(f"{_show(value)} is not a duration", fix=f"write {_DURATION_FORMS}")
    if isinstance(value, (int, float)):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            spelled = _duration_spelled_out(value.strip())
            raise Mistake(
                f"{_show(value)} is not a duration",
                fix=f"write {spelled} (durations are {_DURATION_FORMS})" if spelled else f"write {_DURATION_FORMS}",
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise Mistake(
            f"a duration must be more than zero, got {_show(value)}"
            if seconds <= 0
            else f"{_show(value)} is not a duration",
            fix=f"write {_DURATION_FORMS}, or delete the line to use the default",
        )
    return seconds


def parse_money(value: Any) -> float:
    """`5`, `5.00` or `"$5"` -> 5.0 (US dollars)."""
    fix = "write a number of dollars, such as 5 or 5.00 (no words or currency name)"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Mistake(f"{_show(value)} is not a sum of money", fix=fix)
    text = value.strip().lstrip("$").strip() if isinstance(value, str) else value
    try:
        amount = float(text) if not isinstance(text, int) or abs(text) < 10**300 else math.inf
    except ValueError:
        number = re.fullmatch(r"\$?\s*(\d+(?:\.\d+)?)\s*(?:usd|dollars?|\$)?", str(value).strip(), re.IGNORECASE)
        raise Mistake(
            f"{_show(value)} is not a sum of money",
            fix=f"write {number.group(1)} (a number of dollars)" if number else fix,
        ) from None
    if not math.isfinite(amount):
        raise Mistake(f"{_show(value)} is not a sum of money", fix=fix)
    if amount < 0:
        raise Mistake(f"a sum of money must be zero or more, got {_show(value)}", fix=fix)
    return amount


Duration = Annotated[float, BeforeValidator(parse_duration)]
Money = Annotated[float, BeforeValidator(parse_money)]


def resolve_deadline(text: str, started: datetime) -> datetime:
    """The moment `text` names: a clock time "HH:MM" is the first such time after `started` (local time)."""
    text = str(text).strip()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise Mistake(f"{text!r} is not a time of day", fix="write a 24-hour time such as 07:30")
        moment = started.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return moment if moment > started else moment + timedelta(days=1)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise Mistake(f"{text!r} is a date without a time of day",
                      fix=f'write the date and the time of day in quotes: deadline: "{text}T07:30"')
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Mistake(f"{text!r} is not a clock time or a date and time",
                      fix='write "07:30" (the next 07:30) or "2026-11-22T07:30"') from None


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: 'text', 12, true, nothing, a list, a mapping."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)
