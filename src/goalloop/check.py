"""Run a command in its own process group with a timeout, stream its output to files, read the metric.

Used for the objective check and for command proposers. Output goes straight to log files (a check that
prints gigabytes costs disk, not memory); what the ledger and the next prompt see is a capped excerpt,
head and tail, decoded with replacement so binary output never crashes the run. At the timeout the whole
process group gets SIGTERM, then SIGKILL after a grace period, so children and grandchildren die too; at
the timeout and at the end of every command, whatever left the group (a `setsid` daemon, a double fork)
is found and killed as well (processes.py says how, and where it cannot be).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import regex

from goalloop.errors import InfrastructureError
from goalloop.git_runner import git_environment
from goalloop.goal import format_duration, patterns
from goalloop.processes import PROC, TAG_VARIABLE, become_subreaper, kill_leftovers, kill_tagged, new_tag
from goalloop.reasons import strip_ansi

OUTPUT_EXCERPT_BYTES = 20_000
KILL_GRACE_SECONDS = 5.0
COMMAND_NOT_RUNNABLE = (126, 127)
MAX_LINE_BYTES = 64 * 1024
RECENT_SECONDS = 10.0
"""A command that ran less than this cannot have seen the pid counter wrap around (see processes.py)."""
CHILD_PID_FILE = "child.pgid"
"""Holds the process group and tag of a running check or proposer, so a resume can end what a killed run
left behind."""


def child_pid_file(run_dir: Path, slot: int = 0) -> Path:
    """Where slot `slot` of a run records its running child's process group (`child.pgid` for slot 0)."""
    return run_dir / (CHILD_PID_FILE if slot == 0 else f"child.{slot}.pgid")


def child_pid_files(run_dir: Path) -> list[Path]:
    """Every slot's process-group file a run left (a killed parallel run may leave several)."""
    return sorted({run_dir / CHILD_PID_FILE, *run_dir.glob("child.*.pgid")})


@dataclass(frozen=True)
class ProcessResult:
    """How a command ended. `exit_code` is None when it was killed at its timeout."""

    exit_code: int | None
    seconds: float
    timed_out: bool
    stdout_path: Path
    stderr_path: Path

    def excerpt(self, limit: int = OUTPUT_EXCERPT_BYTES) -> str:
        return output_excerpt(self.stdout_path, self.stderr_path, limit)


@dataclass(frozen=True)
class CheckResult:
    """One run of the check: did it pass, what metric did it print, and if it gave no result, why."""

    process: ProcessResult
    metric: float | None
    problem: str | None
    """Why the check produced no result (timeout, killed, metric missing or not finite); None if it did."""
    slow_pattern: bool = False
    """The metric pattern hit its time bound on the output (see goal/patterns.py): the goal's fault."""

    @property
    def passed(self) -> bool:
        return self.problem is None and self.process.exit_code == 0

    @property
    def crashed(self) -> bool:
        return self.problem is not None

    @property
    def seconds(self) -> float:
        return self.process.seconds


def run_process(
    command: str,
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    stdout_path: Path,
    stderr_path: Path,
    grace: float = KILL_GRACE_SECONDS,
    pid_file: Path | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> ProcessResult:
    """Run `command` with /bin/sh in a new session; kill its whole group at `timeout` or on interrupt, and
    at the end whatever it left running, inside the group or not.

    With `pid_file`, the group id and the command's tag are written there while the command runs. With
    `wrap`, the command runs as `wrap(["/bin/sh", "-c", command])` (the sandbox puts bubblewrap in front).
    Never with the variables that point git elsewhere (GIT_DIR, GIT_INDEX_FILE, ...: set when goalloop is
    started from a git hook), which would let its git commands reach the user's own repository and index.
    """
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    tag = new_tag()
    if not Path(cwd).is_dir():
        raise InfrastructureError(f"cannot run `{command[:80]}`: its folder {cwd} does not exist (deleted during the run?)",
                                  fix="resume the run, which recreates its worktree")
    started = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            command if wrap is None else wrap(["/bin/sh", "-c", command]),
            shell=wrap is None,
            cwd=cwd,
            env={**git_environment(env), TAG_VARIABLE: tag},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        if pid_file is not None:
            pid_file.write_text(f"{proc.pid} {tag}", encoding="utf-8")
        timed_out = False
        try:
            timed_out = not wait_for_exit(proc, timeout)
            _kill_group(proc, grace, only_leftovers=not timed_out)
        except BaseException:
            _kill_group(proc, grace)
            raise
        finally:
            kill_leftovers(tag, proc.pid, recent=time.monotonic() - started < RECENT_SECONDS)
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)
    return ProcessResult(
        exit_code=None if timed_out else proc.returncode,
        seconds=time.monotonic() - started,
        timed_out=timed_out,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )


def _kill_group(proc: subprocess.Popen[bytes], grace: float, only_leftovers: bool = False) -> None:
    """SIGTERM the process group, wait `grace`, then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL if only_leftovers else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    if only_leftovers:
        return
    wait_for_exit(proc, grace)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Block until `proc` exits (True, reaped) or `timeout` seconds pass (False), woken by the exit itself
    (a pidfd, Linux) rather than by polling; `Popen.wait(timeout)` sleeps in steps up to 50 ms."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or already reaped
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout * 1000))):
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def run_check(
    command: str,
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    log_dir: Path,
    metric_pattern: str | None,
    prefix: str = "check",
    pid_file: Path | None = None,
    metric_file: Path | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> CheckResult:
    """Run the check and judge what it produced (metric goals need a finite metric and exit code 0).

    With `metric_file`, the check is given its path in $GOALLOOP_METRIC_FILE and the metric is read from
    the JSON written there (a number, or {"metric": number}); stdout is then not read for the metric.
    """
    if metric_file is not None:
        metric_file.unlink(missing_ok=True)
        env = dict(env, GOALLOOP_METRIC_FILE=str(metric_file))
    process = run_process(
        command,
        cwd=cwd,
        env=env,
        timeout=timeout,
        stdout_path=log_dir / f"{prefix}.stdout.log",
        stderr_path=log_dir / f"{prefix}.stderr.log",
        pid_file=pid_file,
        wrap=wrap,
    )
    if process.timed_out:
        return CheckResult(process, None, f"timed out after {format_duration(timeout)}")
    if process.exit_code is not None and process.exit_code < 0:
        return CheckResult(process, None, f"killed by {_signal_name(-process.exit_code)}")
    if metric_pattern is None and metric_file is None:
        return CheckResult(process, None, None)
    if process.exit_code != 0:
        return CheckResult(process, None, f"exited with code {process.exit_code}")
    if metric_file is not None:
        raw, problem = _read_metric_file(metric_file)
        if problem:
            return CheckResult(process, None, problem)
    else:
        assert metric_pattern is not None
        try:
            raw = last_match(process.stdout_path, patterns.compiled(metric_pattern))
        except patterns.PatternTimeout as exc:
            return CheckResult(process, None, f"gave no result in time: the metric {exc} of stdout", slow_pattern=True)
        if raw is None:
            return CheckResult(process, None, f"no line of stdout matched the metric pattern `{metric_pattern}`")
    try:
        value = float(raw)
    except ValueError:
        return CheckResult(process, None, f"the metric {raw!r} is not a number")
    if not math.isfinite(value):
        return CheckResult(process, None, f"the metric is {raw} (not a finite number)")
    return CheckResult(process, value, None)


def _read_metric_file(path: Path) -> tuple[str, str | None]:
    """(the raw metric, None) or ("", why it could not be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:100_000]
        if not text.strip():  # a sandboxed check's metric file exists from the start, empty
            raise FileNotFoundError(path)
        data = json.loads(text)
    except OSError:
        return "", "wrote no metric file ($GOALLOOP_METRIC_FILE)"
    except ValueError:
        return "", "wrote a metric file that is not JSON"
    value = data.get("metric") if isinstance(data, dict) else data
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return "", 'wrote a metric file without a number (write 0.93 or {"metric": 0.93})'
    return str(value), None


def _signal_name(number: int) -> str:
    try:
        return f"signal {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


def last_match(path: Path, pattern: regex.Pattern[str]) -> str | None:
    """Group 1 (or the whole match) of the last matching line. Lines are read in pieces of at most
    MAX_LINE_BYTES and split on \\r too, so a progress bar or one huge line costs no more memory than that.
    Matching has the time bound of goal/patterns.py (PatternTimeout beyond it)."""
    found = None
    for lines in _line_batches(path):
        match = patterns.last_in_lines(pattern, lines)
        if match:
            found = match.group(1) if pattern.groups else match.group(0)
    return found.strip() if found is not None else None


def _line_batches(path: Path, size: int = 1 << 18) -> Iterator[list[str]]:
    """The file's lines, decoded with replacement, in batches of about `size` bytes."""
    batch: list[str] = []
    held = 0
    with open(path, "rb") as stream:
        while raw := stream.readline(MAX_LINE_BYTES):
            batch.extend(raw.decode("utf-8", errors="replace").replace("\r", "\n").split("\n"))
            held += len(raw)
            if held >= size:
                yield batch
                batch, held = [], 0
    if batch:
        yield batch


def kill_leftover_group(pid_file: Path) -> None:
    """SIGKILL what the command recorded in `pid_file` left running: every process carrying its tag (where
    /proc shows them), else its process group (a group id alone may since have been reused)."""
    try:
        pgid, _, tag = pid_file.read_text(encoding="utf-8").strip().partition(" ")
        if tag and PROC.is_dir():
            kill_tagged(tag)
        else:
            os.killpg(int(pgid), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


def output_excerpt(stdout_path: Path, stderr_path: Path, limit: int = OUTPUT_EXCERPT_BYTES) -> str:
    """stdout and stderr, each cut to head and tail so both fit in `limit` bytes."""
    parts = []
    for label, path in (("stdout", stdout_path), ("stderr", stderr_path)):
        text = strip_ansi(read_capped(path, limit // 2))
        if text.strip():
            parts.append(f"--- {label} ---\n{text.rstrip()}")
    return "\n".join(parts)


def read_capped(path: Path, limit: int) -> str:
    """The file's text if it fits in `limit` bytes, else its head and tail with the size of the gap."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            if size <= limit:
                return stream.read().decode("utf-8", errors="replace")
            head = stream.read(limit // 2)
            stream.seek(size - limit // 2)
            tail = stream.read()
    except OSError:
        return ""
    omitted = size - len(head) - len(tail)
    return (
        head.decode("utf-8", errors="replace")
        + f"\n[... {omitted:,} bytes omitted; full output in {path} ...]\n"
        + tail.decode("utf-8", errors="replace")
    )
