"""The worker's half of a check on a cluster (executors/scratch.py), without Ray: real git, real processes.

What a worker does with a shipped attempt: a scratch checkout that holds exactly the attempt's commit
(from the shipped base tar and diff, or read from a repository at `fetch_from`), cleaned of whatever the
last check wrote; and a guard that ends the check when the worker process dies, which without it would
outlive the worker (shown too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import git, make_repo
from goalloop.executors.scratch import ScratchError, ShippedCheck, run_shipped

CHECK = "import os, knob\nopen('made-by-check.txt', 'w').write('x')\nprint(sorted(os.listdir('.')))\n" \
        "print(f'score: {knob.X}')\n"


def _attempt(repo: Path, x: int) -> str:
    (repo / "knob.py").write_text(f"X = {x}\n")
    git(repo, "commit", "-qam", f"X = {x}")
    return git(repo, "rev-parse", "HEAD")


def _job(tmp_path: Path, base: str, commit: str, **extra: object) -> ShippedCheck:
    fields = dict(command=f"{sys.executable} score.py", timeout=30, metric_pattern=r"score: (\S+)", metric_file=False,
                  prefix="check", goal_env={"GOALLOOP_ITERATION": "1"}, env_pass=(), run_id="r", slot=0,
                  base_commit=base, commit=commit, diff=None, fetch_from=None, scratch_root=str(tmp_path / "scratch"))
    fields.update(extra)
    return ShippedCheck(**fields)  # type: ignore[arg-type]


def _shipped(repo: Path, base: str, commit: str) -> tuple[bytes, bytes]:
    tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", base], capture_output=True, check=True)
    diff = subprocess.run(["git", "-C", str(repo), "diff-tree", "-r", "-p", "--binary", "--full-index", base, commit],
                          capture_output=True, check=True)
    return tar.stdout, diff.stdout


def test_the_check_sees_the_attempts_tree_and_nothing_the_last_check_left(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": CHECK, "data.bin": ""})
    (repo / "data.bin").write_bytes(bytes(range(256)))
    git(repo, "commit", "-qam", "binary data")
    base = git(repo, "rev-parse", "HEAD")
    loads = []
    for x in (4, 7):
        commit = _attempt(repo, x)
        tar, diff = _shipped(repo, base, commit)
        result = run_shipped(_job(tmp_path, base, commit, diff=diff), lambda tar=tar: loads.append(1) or tar)
        assert result.metric == x and result.problem is None
        listing = result.stdout.decode().splitlines()[0]
        assert listing == str(sorted([".git", "data.bin", "knob.py", "score.py", "made-by-check.txt"]))
    assert loads == [1], "the base is extracted once a slot, not for every check"
    tree = Path(result.scratch)
    assert (tree / "data.bin").read_bytes() == bytes(range(256))
    assert git(tree, "status", "--porcelain", "--untracked-files=no") == "M knob.py"


def test_fetch_from_reads_the_attempt_from_a_repository_path(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": CHECK})
    base = git(repo, "rev-parse", "HEAD")
    commit = _attempt(repo, 9)
    result = run_shipped(_job(tmp_path, base, commit, fetch_from=str(repo)), lambda: pytest.fail("nothing shipped"))
    assert result.metric == 9


def test_a_diff_that_does_not_apply_is_a_scratch_error_naming_the_host(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": CHECK})
    base = git(repo, "rev-parse", "HEAD")
    tar, _ = _shipped(repo, base, base)
    with pytest.raises(ScratchError, match=r"could not git apply in the scratch checkout on .*: "):
        run_shipped(_job(tmp_path, base, base, diff=b"--- a/nope\n+++ b/nope\n@@ -1 +1 @@\n-a\n+b\n"), lambda: tar)


WORKER = """\
import sys
from pathlib import Path
from goalloop.executors.scratch import ShippedCheck, run_shipped
from goalloop.check import run_check
job = ShippedCheck(command="echo $$ > {pid}; exec sleep 60", timeout=120, metric_pattern=None, metric_file=False,
                   prefix="check", goal_env={{}}, env_pass=(), run_id="r", slot=0, base_commit="{base}",
                   commit="{base}", diff=b"", fetch_from="{repo}", scratch_root="{scratch}")
if sys.argv[1] == "guarded":
    run_shipped(job, lambda: b"")
else:  # the same check run as a worker would without the guard
    run_check(job.command, cwd=Path("{repo}"), env={{}}, timeout=120, log_dir=Path("{scratch}"), metric_pattern=None,
              pid_file=Path("{scratch}") / "check.pgid")
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_worker_killed_mid_check_takes_its_check_with_it_only_with_the_guard(tmp_path: Path, guarded: bool) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n"})
    pid_file = tmp_path / "check.pid"
    script = textwrap.dedent(WORKER).format(pid=pid_file, base=git(repo, "rev-parse", "HEAD"), repo=repo,
                                            scratch=tmp_path / "scratch")
    (tmp_path / "scratch").mkdir()
    worker = subprocess.Popen([sys.executable, "-c", script, "guarded" if guarded else "bare"])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    check_pid = int(pid_file.read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    try:
        assert _ends(check_pid, within=10.0 if guarded else 3.0) == guarded
    finally:
        if not guarded:
            os.kill(check_pid, signal.SIGKILL)


def _ends(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_a_worker_whose_environment_names_another_repository_still_builds_its_own_checkout(
        tmp_path: Path, monkeypatch) -> None:
    """A worker started from a git hook's shell inherits GIT_DIR, GIT_WORK_TREE and GIT_INDEX_FILE: the
    scratch checkout's git still works on the scratch checkout, and the other repository is left alone."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": CHECK})
    base = git(repo, "rev-parse", "HEAD")
    commit = _attempt(repo, 5)
    tar, diff = _shipped(repo, base, commit)
    other = make_repo(tmp_path / "other", {"o.txt": "o\n"})
    before = git(other, "log", "--all", "--format=%H %D"), git(other, "status", "--porcelain")
    hook = {"GIT_DIR": other / ".git", "GIT_WORK_TREE": other, "GIT_INDEX_FILE": other / ".git" / "index"}
    for name, value in hook.items():
        monkeypatch.setenv(name, str(value))
    result = run_shipped(_job(tmp_path, base, commit, diff=diff), lambda: tar)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name)
    assert result.metric == 5 and result.problem is None, result.problem
    assert (git(other, "log", "--all", "--format=%H %D"), git(other, "status", "--porcelain")) == before
