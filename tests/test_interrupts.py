"""Ctrl-C during parallel rounds always ends with exit 130 and a run that resumes to the end; a resume
clears the lock files a killed git left in the run's own metadata, and never a lock of the user's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import git, make_repo, results_rows, run_cli, write_goal

from goalloop.executor import ThreadExecutor
from goalloop.ledger import new_run_id

SLOW_SCORE_PY = """\
import random, time
import knob
time.sleep(random.random() * 0.2)
print(f"score: {knob.X}")
"""
INTERRUPTS = 30
CTRL_CS_PER_RUN = 5
IN_PARALLEL = 3


def parallel_goal(tmp_path: Path, iterations: int = 9) -> Path:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": SLOW_SCORE_PY})
    steps = [{"description": f"X={v}", "files": {"knob.py": f"X = {v}\n"}, "sleep": f"{0.05 + 0.05 * (v % 4):.2f}s"}
             for v in range(1, iterations + 1)]
    return write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 1000}, "budget": {"iterations": iterations}, "parallel": 3,
        "proposer": {"kind": "scripted", "steps": steps}})


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "goalloop", *args, "-q"], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})


def assert_git_agrees_with_ledger(run_dir: Path, repo: Path) -> None:
    rows = results_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(len(rows)))
    refs = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/").splitlines()
    recorded = {int(r["iteration"]) for r in rows}
    judged = [ref for ref in refs if "/unjudged/" not in ref]
    assert {int(ref.rsplit("/", 1)[1]) for ref in judged} <= recorded, "every attempt ref is in the ledger"
    aside = [ref for ref in refs if "/unjudged/" in ref]  # stopped before their verdict, proposed again
    assert {int(ref.rsplit("/", 1)[1].split("-")[0]) for ref in aside} <= recorded
    assert not [r for r in rows if r["verdict"] == "crash"], "a Ctrl-C loses no attempt"


def interrupt(proc: subprocess.Popen[str], rng: random.Random) -> bool:
    """Ctrl-C (sometimes twice, as an impatient person does); False if the run had ended by itself."""
    if proc.poll() is not None:
        assert proc.returncode in (0, 1), f"exit {proc.returncode} before any Ctrl-C: {proc.stderr.read()}"
        return False
    proc.send_signal(signal.SIGINT)
    if rng.random() < 0.3:
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"exit {proc.returncode}: {err}"
    return True


def resumes(home: Path) -> int:
    return sum(path.read_text().count('"run_resumed"') for path in home.glob("runs/*/events.jsonl"))


def interrupt_chain(tmp_path: Path, rng: random.Random, ctrl_cs: int) -> int:
    """A parallel run Ctrl-C'd, resumed and Ctrl-C'd again, `ctrl_cs` times; then resumed to its end.
    Returns how many Ctrl-C's landed (a run may end before the next one)."""
    goal = parallel_goal(tmp_path, iterations=21)
    home = tmp_path / "home"
    proc = start(["run", str(goal), "--home", str(home)], tmp_path)
    deadline = time.monotonic() + 60
    while not list(home.glob("runs/*/round.json")) and proc.poll() is None:  # the first round has begun
        assert time.monotonic() < deadline, "no round started"
        time.sleep(0.02)
    landed = 0
    for n in range(ctrl_cs):
        time.sleep(rng.uniform(0.0, 1.2))
        if not interrupt(proc, rng):
            break
        landed += 1
        proc = start(["resume", "--home", str(home)], tmp_path)
        while resumes(home) <= n and proc.poll() is None:  # goalloop is up (not still importing)
            assert time.monotonic() < deadline + 60 * (n + 1), "the resume never started"
            time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, f"the last resume ended with {proc.returncode}: {err}"
    (run_json,) = list((home / "runs").glob("*/run.json"))
    assert_git_agrees_with_ledger(run_json.parent, tmp_path / "proj")
    return landed


def test_thirty_ctrl_c_in_parallel_rounds_all_end_130_and_resume(tmp_path: Path) -> None:
    landed: list[int] = []
    failures: list[str] = []
    counter = iter(range(1000))
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            with lock:
                if sum(landed) >= INTERRUPTS or failures:
                    return
                n = next(counter)
            try:
                landed.append(interrupt_chain(tmp_path / str(n), rng, CTRL_CS_PER_RUN))
            except AssertionError as exc:
                failures.append(f"run {n}: {exc}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(IN_PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert sum(landed) >= INTERRUPTS


def test_a_ctrl_c_in_a_parallel_round_returns_once_every_slot_has_ended() -> None:
    """The Ctrl-C lands while the round waits for a slot still at work (committing its attempt): the
    executor kills the slots' processes and raises only once that slot has ended, so the loop's clean-up
    never runs beside it. (On CPython 3.11 a `Thread.join(timeout)` a Ctrl-C interrupts marks the thread
    stopped while it runs: waiting on `is_alive` raised at once, and the clean-up committed the same
    attempt as the slot, a ref git refused as already there.)"""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    released, ended = threading.Event(), []

    def slot_still_committing() -> None:
        released.wait(10)
        time.sleep(0.2)
        ended.append("the slot")

    def kill_the_slots() -> list[Path]:  # what the executor calls while stopping: here it lets the slot end
        released.set()
        return []

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ThreadExecutor(kill_the_slots).run([slot_still_committing, lambda: None])
        assert ended == ["the slot"], "the round raised while a slot was still at work"
    finally:
        released.set()
        signal.signal(signal.SIGINT, previous)


PROPOSE_HANGING_ON_TWO = """\
#!/bin/sh
echo "X = $GOALLOOP_ITERATION" > knob.py
if [ "$GOALLOOP_ITERATION" = 2 ] && [ -e "$HANG" ]; then sleep 30; fi
"""


def stopped_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A single-slot run stopped by Ctrl-C while proposing attempt 2, the proposal it resumes with quick:
    (repo, home, run dir)."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    script, hang = tmp_path / "propose.sh", tmp_path / "hang"
    script.write_text(PROPOSE_HANGING_ON_TWO)
    script.chmod(0o755)
    hang.touch()
    goal = write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"score: (\S+)"}, "target": {"value": 100},
        "budget": {"iterations": 4}, "proposer": {"kind": "command", "run": str(script), "env": {"HANG": str(hang)}}})
    home = tmp_path / "home"
    proc = start(["run", str(goal), "--home", str(home)], tmp_path)
    deadline = time.monotonic() + 30
    while not list(home.glob("runs/*/attempts/0002")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    hang.unlink()
    (run_json,) = list(home.glob("runs/*/run.json"))
    return repo, home, run_json.parent


def worktree_gitdir(run_dir: Path) -> Path:
    worktree = Path(json.loads((run_dir / "run.json").read_text())["worktree"])
    return Path((worktree / ".git").read_text().removeprefix("gitdir:").strip())


def plant_stale_locks(repo: Path, run_dir: Path) -> list[Path]:
    """What a git SIGKILLed mid-write leaves: the worktree's index.lock and a ref lock of the run's."""
    locks = [worktree_gitdir(run_dir) / "index.lock", repo / ".git" / "refs" / "goalloop" / run_dir.name / "2.lock"]
    for lock in locks:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
    return locks


def test_resume_removes_stale_git_locks_of_the_run_and_logs_them(tmp_path: Path) -> None:
    repo, home, run_dir = stopped_run(tmp_path)
    locks = plant_stale_locks(repo, run_dir)
    users_lock = repo / ".git" / "index.lock"  # the user's own, e.g. their editor's git mid-commit
    users_lock.write_text("")
    worktree = Path(json.loads((run_dir / "run.json").read_text())["worktree"])
    blocked = subprocess.run(["git", "reset", "--hard"], cwd=worktree, capture_output=True, text=True)
    assert blocked.returncode != 0 and "index.lock" in blocked.stderr, "left alone, the lock blocks the run"

    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    assert resumed.exit_code == 1, resumed.output
    assert not [lock for lock in locks if lock.exists()]
    logged = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in logged if e["event"] == "stale_lock_removed") == sorted(map(str, locks))
    assert users_lock.exists(), "the user's own lock is never touched"
    assert [r["verdict"] for r in results_rows(run_dir)][0] == "baseline"
    assert_git_agrees_with_ledger(run_dir, repo)


def test_a_lock_a_live_git_holds_is_left_and_named(tmp_path: Path) -> None:
    repo, home, run_dir = stopped_run(tmp_path)
    locks = plant_stale_locks(repo, run_dir)
    worktree = Path(json.loads((run_dir / "run.json").read_text())["worktree"])
    holder = subprocess.Popen(["git", "cat-file", "--batch"], cwd=worktree, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    try:
        resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert resumed.exit_code == 3, resumed.output
    assert f"git (pid {holder.pid}) is still working" in resumed.stderr
    assert all(lock.exists() for lock in locks)
    assert run_cli("resume", "--home", str(home), cwd=tmp_path).exit_code == 1, "once it is gone, resume works"


@pytest.mark.parametrize("homes", [2])
def test_runs_started_in_the_same_second_from_two_homes_get_different_ids(tmp_path: Path, homes: int) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    goal = write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"score: (\S+)"}, "target": {"value": 100},
        "budget": {"iterations": 1}, "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 1\n"}}]}})
    procs = [start(["run", str(goal), "--home", str(tmp_path / f"home{n}")], tmp_path) for n in range(homes)]
    codes = [proc.wait(timeout=60) for proc in procs]
    assert codes == [1] * homes, [p.stderr.read() for p in procs]
    ids = {p.parent.name for n in range(homes) for p in (tmp_path / f"home{n}").glob("runs/*/run.json")}
    assert len(ids) == homes
    same_second = {new_run_id("goal", tmp_path / f"home{n}" / "runs") for n in range(20)}
    assert len(same_second) == 20
