"""Regular expressions from the goal file: compiled once when the goal is validated, matched with a time bound.

Patterns are compiled with the `regex` package, which reads Python's `re` syntax and whose matcher takes a
timeout: a pattern that backtracks catastrophically on some line gives up after MATCH_SECONDS of CPU time
instead of hanging the run. Validation also refuses the usual shape of such patterns, an unbounded repeat
inside a repeat (`(a+)+`, `(\\d*)*x`), so most of them never meet a check's output.
"""

from __future__ import annotations

import functools
import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Annotated, Any, Iterator

import regex
from pydantic import AfterValidator

from goalloop.goal.values import Mistake

MATCH_SECONDS = 1.0
"""CPU time one match of a goal's pattern may take on one line or file."""


class PatternTimeout(Exception):
    """A goal's pattern took more than MATCH_SECONDS on one text."""

    def __init__(self, pattern: str, length: int) -> None:
        super().__init__(f"the pattern `{pattern}` took more than {MATCH_SECONDS:g} s on a text of {length:,} characters")
        self.pattern = pattern
        self.length = length


@functools.lru_cache(maxsize=256)
def compiled(pattern: str, flags: int = 0) -> regex.Pattern[str]:
    """The pattern compiled once (validation compiles it first; every later use gets the same object)."""
    return regex.compile(pattern, flags)


def search(pattern: regex.Pattern[str], text: str) -> regex.Match[str] | None:
    try:
        return pattern.search(text, timeout=MATCH_SECONDS)
    except TimeoutError:
        raise PatternTimeout(pattern.pattern, len(text)) from None


_CROSSES_LINES = regex.compile(r"\\[AZzG]|\(\?<?!|\(\?<=")
"""Pattern parts that could judge a line differently once it is joined to its neighbours."""


def last_in_lines(pattern: regex.Pattern[str], lines: list[str]) -> regex.Match[str] | None:
    """The match in the last of `lines` that `pattern` matches (each line matched on its own), or None.

    Lines are searched joined (^ and $ at line ends), halving to find the last one that holds a match: a
    batch of output costs a few calls, each with the time bound, not one call per line. Any line a pattern
    matches on its own is matched joined too; what only the joined text matches is checked line by line."""
    if _CROSSES_LINES.search(pattern.pattern):
        return _last_line_by_line(pattern, lines)
    joined = compiled(pattern.pattern, pattern.flags | regex.MULTILINE)

    def holds_match(low: int, high: int) -> bool:
        return search(joined, "\n".join(lines[low:high])) is not None

    if not lines or not holds_match(0, len(lines)):
        return None
    low, high = 0, len(lines)
    while high - low > 1:
        middle = (low + high) // 2
        if holds_match(middle, high):
            low = middle
        else:
            high = middle
    return search(pattern, lines[low]) or _last_line_by_line(pattern, lines)


def _last_line_by_line(pattern: regex.Pattern[str], lines: list[str]) -> regex.Match[str] | None:
    for line in reversed(lines):
        match = search(pattern, line)
        if match is not None:
            return match
    return None


def find_all(pattern: regex.Pattern[str], text: str) -> list[regex.Match[str]]:
    try:
        return list(pattern.finditer(text, timeout=MATCH_SECONDS))
    except TimeoutError:
        raise PatternTimeout(pattern.pattern, len(text)) from None


def problem(pattern: str) -> tuple[str, str] | None:
    """(what is wrong, the fix) for a pattern that does not compile or can backtrack catastrophically."""
    try:
        compiled(pattern)
    except regex.error as exc:
        return (f"not a valid regular expression: {exc}",
                "close every ( [ { you open, and write the regex in single quotes so backslashes stay as written")
    piece = nested_repeat(pattern)
    if piece is not None:
        return (
            f"`{piece}` is a repeat inside a repeat, which can take hours on one long line (catastrophic backtracking)",
            "repeat once, as in '^score: (\\d+)' or '(a+)$' instead of '(a+)+$'; or make the inner repeat "
            "possessive (a++) or atomic ((?>a+))",
        )
    return None


def nested_repeat(pattern: str) -> str | None:
    """The first group that repeats a part which itself repeats without bound, as the user wrote it."""
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None  # `regex` syntax `re` does not know: the time bound at match time still holds
    for body in _nested_repeats(parsed):
        start, end = _span_of(body, pattern)
        return pattern[start:end] if 0 <= start < end <= len(pattern) else pattern
    return None


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)


def _nested_repeats(parsed: Any) -> Iterator[Any]:
    """The parsed bodies of repeats that hold an unbounded repeat themselves, outermost first."""
    for op, av in parsed.data:
        if op in _REPEATS:
            low, high, body = av
            if high > 1 and _repeats_unbounded(body):
                yield body
            yield from _nested_repeats(body)
        else:
            for child in _children(op, av):
                yield from _nested_repeats(child)


def _repeats_unbounded(parsed: Any) -> bool:
    for op, av in parsed.data:
        if op in _REPEATS and av[1] == sre_constants.MAXREPEAT:
            return True
        if any(_repeats_unbounded(child) for child in _children(op, av)):
            return True
    return False


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns of one parsed item that can backtrack (atomic groups and possessive repeats cannot)."""
    if op is sre_constants.SUBPATTERN:
        return [av[-1]]
    if op is sre_constants.BRANCH:
        return list(av[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [av[1]]
    if op is sre_constants.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    if op in _REPEATS:
        return [av[2]]
    return []


def _span_of(body: Any, pattern: str) -> tuple[int, int]:
    """Where a repeated group holding an unbounded repeat sits in the pattern text, for the message."""
    opens = [i for i, c in enumerate(pattern) if c == "(" and (i == 0 or pattern[i - 1] != "\\")]
    for start in opens:
        depth = 0
        for index in range(start, len(pattern)):
            char = pattern[index]
            if index and pattern[index - 1] == "\\":
                continue
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
        else:
            continue
        end = index + 1
        if end < len(pattern) and pattern[end] in "*+{":
            end = pattern.find("}", end) + 1 if pattern[end] == "{" else end + 1
            if end and _is_nested(pattern[start:end]):
                return start, end
    return 0, len(pattern)


def _is_nested(piece: str) -> bool:
    try:
        parsed = sre_parser.parse(piece)
    except re.error:
        return False
    return any(True for _ in _nested_repeats(parsed))


def _valid(pattern: str) -> str:
    found = problem(pattern)
    if found is not None:
        raise Mistake(*found)
    return pattern


Regex = Annotated[str, AfterValidator(_valid)]
"""A regular expression from the goal: compiles, and cannot backtrack catastrophically by its shape."""
