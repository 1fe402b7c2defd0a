"""goalloop.check on real subprocesses: process-group kills, metric parsing, decoding, and big outputs.

Each test attacks one property of `run_process` / `run_check`; nothing of goalloop's is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_core_loop import alive, wait_for

from goalloop.check import OUTPUT_EXCERPT_BYTES, run_check, run_process


def assert_dies(pid: int, within: float, what: str) -> None:
    wait_for(lambda: not alive(pid), within, f"{what} (pid {pid}) to die")


def check(tmp_path: Path, command: str, *, metric: str | None = None, timeout: float = 20.0):
    return run_check(
        command, cwd=tmp_path, env=dict(os.environ), timeout=timeout, log_dir=tmp_path / "logs", metric_pattern=metric
    )


PEAK_MEMORY_SCRIPT = """
import json, os, resource, sys
from pathlib import Path
from goalloop.check import run_check
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = run_check(sys.argv[1], cwd=Path.cwd(), env=dict(os.environ), timeout=60, log_dir=Path("logs"),
                   metric_pattern=r"score: (\\S+)")
excerpt = result.process.excerpt()
grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"metric": result.metric, "problem": result.problem, "grown": grown_kib * 1024,
                  "excerpt": excerpt, "size": result.process.stdout_path.stat().st_size}))
"""


def check_in_child(tmp_path: Path, command: str) -> dict:
    """run_check in a fresh Python process; also returns how much its peak RSS grew while judging (bytes)."""
    proc = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, command], check=False, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def process(tmp_path: Path, command: str, *, timeout: float, grace: float = 5.0):
    return run_process(
        command, cwd=tmp_path, env=dict(os.environ), timeout=timeout,
        stdout_path=tmp_path / "out.log", stderr_path=tmp_path / "err.log", grace=grace,
    )


# -- killing ---------------------------------------------------------------------------------------------
def test_timeout_kills_the_whole_process_group_grandchild_included(tmp_path: Path) -> None:
    """At the timeout the shell, its child and its grandchild are all dead when run_process returns."""
    pids = tmp_path / "pids"
    command = f"sh -c 'sleep 1000 & echo $! > {pids}; echo $$ >> {pids}; sleep 1000'"
    started = time.monotonic()
    result = process(tmp_path, command, timeout=0.7)
    took = time.monotonic() - started
    assert result.timed_out and result.exit_code is None
    assert took < 4, f"run_process took {took:.1f}s to give up on a 0.7s timeout"
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 2
    for pid in recorded:
        assert_dies(pid, 1.0, "a process of the timed-out group")


def test_timeout_sigkills_a_grandchild_that_ignores_sigterm(tmp_path: Path) -> None:
    """A grandchild that traps SIGTERM is SIGKILLed once the grace period is over."""
    pidfile = tmp_path / "pid"
    command = f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done' & wait"
    result = process(tmp_path, command, timeout=0.7, grace=0.5)
    assert result.timed_out
    assert_dies(int(pidfile.read_text()), 1.0, "the SIGTERM-proof grandchild")


def test_run_check_timeout_is_a_crash_with_a_reason_and_kills_the_grandchild(tmp_path: Path) -> None:
    """run_check: a timed-out check is crashed (no metric), says why, and leaves no process behind."""
    pidfile = tmp_path / "pid"
    result = check(tmp_path, f"sh -c 'sleep 1000 & echo $! > {pidfile}; sleep 1000'", metric=r"score: (\S+)",
                   timeout=0.6)
    assert result.crashed and not result.passed and result.metric is None
    assert "timed out" in result.problem
    assert_dies(int(pidfile.read_text()), 1.0, "the timed-out check's grandchild")


def test_background_process_left_by_a_finished_check_is_killed(tmp_path: Path) -> None:
    """A check that exits 0 but leaves a daemon behind in its group: the daemon does not outlive the check."""
    pidfile = tmp_path / "pid"
    result = check(tmp_path, f"sleep 1000 > /dev/null 2>&1 & echo $! > {pidfile}; echo done")
    assert result.passed
    assert_dies(int(pidfile.read_text()), 2.0, "the daemon the check left behind")


def test_check_killed_by_a_signal_is_a_crash_naming_the_signal(tmp_path: Path) -> None:
    """A pass/fail check that dies of SIGKILL did not produce a result: crash, 'SIGKILL' in the reason."""
    result = check(tmp_path, "kill -9 $$")
    assert result.crashed and result.process.exit_code == -signal.SIGKILL
    assert "SIGKILL" in result.problem


def test_check_killed_by_a_realtime_signal_is_a_crash_not_an_exception(tmp_path: Path) -> None:
    """Failures are data: a check dying of a signal with no name in signal.Signals (SIGRTMIN+1) is a crash."""
    result = check(tmp_path, f"kill -{signal.SIGRTMIN + 1} $$")
    assert result.crashed
    assert str(signal.SIGRTMIN + 1) in result.problem or "signal" in result.problem


# -- pass/fail and the metric ------------------------------------------------------------------------------
def test_pass_fail_check_is_judged_by_exit_code_alone(tmp_path: Path) -> None:
    """Without a metric: exit 0 passes, exit 1 fails, neither is a crash."""
    ok, bad = check(tmp_path, "echo fine"), check(tmp_path, "echo 'score: 3'; exit 1")
    assert ok.passed and not ok.crashed and ok.metric is None
    assert not bad.passed and not bad.crashed and bad.process.exit_code == 1


def test_metric_last_matching_line_wins(tmp_path: Path) -> None:
    """Several lines match the metric pattern: the last one is the result."""
    command = "printf 'score: 1\\nscore: 2.5\\nnoise\\nscore: 7e-1\\ntrailer\\n'"
    result = check(tmp_path, command, metric=r"score: (\S+)")
    assert not result.crashed and result.metric == pytest.approx(0.7)


def test_metric_without_a_group_uses_the_whole_match(tmp_path: Path) -> None:
    """A pattern with no group reads the number from the whole match."""
    result = check(tmp_path, "echo 'loss=0.25 after 3 epochs'", metric=r"(?<=loss=)[0-9.]+")
    assert result.metric == 0.25


def test_metric_is_read_from_stdout_not_stderr(tmp_path: Path) -> None:
    """A number printed on stderr does not count, so the last stdout match wins over a later stderr line."""
    result = check(tmp_path, "echo 'score: 4'; echo 'score: 99' >&2", metric=r"score: (\S+)")
    assert result.metric == 4


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_metric_is_a_crash_with_a_reason(tmp_path: Path, value: str) -> None:
    """nan and inf are not results: crash, the reason names the value."""
    result = check(tmp_path, f"echo 'score: {value}'", metric=r"score: (\S+)")
    assert result.crashed and result.metric is None and not result.passed
    assert value in result.problem and "finite" in result.problem


def test_unparsable_metric_is_a_crash_with_a_reason(tmp_path: Path) -> None:
    """A match that is not a number is a crash that quotes what was read."""
    result = check(tmp_path, "echo 'score: 12abc'", metric=r"score: (\S+)")
    assert result.crashed and "12abc" in result.problem and "not a number" in result.problem


def test_missing_metric_is_a_crash_naming_the_pattern(tmp_path: Path) -> None:
    """No line matches: crash, and the reason shows the pattern so the user can fix it."""
    result = check(tmp_path, "echo 'accuracy 0.9'", metric=r"score: (\S+)")
    assert result.crashed and "score: (\\S+)" in result.problem


def test_metric_goal_with_nonzero_exit_is_a_crash_even_with_a_metric(tmp_path: Path) -> None:
    """A metric goal needs exit 0: a printed metric followed by exit 3 is not a result."""
    result = check(tmp_path, "echo 'score: 5'; exit 3", metric=r"score: (\S+)")
    assert result.crashed and result.metric is None and "3" in result.problem


# -- decoding and size -----------------------------------------------------------------------------------
def test_invalid_utf8_output_is_decoded_with_replacement(tmp_path: Path) -> None:
    """Binary garbage on stdout and stderr neither crashes the parse nor the excerpt."""
    result = check(tmp_path, r"printf '\377\376garbage\n score: 3 \200\n'; printf '\377err\n' >&2",
                   metric=r"score: (\d+)")
    assert result.metric == 3
    excerpt = result.process.excerpt()
    assert "\ufffd" in excerpt and "garbage" in excerpt and "err" in excerpt


def test_two_hundred_megabytes_of_output_cost_no_memory_and_the_excerpt_is_head_plus_tail(tmp_path: Path) -> None:
    """200 MB of lines: the metric (last line) is found, peak RSS barely grows, the excerpt is capped."""
    command = "echo FIRST-LINE; yes 'line of check output' | head -c 200000000; echo; echo 'score: 42'"
    got = check_in_child(tmp_path, command)
    assert got["metric"] == 42 and got["size"] > 200_000_000
    assert got["grown"] < 16_000_000, f"judging 200 MB of output grew the peak RSS by {got['grown'] / 1e6:.0f} MB"
    excerpt = got["excerpt"]
    assert len(excerpt.encode()) <= OUTPUT_EXCERPT_BYTES + 500
    assert excerpt.index("FIRST-LINE") < excerpt.index("bytes omitted") < excerpt.index("score: 42")


def test_one_huge_line_of_output_costs_no_memory(tmp_path: Path) -> None:
    """A check whose stdout is one 50 MB line (progress bars redrawn with \\r) must not cost 50 MB+ of RAM."""
    got = check_in_child(tmp_path, "yes 'step 1/100' | head -c 50000000 | tr '\\n' '\\r'; echo; echo 'score: 42'")
    assert got["metric"] == 42
    assert got["grown"] < 16_000_000, f"one 50 MB line grew the peak RSS by {got['grown'] / 1e6:.0f} MB"
