"""Turning a check's output into a reason a person can act on: the failing test or the error, in plain text.

A check's last line is often a hint ("See above for details.", "error: Recipe for target failed", a
summary bar of `=`), coloured with ANSI codes. `failure_reason` picks, in this order: the first test
the runner names as failing (pytest, unittest, cargo, go test, jest/vitest), then the last line that
names an error (a Python exception, `error:`, `fatal:`, "No module named ..."), then the last line
that is not a hint; colour and control codes are removed from all of it.
"""

from __future__ import annotations

import re

MAX_REASON = 300

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_FAILING_TEST = [
    re.compile(r"^(FAILED|ERROR) (?!\()\S+.*"),                           # pytest short summary
    re.compile(r"^(FAIL|ERROR): \S+ \(.*\)"),                         # unittest
    re.compile(r"^test \S+ \.\.\. FAILED$"),                          # cargo test
    re.compile(r"^--- FAIL: \S+"),                                    # go test
    re.compile(r"^● (?!Console\b).+"),                                # jest
    re.compile(r"^(FAIL|×|✕)\s+\S+ > .+"),                              # vitest
]
_ERROR_LINE = re.compile(
    r"^(\w+\.)*\w*(Error|Exception|Exit|Interrupt)\b(:|$)"             # Python exception
    r"|\bNo module named\b|\bcommand not found\b|\bnot found\b: |No such file or directory"
    r"|^error(\[\w+\])?:|^fatal( error)?:|^E\s{2,}\S|\bpanicked at\b|^Error: |\bSyntaxError\b",
    re.IGNORECASE,
)
_HINT = re.compile(
    r"^(hint|note|help|tip|info)\b|see above|for (more )?details|complete log|--backtrace|rerun|re-run"
    r"|^[=\-_*~#. ]+$|^\W*$|^make(\[\d+\])?: \*\*\*|^npm (ERR!|error) (a complete log|code|path|command)"
    r"|^error: (recipe|command) .*failed|^error: test failed, to rerun|exit (status|code) \d+\.?$",
    re.IGNORECASE,
)


def strip_ansi(text: str) -> str:
    """`text` without colour codes, cursor moves or other control characters (tabs and newlines stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def clean_lines(text: str) -> list[str]:
    return [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]


def failure_reason(output: str, fallback: str = "") -> str:
    """The line of a failed check's output that says best what went wrong (see the module docstring)."""
    lines = clean_lines(output)
    for pattern in _FAILING_TEST:
        failing = [line for line in lines if pattern.match(line)]
        if failing:
            more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
            return _cut(failing[0] + more)
    errors = [line for line in lines if _ERROR_LINE.search(line) and not _HINT.search(line)]
    if errors:
        return _cut(errors[-1])
    plain = [line for line in lines if not _HINT.search(line)]
    if plain:
        return _cut(plain[-1])
    return _cut(lines[-1]) if lines else fallback


def _cut(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"
