"""Guards: figures besides the metric that must not get worse for an attempt to be kept or to pass.

The count of tests run is the guard every pass/fail goal gets by default: a "pass" that ran fewer tests
than the kept state (a test renamed so it is no longer collected, skipped, deselected, deleted) is
rejected with both counts named. The count is read from the summary each known runner prints:

    pytest    `1 failed, 4 passed, 1 skipped in 0.12s`   run = passed + failed + errors + xpassed
    unittest  `Ran 5 tests in 0.001s` / `OK (skipped=1)` run = ran - skipped - expected failures
    cargo     `test result: ok. 5 passed; 0 failed; 1 ignored; ...` (summed over test binaries)
    go test   `--- PASS: TestX` / `--- FAIL: TestX` top-level lines (needs `go test -v`) or `-json` events
    jest      `Tests:       1 failed, 4 passed, 5 total`   run = failed + passed
    vitest    `Tests  1 failed | 4 passed (5)`           run = failed + passed

Several summaries of one runner in one output (a check that runs two suites) are added up. Goals declare
more guards under `guards:`, each a regex read from the check's stdout like the metric. Like the metric,
these figures come from output the code under test can also write to; the tests being protected is what
stops a proposer from changing what runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from goalloop.check import last_match
from goalloop.goal import patterns
from goalloop.reasons import strip_ansi

TESTS_RUN = "tests run"

_PYTEST = re.compile(r"^\s*=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s\b|^\s*=*\s*no tests ran in [\d.]+s")
_UNITTEST_RAN = re.compile(r"^\s*Ran (\d+) tests? in [\d.]+s")
_UNITTEST_END = re.compile(r"^\s*(?:OK|FAILED) \((.*)\)\s*$")
_CARGO = re.compile(r"^\s*test result: \w+\. (\d+) passed; (\d+) failed;")
_GO_VERBOSE = re.compile(r"^--- (PASS|FAIL): \S+")
_GO_JSON = re.compile(r'^\s*\{.*"Action":"(pass|fail)".*"Test":"([^"/]+)"')
_JEST = re.compile(r"^\s*Tests:\s+(.*\d+ total)")
_VITEST = re.compile(r"^\s*Tests\s+(.*)\((\d+)\)\s*$")
_COUNT = re.compile(r"(\d+) (\w+)")

RUNNERS = ("pytest", "unittest", "cargo", "go", "jest", "vitest")


def runner_of(command: str, repo_root: Path | None = None) -> str | None:
    """The known test runner a check command runs, if its words say (npm/yarn/pnpm test read package.json)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    names = [Path(w).name for w in words]
    text = " ".join(names)
    if re.search(r"\b(pytest|py\.test)\b", text):
        return "pytest"
    if re.search(r"\bunittest\b", text):
        return "unittest"
    if re.search(r"\bcargo (\S+ )*test\b", text):
        return "cargo"
    if re.search(r"\bgo (\S+ )*test\b", text):
        return "go"
    for runner in ("vitest", "jest"):
        if runner in names:
            return runner
    if repo_root is not None and re.search(r"\b(npm|yarn|pnpm|bun)( run)? test\b", text):
        try:
            package = (repo_root / "package.json").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        script = re.search(r'"test"\s*:\s*"([^"]*)"', package)
        if script:
            return next((r for r in ("vitest", "jest") if r in script.group(1)), None)
    return None


def count_tests(output: str) -> tuple[str, int] | None:
    """(runner, how many tests ran) from the summaries in `output`, or None when no known summary is there."""
    lines = [line.rstrip() for line in strip_ansi(output).splitlines()]
    for runner, count in ((name, _COUNTERS[name](lines)) for name in RUNNERS):
        if count is not None:
            return runner, count
    return None


def _pytest(lines: list[str]) -> int | None:
    found = None
    for line in lines:
        match = _PYTEST.match(line)
        if not match:
            continue
        counts = _counts(match.group(1) or "")
        run = sum(counts.get(k, 0) for k in ("passed", "failed", "error", "errors", "xpassed"))
        found = (found or 0) + run
    return found


def _unittest(lines: list[str]) -> int | None:
    found = None
    for index, line in enumerate(lines):
        match = _UNITTEST_RAN.match(line)
        if not match:
            continue
        ran, not_run = int(match.group(1)), 0
        for after in lines[index + 1:index + 4]:
            end = _UNITTEST_END.match(after)
            if end:
                details = dict(re.findall(r"(\w+)=(\d+)", end.group(1)))
                not_run = int(details.get("skipped", 0)) + int(details.get("expected_failures", 0))
                break
        found = (found or 0) + ran - not_run
    return found


def _cargo(lines: list[str]) -> int | None:
    found = None
    for line in lines:
        match = _CARGO.match(line)
        if match:
            found = (found or 0) + int(match.group(1)) + int(match.group(2))
    return found


def _go(lines: list[str]) -> int | None:
    verbose = [line for line in lines if _GO_VERBOSE.match(line)]
    events = {m.group(2) for line in lines if (m := _GO_JSON.match(line))}
    if events:
        return len(events)
    return len(verbose) if verbose else None


def _js_counter(summary: re.Pattern[str]):  # noqa: ANN202
    """jest's and vitest's summaries differ only in layout: tests run = failed + passed."""
    def count(lines: list[str]) -> int | None:
        for line in lines:
            match = summary.match(line)
            if match:
                counts = _counts(match.group(1))
                return counts.get("passed", 0) + counts.get("failed", 0)
        return None

    return count


_COUNTERS = {"pytest": _pytest, "unittest": _unittest, "cargo": _cargo, "go": _go, "jest": _js_counter(_JEST),
             "vitest": _js_counter(_VITEST)}


def _counts(text: str) -> dict[str, int]:
    return {word: int(number) for number, word in _COUNT.findall(text)}


# -- guard figures and their verdict -----------------------------------------------------------------
@dataclass(frozen=True)
class GuardSpec:
    """One guarded figure: where to read it and which way is worse."""

    name: str
    pattern: str | None
    """Regex over stdout (group 1); None for the count of tests run, read from the runner's summary."""
    maximize: bool
    tolerance: float | str = 0.0
    """How much worse is still allowed: in the figure's units, or a share such as "5%"."""


class SlowGuard(Exception):
    """A guard's pattern took more than its time bound on the check's stdout: the figure cannot be read."""

    def __init__(self, spec: GuardSpec, timeout: patterns.PatternTimeout) -> None:
        super().__init__(f"{timeout} of the check's stdout")
        self.spec = spec


def read_figures(specs: list[GuardSpec], stdout_path: Path, output: str) -> dict[str, float]:
    """The guarded figures a check printed; a figure it did not print is left out.

    Raises SlowGuard when a guard's pattern backtracks past its time bound on what the check printed."""
    figures: dict[str, float] = {}
    for spec in specs:
        if spec.pattern is None:
            counted = count_tests(output)
            if counted is not None:
                figures[spec.name] = float(counted[1])
            continue
        try:
            raw = last_match(stdout_path, patterns.compiled(spec.pattern))
        except patterns.PatternTimeout as exc:
            raise SlowGuard(spec, exc) from None
        try:
            figures[spec.name] = float(raw) if raw is not None else figures[spec.name]
        except (KeyError, ValueError):
            continue
    return figures


def broken_guards(specs: list[GuardSpec], candidate: dict[str, float], kept: dict[str, float]) -> list[str]:
    """Why the candidate's figures break a guard against the kept state's, one phrase a guard."""
    broken = []
    for spec in specs:
        if spec.name not in kept:
            continue
        before = kept[spec.name]
        if spec.name not in candidate:
            broken.append(f"printed no {spec.name} (the kept state: {before:g})")
            continue
        now = candidate[spec.name]
        allowed = _allowance(spec.tolerance, before)
        worse = now < before - allowed if spec.maximize else now > before + allowed
        if worse:
            broken.append(_phrase(spec, now, before))
    return broken


def _allowance(tolerance: float | str, before: float) -> float:
    if isinstance(tolerance, str):
        return abs(before) * float(tolerance.strip().rstrip("%")) / 100
    return float(tolerance)


def _phrase(spec: GuardSpec, now: float, before: float) -> str:
    if spec.name == TESTS_RUN:
        return f"ran {now:g} tests, the kept state ran {before:g} (guard: {TESTS_RUN})"
    return f"{spec.name} got worse: {now:g}, the kept state {before:g} (guard: {spec.name})"
