"""The worker's half of a check on a cluster: a scratch checkout of the attempt, and the check run in it.

Per run and slot, a worker keeps one scratch folder, `<scratch>/goalloop-<run id>/slot-<n>/`: a git
repository of the run's base tree, made once (from the tar the head shipped, or read from the repository
at `fetch_from`). Before every check it is reset and cleaned (whatever the last check wrote goes, ignored
files too), then the attempt's diff against the base is applied, so the check sees exactly the tree of the
attempt's commit and nothing else. A lock file keeps two tasks of one slot out of each other's way.

The check itself goes through check.run_check, as on the head: same timeout, same process-group kill,
same metric parsing, against the full output. If the worker process dies mid-check (node lost, killed),
a guard process started beside it kills the check's process group, so no orphan keeps a GPU busy.

Nothing here imports ray: executors/ray.py calls `run_shipped` inside a task.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import goalloop
from goalloop.check import kill_leftover_group, run_check
from goalloop.environment import without_secrets
from goalloop.git_runner import git_environment

RETURNED_LOG_BYTES = 256 * 1024
"""How much of each of stdout and stderr comes back to the head (head and tail); the rest stays on the worker."""
GIT_QUIET = ["-c", "user.name=goalloop", "-c", "user.email=goalloop@localhost", "-c", "commit.gpgsign=false",
             "-c", "core.autocrlf=false", "-c", "core.fsmonitor=false", "-c", "gc.auto=0"]
VERBATIM = "* -text -filter -ident -working-tree-encoding\n"
"""info/attributes of a scratch repository: files are stored and checked out byte for byte, whatever the
tree's .gitattributes say, so the check sees what the commit holds."""


@dataclass(frozen=True)
class ShippedCheck:
    """Everything a worker needs to run one check of one attempt (travels to it pickled, a few KB)."""

    command: str
    timeout: float
    metric_pattern: str | None
    metric_file: bool
    prefix: str
    goal_env: dict[str, str]
    env_pass: tuple[str, ...]
    run_id: str
    slot: int
    base_commit: str
    commit: str
    diff: bytes | None
    """The attempt's changes against the base (git diff --binary); None: read them from `fetch_from`."""
    fetch_from: str | None
    scratch_root: str | None


@dataclass(frozen=True)
class ShippedResult:
    """What comes back: how the check ended, its metric, and a capped excerpt of its output."""

    exit_code: int | None
    seconds: float
    timed_out: bool
    metric: float | None
    problem: str | None
    stdout: bytes
    stderr: bytes
    host: str
    scratch: str
    prepare_seconds: float
    """Making the scratch checkout: extracting the base (first check of the slot on this node) or resetting
    it, then applying the diff."""
    base_extracted: bool
    code_from: str
    """The folder the worker imported goalloop from (Ray's copy of this machine's, when shipped)."""


class ScratchError(RuntimeError):
    """The worker could not make the scratch checkout (git or tar missing, disk full, a diff that fails)."""


def _slot_root(job: ShippedCheck) -> Path:
    return Path(job.scratch_root or tempfile.gettempdir()) / f"goalloop-{job.run_id}" / f"slot-{job.slot}"


def end_stopped_check(job: ShippedCheck) -> None:
    """Kill whatever the slot's check on this node left running (every process carrying its tag). The head
    calls it after cancelling the task, so that a stop does not rest on the worker's guard alone: Ray may
    kill the guard, a child of the killed worker, before the guard has killed the check."""
    kill_leftover_group(_slot_root(job) / "check.pgid")


def run_shipped(job: ShippedCheck, load_base: Callable[[], bytes]) -> ShippedResult:
    """Make the scratch checkout of `job.commit`, run the check in it, and return the result."""
    root = _slot_root(job)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        tree = root / "tree"
        extracted = _prepare(job, root, tree, load_base)
        prepare_seconds = time.monotonic() - started
        logs = root / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        env = dict(without_secrets(os.environ, job.env_pass), **job.goal_env)
        pid_file = root / "check.pgid"
        with _orphan_guard(pid_file):
            result = run_check(
                job.command, cwd=tree, env=env, timeout=job.timeout, log_dir=logs,
                metric_pattern=job.metric_pattern, prefix=job.prefix, pid_file=pid_file,
                metric_file=logs / f"{job.prefix}.metric.json" if job.metric_file else None,
            )
        process = result.process
        return ShippedResult(
            exit_code=process.exit_code, seconds=process.seconds, timed_out=process.timed_out,
            metric=result.metric, problem=result.problem, stdout=_capped(process.stdout_path),
            stderr=_capped(process.stderr_path), host=socket.gethostname(), scratch=str(tree),
            prepare_seconds=prepare_seconds, base_extracted=extracted, code_from=str(Path(goalloop.__file__).parent),
        )


def _prepare(job: ShippedCheck, root: Path, tree: Path, load_base: Callable[[], bytes]) -> bool:
    """Put the attempt's tree in `tree`; True if the base had to be extracted first."""
    marker = root / "base"
    fresh = not (tree / ".git").is_dir() or not marker.exists() or marker.read_text().strip() != job.base_commit
    if fresh:
        marker.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        base = load_base() if job.fetch_from is None else _git_output(
            Path(job.fetch_from), "archive", "--format=tar", job.base_commit)
        _run(["tar", "-x", "-f", "-", "-C", str(tree)], base, "extract the base tree")
        _git(tree, "init", "-q")
        (tree / ".git" / "info").mkdir(exist_ok=True)
        (tree / ".git" / "info" / "attributes").write_text(VERBATIM, encoding="utf-8")
        _git(tree, "add", "-A", "-f")
        _git(tree, "commit", "-q", "--no-verify", "--allow-empty", "-m", f"base {job.base_commit}")
        marker.write_text(job.base_commit, encoding="utf-8")
    else:
        _git(tree, "reset", "-q", "--hard")
        _git(tree, "clean", "-ffdxq")
    diff = job.diff
    if diff is None and job.fetch_from is not None:
        diff = _git_output(Path(job.fetch_from), "diff-tree", "-r", "-p", "--binary", "--full-index",
                           "--no-renames", job.base_commit, job.commit)
    if diff:
        _git(tree, "apply", "--binary", "--whitespace=nowarn", "-", stdin=diff)
    return fresh


def _git(tree: Path, *args: str, stdin: bytes = b"") -> None:
    _run(["git", *GIT_QUIET, "-C", str(tree), *args], stdin, f"git {args[0]} in the scratch checkout")


def _git_output(repo: Path, *args: str) -> bytes:
    return _run(["git", *GIT_QUIET, "-C", str(repo), *args], b"", f"git {args[0]} in {repo} (executor.fetch_from)")


def _run(argv: list[str], stdin: bytes, what: str) -> bytes:
    env = dict(git_environment(os.environ), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_TERMINAL_PROMPT="0")
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    except OSError as exc:
        raise ScratchError(f"could not {what} on {socket.gethostname()}: {exc.strerror or exc}"
                           f" (is {argv[0]} installed on the worker?)") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise ScratchError(f"could not {what} on {socket.gethostname()}: {detail[-1] if detail else done.returncode}")
    return done.stdout


@contextmanager
def _orphan_guard(pid_file: Path) -> Iterator[None]:
    """While inside, a small process waits on a pipe from this one; if this process dies, the pipe
    closes and the guard kills the process group recorded in `pid_file` (its first word; the file is gone
    after a normal end)."""
    read_end, write_end = os.pipe()
    guard = subprocess.Popen(
        ["/bin/sh", "-c", 'cat >/dev/null; pg=$(cut -d" " -f1 "$1" 2>/dev/null) && [ -n "$pg" ] && kill -9 -"$pg" 2>/dev/null; exit 0',
         "goalloop-guard", str(pid_file)],
        stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)
        guard.wait()


def _capped(path: Path) -> bytes:
    """The file, or its head and tail with a line saying how much was left on the worker and where."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            if size <= RETURNED_LOG_BYTES:
                return stream.read()
            head = stream.read(RETURNED_LOG_BYTES // 2)
            stream.seek(size - RETURNED_LOG_BYTES // 2)
            tail = stream.read()
    except OSError:
        return b""
    gap = size - len(head) - len(tail)
    note = f"\n[... {gap:,} bytes left on the worker {socket.gethostname()} in {path} ...]\n"
    return head + note.encode() + tail
