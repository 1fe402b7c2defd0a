"""Crash safety: a run killed with SIGKILL at any moment is finished by `goalloop resume`, and then the
ledger and git agree. Also: one live run per goal, and a finished run that is resumed does nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import git, make_repo, results_rows, run_cli, write_goal

ITERATIONS = 10
# A check of random length, so kills land in proposing, committing, checking and recording alike.
SLOW_SCORE_PY = """\
import random, time
import knob
time.sleep(random.random() * 0.25)
print(f"score: {knob.X}")
"""
VALUES = [3, 1, 5, 2, 8, 4, 9, 6, 12, 7]


def _crash_goal(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": SLOW_SCORE_PY})
    steps = [
        {"description": f"set X to {v}", "files": {"knob.py": f"X = {v}\n"}, "sleep": "0.1s"} for v in VALUES
    ]
    return write_goal(
        tmp_path / "crash.yaml",
        {
            "repo": str(repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "target": {"value": 1000},
            "budget": {"iterations": ITERATIONS},
            "proposer": {"kind": "scripted", "steps": steps},
        },
    )


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "goalloop", *args, "-q"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _run_until(goal: Path, home: Path, mark: Path, never: str) -> subprocess.Popen[str]:
    """Start a run of `goal` and return it, running, once `mark` exists (the proposer or check made it)."""
    proc = _start(["run", str(goal), "--home", str(home)], home.parent)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, never
        time.sleep(0.02)
    return proc


def _kill_and_resume_until_done(goal: Path, home: Path, rng: random.Random, kills: int) -> int:
    """Start the run, SIGKILL it `kills` times at random moments (resuming each time), then let it finish."""
    proc = _start(["run", str(goal), "--home", str(home)], home)
    done_kills = 0
    while True:
        if done_kills < kills:
            try:
                proc.wait(timeout=rng.uniform(0.2, 1.6))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                done_kills += 1
        else:
            proc.wait(timeout=120)
        if proc.returncode in (0, 1):
            return done_kills
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        started = list((home / "runs").glob("*/run.json"))
        proc = _start(["resume", "--home", str(home)] if started else ["run", str(goal), "--home", str(home)], home)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_moments_resume_finishes_and_git_agrees_with_ledger(tmp_path: Path, seed: int) -> None:
    """Ten or more SIGKILLs per run (30+ kill points over the seeds), then ledger == git."""
    goal = _crash_goal(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    kills = _kill_and_resume_until_done(goal, home, random.Random(seed), kills=10)
    assert kills >= 1

    run_dirs = [p.parent for p in (home / "runs").glob("crash-*/run.json")]
    assert len(run_dirs) == 1, "a kill before the run was recorded is started anew, never doubled"
    run_dir = run_dirs[0]
    repo = tmp_path / "proj"
    run_id = run_dir.name
    rows = results_rows(run_dir)

    iterations = [int(r["iteration"]) for r in rows]
    assert iterations == list(range(0, ITERATIONS + 1)), "every attempt counted once, in order, baseline first"

    refs = dict(
        line.split()[::-1]
        for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)", f"refs/goalloop/{run_id}/").splitlines()
    )
    for row in rows[1:]:
        if row["commit"]:
            ref_commit = refs.get(f"refs/goalloop/{run_id}/{row['iteration']}")
            assert ref_commit and ref_commit.startswith(row["commit"]), f"row {row['iteration']} has its ref"
    for ref_name in refs:
        number = ref_name.rsplit("/", 1)[1]
        if "/unjudged/" in ref_name:  # an attempt a kill stopped before its verdict: set aside, proposed again
            assert int(number.split("-")[0]) in iterations, f"{ref_name} was proposed again"
        else:
            assert int(number) in iterations, f"{ref_name} has a ledger row"
    assert not [r for r in rows if "lost" in r["description"] or r["verdict"] == "crash"], "a kill loses nothing"

    kept_rows = [r for r in rows[1:] if r["verdict"] == "keep"]
    on_branch = git(repo, "rev-list", "--reverse", f"{rows[0]['commit']}..goalloop/{run_id}").splitlines()
    assert [c[:12] for c in on_branch] == [r["commit"] for r in kept_rows], "kept rows are the branch, in order"

    metrics = [float(r["metric"]) for r in rows if r["metric"] and r["verdict"] in ("baseline", "keep")]
    assert metrics == sorted(metrics), "each keep improved on the one before"
    branch_knob = git(repo, "show", f"goalloop/{run_id}:knob.py")
    assert branch_knob == f"X = {int(max(metrics))}", "the branch holds the best result"

    worktree_head = git(home / "workspaces" / run_id, "rev-parse", "HEAD")
    assert worktree_head == git(repo, "rev-parse", f"goalloop/{run_id}")
    assert git(home / "workspaces" / run_id, "status", "--porcelain") == ""


def test_resume_of_a_finished_run_says_so_and_does_nothing(tmp_path: Path, score_repo: Path) -> None:
    goal = write_goal(
        tmp_path / "g.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "target": {"value": 2},
            "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}}]},
        },
    )
    assert run_cli("run", str(goal), "--home", str(tmp_path), cwd=tmp_path).exit_code == 0
    before = (next((tmp_path / "runs").glob("g-*")) / "events.jsonl").read_text()
    again = run_cli("resume", "--home", str(tmp_path), cwd=tmp_path)
    assert again.exit_code == 0
    assert "finished" in again.stdout and "nothing to do" in again.stdout
    assert (next((tmp_path / "runs").glob("g-*")) / "events.jsonl").read_text() == before


def test_second_run_of_a_live_goal_exits_3_naming_pid_and_run(tmp_path: Path, score_repo: Path) -> None:
    goal = write_goal(
        tmp_path / "g.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "budget": {"iterations": 1},
            "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}, "sleep": "4s"}]},
        },
    )
    first = _start(["run", str(goal), "--home", str(tmp_path)], tmp_path)
    try:
        owner = tmp_path / "runs" / ".locks" / "g.owner"
        deadline = time.monotonic() + 20
        while not owner.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_cli("run", str(goal), "--home", str(tmp_path), cwd=tmp_path)
        assert second.exit_code == 3
        assert f"pid {first.pid}" in second.stderr and "run g-" in second.stderr
        assert "Traceback" not in second.output
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The dead holder's lock is taken over without asking.
    taken_over = run_cli("resume", "--home", str(tmp_path), cwd=tmp_path, timeout=60)
    assert taken_over.exit_code == 1, taken_over.output


def test_interrupt_with_sigterm_is_resumable_and_keeps_the_spent_budget(tmp_path: Path, score_repo: Path) -> None:
    goal = write_goal(
        tmp_path / "g.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "budget": {"iterations": 3},
            "proposer": {
                "kind": "scripted",
                "steps": [
                    {"files": {"knob.py": "X = 2\n"}},
                    {"files": {"knob.py": "X = 3\n"}, "sleep": "4s"},
                    {"files": {"knob.py": "X = 4\n"}},
                ],
            },
        },
    )
    proc = _start(["run", str(goal), "--home", str(tmp_path)], tmp_path)
    run_dir = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("g-*/results.tsv"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            run_dir = found[0].parent
            break
        time.sleep(0.05)
    assert run_dir is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    resumed = run_cli("resume", "--home", str(tmp_path), cwd=tmp_path, timeout=60)
    assert resumed.exit_code == 1, resumed.output
    rows = results_rows(run_dir)
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3"]
    # Stopped while proposing or while checking it, attempt 2 is set aside and proposed again: never lost.
    assert [r["verdict"] for r in rows] == ["baseline", "keep", "keep", "keep"]


def test_clean_removes_only_finished_runs_worktrees_and_never_a_branch_or_ref(tmp_path: Path, score_repo: Path) -> None:
    finished = write_goal(
        tmp_path / "done.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "budget": {"iterations": 1},
            "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}}]},
        },
    )
    killed = write_goal(
        tmp_path / "killed.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "budget": {"iterations": 1},
            "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}, "sleep": "3s"}]},
        },
    )
    assert run_cli("run", str(finished), "--home", str(tmp_path), cwd=tmp_path).exit_code == 1
    proc = _start(["run", str(killed), "--home", str(tmp_path)], tmp_path)
    deadline = time.monotonic() + 20
    while not list((tmp_path / "runs").glob("killed-*/attempts/0001")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    refs_before = git(score_repo, "for-each-ref", "--format=%(refname)")

    result = run_cli("clean", "--home", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "workspaces").glob("done-*")), "the finished run's worktree is gone"
    assert list((tmp_path / "workspaces").glob("killed-*")), "the resumable run's worktree stays"
    assert git(score_repo, "for-each-ref", "--format=%(refname)") == refs_before
    assert "done-" not in git(score_repo, "worktree", "list")
    assert run_cli("resume", "--home", str(tmp_path), cwd=tmp_path, timeout=60).exit_code in (0, 1)


KEEP_THEN_HANG = """\
#!/bin/sh
n="$GOALLOOP_ITERATION"
echo "X = $n" > knob.py
if [ "$n" = 2 ] && [ -e "$HANG" ]; then
  echo "half-written work" > notes.txt
  touch "$MARK"
  sleep 60
fi
"""


def _killed_while_proposing_attempt_2(tmp_path: Path) -> tuple[Path, Path]:
    """A run SIGKILLed while its command proposer is half-way through attempt 2 (attempt 1 kept): (repo, home)."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    script = tmp_path / "propose.sh"
    script.write_text(KEEP_THEN_HANG)
    script.chmod(0o755)
    mark, hang = tmp_path / "proposing", tmp_path / "hang"
    hang.touch()
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": 3},
        "proposer": {"kind": "command", "run": str(script), "env": {"MARK": str(mark), "HANG": str(hang)}}})
    home = tmp_path / "home"
    proc = _run_until(goal, home, mark, "attempt 2 never started")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mark.unlink()
    hang.unlink()  # the resumed proposal of attempt 2 does not hang
    return repo, home


def test_a_proposal_killed_right_after_a_keep_is_kept_at_a_ref_on_resume(tmp_path: Path) -> None:
    """The kept state is itself an attempt's commit: a worktree sitting on it with a proposal's edits in
    it must still be committed and set aside (not reset away), and the attempt proposed again."""
    repo, home = _killed_while_proposing_attempt_2(tmp_path)

    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path, env={"MARK": str(tmp_path / "again")})
    (run_dir,) = (home / "runs").glob("*/run.json")
    rows = results_rows(run_dir.parent)
    assert [(r["iteration"], r["verdict"]) for r in rows] == [("0", "baseline"), ("1", "keep"), ("2", "keep"), ("3", "keep")]
    (ref,) = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.parent.name}/unjudged/").splitlines()
    assert ref.rsplit("/", 1)[1].startswith("2-"), ref
    assert git(repo, "show", f"{ref}:notes.txt") == "half-written work", "the killed proposal's work was lost"
    assert git(repo, "show", f"{ref}:knob.py") == "X = 2"
    assert resumed.exit_code in (0, 1), resumed.output
    assert f"attempt 2 was stopped before its verdict (killed while proposing) and proposed again on resume; its work is kept at {ref}" in resumed.stdout


SLOW_ON_TWO = """\
import os, time
import knob
if knob.X == 2 and os.path.exists({slow!r}):
    open({mark!r}, "w").close()
    time.sleep(60)
print(f"score: {{knob.X}}")
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "sighup"])
def test_an_attempt_stopped_while_checking_is_proposed_again_never_lost(tmp_path: Path, stop: signal.Signals) -> None:
    """Ctrl-C or a closed terminal while attempt 2 is being checked: the morning's status says it was under
    way and will be proposed again; the resume sets its commit aside, proposes it again and charges its
    first try's cost to the new row; nothing reads "lost" or "crash", and the count of attempts is true."""
    slow, mark = tmp_path / "slow", tmp_path / "checking"
    slow.touch()
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": SLOW_ON_TWO.format(slow=str(slow), mark=str(mark))})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": 3},
        "proposer": {"kind": "scripted", "steps": [
            {"description": f"X to {n}", "files": {"knob.py": f"X = {n}\n"}, "cost_usd": 0.25} for n in (1, 2, 3)]}})
    home = tmp_path / "home"
    proc = _run_until(goal, home, mark, "attempt 2's check never started")
    proc.send_signal(stop)
    assert proc.wait(timeout=60) == 130
    (run_dir,) = [p.parent for p in (home / "runs").glob("*/run.json")]

    morning = run_cli("status", "--home", str(home), cwd=tmp_path)
    assert morning.exit_code == 0, morning.output
    assert "interrupted" in morning.stdout and f"goalloop resume {run_dir.name}" in morning.stdout
    assert "attempt 2 was under way when the run stopped; `goalloop resume` proposes it again" in morning.stdout
    assert "attempts   1 (1 keep)" in morning.stdout and "lost" not in morning.stdout

    slow.unlink()
    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    assert resumed.exit_code == 1, resumed.output
    rows = results_rows(run_dir)
    assert [(r["iteration"], r["verdict"]) for r in rows] == [("0", "baseline"), ("1", "keep"), ("2", "keep"), ("3", "keep")]
    assert [r["cost_usd"] for r in rows[1:]] == ["0.2500", "0.5000", "0.2500"], "attempt 2's first try is paid for too"
    (aside,) = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/unjudged/").splitlines()
    assert git(repo, "show", f"{aside}:knob.py") == "X = 2", "the stopped try's commit is kept"
    assert list((run_dir / "attempts").glob("0002.unjudged-*")), "and its folder (prompt, logs, proposal)"

    after = run_cli("status", "--home", str(home), cwd=tmp_path)
    assert "attempts   3 (3 keep)" in after.stdout and "spent      $1.00" in after.stdout, after.stdout
    assert f"interrupted: attempt 2 was stopped before its verdict (stopped before it was judged) and proposed again on resume; its work is kept at {aside}" in after.stdout
    report = run_cli("report", "--home", str(home), cwd=tmp_path)
    assert report.exit_code == 0, report.output
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "proposed again on resume" in text and "| crash |" not in text and "lost" not in text, text


def test_a_row_written_without_its_event_is_not_doubled_on_resume(tmp_path: Path) -> None:
    """A kill -9 between the two writes of a record leaves attempt 2's row in results.tsv but not in
    events.jsonl; resume judges attempt 2 again, and results.tsv must still hold one row an attempt."""
    repo, home = _killed_while_proposing_attempt_2(tmp_path)
    (run_json,) = (home / "runs").glob("*/run.json")
    results = run_json.parent / "results.tsv"
    with results.open("a", encoding="utf-8") as out:  # what the kill between the two writes leaves
        out.write("2\tdeadbeef0000\t2\tkeep\t0.1\t\t\"a row, its event never written\"\n")

    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path, env={"MARK": str(tmp_path / "again")})
    assert resumed.exit_code in (0, 1), resumed.output
    rows = results_rows(run_json.parent)
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3"], rows
    assert "its event never written" not in results.read_text(encoding="utf-8")


def test_the_same_attempt_set_aside_twice_in_one_second_keeps_both_tries(tmp_path: Path, monkeypatch) -> None:
    """A resume killed at once stops the same attempt again within the second: its second try gets a name of
    its own (`<time>-2`), for the ref and for the folder, and the first try stays as it was."""
    from goalloop import resume
    from goalloop.ledger import Ledger, RunMeta, utc_now
    from goalloop.workspace import RepoTarget, Workspace

    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n"})
    base = git(repo, "rev-parse", "HEAD")
    workspace = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    meta = RunMeta(run_id="r1", goal_name="g", goal_path="g.yaml", repo=str(repo), base_commit=base,
                   branch="goalloop/r1", worktree=str(workspace.worktree), created_at=utc_now(), metric_goal=False,
                   direction="maximize", target=None)
    ledger = Ledger.create(tmp_path / "runs" / "r1", meta, "instructions: x\n")
    monkeypatch.setattr(resume.time, "time", lambda: 1_800_000_000.5)
    for n in (1, 2):
        (workspace.worktree / "knob.py").write_text(f"X = {n}\n")
        sha = workspace.commit_attempt(1, base, f"try {n}").sha
        (ledger.attempt_dir(1) / "note.txt").write_text(f"try {n}\n")
        resume.set_aside(workspace, ledger, 1, sha, "killed")
        workspace.reset_to(base)
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/goalloop/r1/unjudged/").splitlines()
    assert refs == ["refs/goalloop/r1/unjudged/1-1800000000", "refs/goalloop/r1/unjudged/1-1800000000-2"]
    assert [git(repo, "show", f"{ref}:knob.py") for ref in refs] == ["X = 1", "X = 2"]
    folders = sorted((ledger.run_dir / "attempts").glob("0001.unjudged-*"))
    assert [f.name for f in folders] == ["0001.unjudged-1800000000", "0001.unjudged-1800000000-2"]
    assert [(f / "note.txt").read_text() for f in folders] == ["try 1\n", "try 2\n"]
