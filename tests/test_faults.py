"""Faults of the machine under a live run, each with the real thing: a full filesystem (a tmpfs mounted
for the test and filled), a run folder made read-only (a read-only bind mount: root ignores chmod), git's
index.lock held by another process, and the user committing to their own branches mid-run.

Each must end with a one-line cause and its fix, the right exit code, and nothing lost: the attempt under
way is proposed again on resume instead of being recorded as lost, and the user's checkout is untouched.
Where mounting is not allowed (not root, no CAP_SYS_ADMIN), the mount tests skip with the reason.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import git, only_run_dir, results_rows, run_cli, write_goal

from goalloop.ledger import SET_ASIDE_EVENT

PROPOSE = """\
#!/bin/sh
# attempt n writes X = n + 1; on attempt 2, the first time only, it does what $FAULT says
n="$GOALLOOP_ITERATION"
echo "X = $((n + 1))" > knob.py
echo '{"cost_usd": 0.25, "tokens": 100}' > "$GOALLOOP_COST_FILE"
if [ "$n" = 2 ] && [ ! -e "$MARK" ]; then
  touch "$MARK"
  sh -c "$FAULT"
fi
exit 0
"""


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs, mounted for the test; skipped with the reason where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {getattr(exc, 'stderr', '') or exc}")
    yield where
    unmount(where)


def faulty_goal(tmp_path: Path, repo: Path, fault: str, iterations: int = 3) -> Path:
    script = tmp_path / "propose.sh"
    script.write_text(PROPOSE, encoding="utf-8")
    script.chmod(0o755)
    return write_goal(tmp_path / "g.yaml", {
        "repo": str(repo),
        "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": iterations},
        "proposer": {"kind": "command", "run": str(script),
                     "env": {"MARK": str(tmp_path / "fault-done"), "FAULT": fault}},
    })


def assert_named(result, *words: str) -> None:
    assert result.exit_code == 3, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    assert "fix:" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} not in\n{result.stderr}"


def assert_reproposed(run_dir: Path, repo: Path, exit_code: int, resumed, recorded: bool = True) -> None:
    """After the resume: every attempt judged once, attempt 2 among them (not lost), its first try kept;
    `recorded`: and its setting aside is in the ledger (impossible when the fault made the ledger read-only)."""
    assert resumed.exit_code == exit_code, resumed.output
    rows = results_rows(run_dir)
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3"], rows
    assert [r["verdict"] for r in rows] == ["baseline", "keep", "keep", "keep"], rows
    assert "lost" not in (run_dir / "events.jsonl").read_text(encoding="utf-8")
    aside = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/unjudged/")
    assert aside.startswith(f"refs/goalloop/{run_dir.name}/unjudged/2-"), aside
    assert git(repo, "show", f"{aside}:knob.py") == "X = 3", "the first try of attempt 2 is kept in git"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    if recorded:
        assert [e["ref"] for e in events if e["event"] == SET_ASIDE_EVENT] == [aside], "the report names the set-aside try"
    assert git(repo, "status", "--porcelain") == "", "the user's checkout changed"


def test_a_full_disk_under_runs_is_named_and_the_attempt_is_proposed_again(
    tmp_path: Path, score_repo: Path, small_disk: Path
) -> None:
    filler = small_disk / "filler"
    goal = faulty_goal(tmp_path, score_repo, f"head -c 8M /dev/zero > {filler} 2>/dev/null")

    stopped = run_cli("run", str(goal), "--home", str(small_disk), cwd=tmp_path)

    assert_named(stopped, "no space left on the disk holding", "free at least", "goalloop resume")
    assert len(stopped.stderr.strip().splitlines()) <= 2, stopped.stderr  # the cause, then the fix
    run_dir = only_run_dir(small_disk)
    assert [r["iteration"] for r in results_rows(run_dir)] == ["0", "1"], "attempt 2 must not be recorded"

    still_full = run_cli("resume", "--home", str(small_disk), cwd=tmp_path)
    assert_named(still_full, "no space left", "MiB")
    assert [r["iteration"] for r in results_rows(run_dir)] == ["0", "1"]

    filler.unlink()
    assert_reproposed(run_dir, score_repo, 1, run_cli("resume", "--home", str(small_disk), cwd=tmp_path))


def test_a_check_that_fills_the_disk_is_not_judged(tmp_path: Path, score_repo: Path, small_disk: Path) -> None:
    """The check's own output fills the disk: its result may be an artefact of that, so it is not judged."""
    goal = faulty_goal(tmp_path, score_repo, "true")
    text = goal.read_text(encoding="utf-8").replace(
        "run: python3 score.py",
        f"run: python3 score.py; [ $GOALLOOP_ITERATION = 2 ] && [ ! -e {tmp_path}/check-filled ] && "
        f"touch {tmp_path}/check-filled && head -c 8M /dev/zero > big.log; true",
    )
    goal.write_text(text, encoding="utf-8")

    stopped = run_cli("run", str(goal), "--home", str(small_disk), cwd=tmp_path)

    assert_named(stopped, "no space left on the disk holding")
    run_dir = only_run_dir(small_disk)
    assert [r["iteration"] for r in results_rows(run_dir)] == ["0", "1"]
    # the check's litter sat in the worktree; setting the attempt aside cleaned it, so the space is back
    assert_reproposed(run_dir, score_repo, 1, run_cli("resume", "--home", str(small_disk), cwd=tmp_path))
    costs = [r["cost_usd"] for r in results_rows(run_dir)]
    assert [float(c) for c in costs[1:]] == [0.25, 0.5, 0.25], "attempt 2's set-aside first try is paid for too"


def test_no_run_starts_on_a_full_disk_and_nothing_is_created(tmp_path: Path, score_repo: Path, small_disk: Path) -> None:
    goal = faulty_goal(tmp_path, score_repo, "true")
    subprocess.run(f"head -c 8M /dev/zero > {small_disk}/filler", shell=True, capture_output=True)
    refs = git(score_repo, "for-each-ref")

    result = run_cli("run", str(goal), "--home", str(small_disk), cwd=tmp_path)

    assert_named(result, "no space left on the disk holding", str(small_disk))
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    assert git(score_repo, "for-each-ref") == refs


def test_a_run_folder_made_read_only_is_named_and_nothing_is_lost(tmp_path: Path, score_repo: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        mount("--bind", str(probe), str(probe))
        unmount(probe)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot bind-mount here: {getattr(exc, 'stderr', '') or exc}")
    goal = faulty_goal(
        tmp_path, score_repo,
        'mount --bind "$GOALLOOP_RUN_DIR" "$GOALLOOP_RUN_DIR" && mount -o remount,bind,ro "$GOALLOOP_RUN_DIR"',
    )
    home = tmp_path / "home"
    try:
        stopped = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)
        run_dir = only_run_dir(home)
        assert_named(stopped, "read-only", "remount it read-write", f"goalloop resume {run_dir.name}")
        assert [r["iteration"] for r in results_rows(run_dir)] == ["0", "1"]

        still = run_cli("resume", "--home", str(home), cwd=tmp_path)
        assert_named(still, "read-only", str(run_dir))
    finally:
        for run_dir in (home / "runs").glob("g-*"):
            unmount(run_dir)
    assert_reproposed(run_dir, score_repo, 1, run_cli("resume", "--home", str(home), cwd=tmp_path), recorded=False)


def test_a_held_index_lock_in_the_users_repository_does_not_disturb_the_run(tmp_path: Path, score_repo: Path) -> None:
    """Another git process (an editor, a `git commit` waiting for its message) holds the user's index.lock."""
    lock = score_repo / ".git" / "index.lock"
    lock.write_bytes(b"")
    goal = faulty_goal(tmp_path, score_repo, "true")

    result = run_cli("run", str(goal), "--home", str(tmp_path / "home"), cwd=tmp_path)

    assert result.exit_code == 1, result.output
    assert lock.exists(), "goalloop removed another process's lock"
    assert [r["verdict"] for r in results_rows(only_run_dir(tmp_path / "home"))] == ["baseline", "keep", "keep", "keep"]


def test_a_held_index_lock_in_the_worktree_is_named_with_the_fix(tmp_path: Path, score_repo: Path) -> None:
    """An agent's git killed mid-way leaves the worktree's index.lock behind: goalloop cannot commit the
    attempt, says which lock and what to do, and the attempt is not lost."""
    goal = faulty_goal(tmp_path, score_repo, 'touch "$(git rev-parse --git-dir)/index.lock"')
    home = tmp_path / "home"

    stopped = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)

    assert_named(stopped, "index.lock", "held by another git process", "delete")
    lock = Path(stopped.stderr.split("lock file ", 1)[1].split(" is held", 1)[0])
    assert lock.name == "index.lock" and lock.exists()
    lock.unlink()
    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    assert_reproposed(only_run_dir(home), score_repo, 1, resumed)


def test_the_user_committing_to_their_own_branches_mid_run_disturbs_nothing(tmp_path: Path, score_repo: Path) -> None:
    base = git(score_repo, "rev-parse", "HEAD")
    user = (
        f"cd {score_repo} && git -c user.name=u -c user.email=u@x commit -q --allow-empty -m 'user on main' && "
        "git checkout -q -b feature && echo 'notes' > NOTES.md && git add NOTES.md && "
        "git -c user.name=u -c user.email=u@x commit -q -m 'user on feature' && git gc -q --prune=now"
    )
    goal = faulty_goal(tmp_path, score_repo, user)
    home = tmp_path / "home"

    result = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)

    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep", "keep", "keep"]
    assert git(score_repo, "rev-parse", "--abbrev-ref", "HEAD") == "feature", "the user's checkout was moved"
    assert git(score_repo, "log", "-1", "--format=%s", "main") == "user on main"
    assert git(score_repo, "log", "-1", "--format=%s", "feature") == "user on feature"
    assert git(score_repo, "status", "--porcelain") == ""
    branch = f"goalloop/{run_dir.name}"
    assert git(score_repo, "merge-base", branch, "main") == base, "the run's branch left its base"
    assert git(score_repo, "show", f"{branch}:knob.py") == "X = 4"
    for n in range(1, 4):
        assert git(score_repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{n}")
