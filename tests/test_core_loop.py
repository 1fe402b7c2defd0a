"""The core loop through the real CLI: verdicts, results.tsv, refs, protected paths, the user's checkout, Ctrl-C.

Every run is `python -m goalloop run` in a subprocess, on a real git repository in a tmp dir, with the
scripted proposer; nothing of goalloop's is mocked. Each test attacks one property, named in its name.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, git, make_repo, only_run_dir, results_rows, run_cli, write_goal

PY = shlex.quote(sys.executable)
METRIC = r"score: (\S+)"
COLUMNS = ["iteration", "commit", "metric", "verdict", "seconds", "cost_usd", "description"]

# A check that logs which iteration ran it (to $CHECK_LOG, outside the repo) and prints the knob.
COUNTING_SCORE_PY = """\
import os
import knob
if os.environ.get("CHECK_LOG"):
    with open(os.environ["CHECK_LOG"], "a") as log:
        log.write(os.environ.get("GOALLOOP_ITERATION", "?") + "\\n")
print(f"score: {knob.X}")
"""


# -- helpers shared with test_command_proposer.py -----------------------------------------------------------
@dataclass
class Run:
    """A finished `goalloop run` and what it left: its record folder, its refs, its worktree."""

    cli: CliResult
    home: Path
    repo: Path

    @property
    def exit_code(self) -> int:
        return self.cli.exit_code

    @property
    def run_dir(self) -> Path:
        return only_run_dir(self.home)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def meta(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())

    @property
    def worktree(self) -> Path:
        return Path(self.meta["worktree"])

    @property
    def rows(self) -> list[dict[str, str]]:
        return results_rows(self.run_dir)

    def table(self) -> list[tuple[str, str, str]]:
        """(iteration, metric, verdict) of every results.tsv row."""
        return [(r["iteration"], r["metric"], r["verdict"]) for r in self.rows]

    @property
    def attempts(self) -> dict[int, dict]:
        """The `attempt` events of events.jsonl by iteration (they carry the reason)."""
        events = [json.loads(line) for line in (self.run_dir / "events.jsonl").read_text().splitlines()]
        return {e["iteration"]: e for e in events if e.get("event") == "attempt"}

    def events(self, name: str) -> list[dict]:
        lines = (self.run_dir / "events.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("event") == name]

    def refs(self) -> dict[int, str]:
        """Attempt number -> commit, from refs/goalloop/<run-id>/<n>."""
        listing = git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/goalloop/{self.run_id}/")
        named = (line.split() for line in listing.splitlines())
        return {int(name.rsplit("/", 1)[1]): sha for name, sha in named if name.rsplit("/", 1)[1].isdigit()}

    def branch_head(self) -> str:
        return git(self.repo, "rev-parse", f"refs/heads/goalloop/{self.run_id}")

    def show(self, rev: str, path: str) -> str | None:
        proc = subprocess.run(["git", "show", f"{rev}:{path}"], check=False, cwd=self.repo, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else None

    def worktree_status(self) -> str:
        """`git status` of the worktree with the run's own excludes (check caches are not changes)."""
        return git(self.worktree, "-c", f"core.excludesFile={self.run_dir / 'git-exclude'}",
                   "status", "--porcelain", "--untracked-files=all")


def run_goal(tmp_path: Path, repo: Path, goal: dict, *, env: dict[str, str] | None = None,
             goal_path: Path | None = None, timeout: float = 60) -> Run:
    """Write the goal (with `repo:` pointing at `repo` unless the goal lives inside it) and run it."""
    goal_path = goal_path or tmp_path / "goal.yaml"
    if not goal_path.resolve().is_relative_to(repo.resolve()):
        goal = {"repo": os.path.relpath(repo, goal_path.parent), **goal}
    write_goal(goal_path, goal)
    home = tmp_path / "home"
    full_env = {"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    cli = run_cli("run", str(goal_path), "--home", str(home), cwd=tmp_path, env=full_env, timeout=timeout)
    return Run(cli, home, repo)


def scripted(steps: list[dict], *, run: str = f"{PY} score.py", metric: str | None = METRIC,
             iterations: int | None = None, **extra: object) -> dict:
    """A goal whose proposer plays `steps`; a metric goal on `score.py` unless told otherwise."""
    check: dict = {"run": run}
    if metric is not None:
        check["metric"] = metric
    goal = {"check": check, "budget": {"iterations": iterations or len(steps)},
            "proposer": {"kind": "scripted", "steps": steps}}
    goal.update(extra)
    return goal


def step(description: str, files: dict[str, str | None] | None = None, **extra: object) -> dict:
    return {"description": description, "files": files or {}, **extra}


def unified_patch(path: str, old: str, new: str) -> str:
    """A unified diff of one file, as `git apply` takes it."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}")
    return "".join(lines)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within}s waiting for {what}")
        time.sleep(0.05)


def interrupt_run(tmp_path: Path, repo: Path, goal: dict, pidfile: Path) -> tuple[Run, list[int]]:
    """Start `goalloop run` on `goal`, wait until something writes the pids in `pidfile` (via $PIDFILE), send
    SIGINT to goalloop alone (its children run in their own session, as under a terminal's Ctrl-C), and wait."""
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": os.path.relpath(repo, tmp_path), **goal})
    home = tmp_path / "home"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1", "PIDFILE": str(pidfile)}
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal_path), "--home", str(home)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(pidfile.exists, 30, f"{pidfile.name} to be written")
        pids = [int(p) for p in pidfile.read_text().split()]
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Run(CliResult(proc.returncode, stdout, stderr), home, repo), pids


def checkout_state(repo: Path) -> dict:
    """Everything of the user's checkout a run must not touch: every file's bytes and mode, the index, HEAD."""
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        if path.is_symlink():
            files[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            files[rel] = ("dir", path.stat().st_mode)
        else:
            files[rel] = (path.read_bytes(), path.stat().st_mode)
    return {
        "files": files,
        "index": (repo / ".git" / "index").read_bytes(),
        "HEAD file": (repo / ".git" / "HEAD").read_text(),
        "HEAD": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "main": git(repo, "rev-parse", "refs/heads/main"),
    }


# -- one run that meets every verdict, shared by the tests that read it ---------------------------------------
MIXED_STEPS = [
    step("raise to 2", {"knob.py": "X = 2\n"}, cost_usd=0.5),
    step("touch protected data", {"data/ref.txt": "tampered\n", "knob.py": "X = 5\n"}),
    step("edit the check", {"score.py": 'print("score: 100")\n'}),
    step("no-op", {"knob.py": "X = 2\n"}),
    step("nan", {"knob.py": "X = float('nan')\n"}),
    step("proposal fails", fail="model refused"),
    step("lower, add a file, delete one", {"knob.py": "X = 0\n", "extra/new.txt": "new\n", "README.md": None}),
    # a patch against the kept state: it applies only if every attempt before it was reverted cleanly
    step("raise to 3", patch="--- a/knob.py\n+++ b/knob.py\n@@ -1 +1 @@\n-X = 2\n+X = 3\n", cost_usd=0.25),
]
CHECKED_ITERATIONS = ["0", "1", "5", "7", "8"]


@dataclass
class Mixed:
    run: Run
    base: str
    before: dict
    after: dict
    refs_before: set[str]
    refs_after: set[str]
    check_log: Path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Mixed:
    """A metric goal (target 3) whose 8 scripted attempts give keep, rejected x3, crash x2, discard, keep.

    The user's checkout is dirty when the run starts: an unstaged edit, a staged edit, an untracked file.
    """
    tmp = tmp_path_factory.mktemp("mixed")
    repo = make_repo(tmp / "proj", {
        "knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY, "data/ref.txt": "reference\n", "README.md": "# proj\n",
    })
    base = git(repo, "rev-parse", "HEAD")
    (repo / "knob.py").write_text("X = 100\n")
    (repo / "README.md").write_text("# proj, staged edit\n")
    git(repo, "add", "README.md")
    (repo / "scratch.txt").write_text("untracked notes\n")
    (repo / "README.md").write_text("# proj, staged edit, then more unstaged\n")
    before = checkout_state(repo)
    refs_before = set(git(repo, "for-each-ref", "--format=%(refname)").splitlines())
    check_log = tmp / "checks.log"
    goal = scripted(MIXED_STEPS, iterations=20, protected=["data/**"], target={"value": 3})
    run = run_goal(tmp, repo, goal, env={"CHECK_LOG": str(check_log)})
    after = checkout_state(repo)
    refs_after = set(git(repo, "for-each-ref", "--format=%(refname)").splitlines())
    return Mixed(run, base, before, after, refs_before, refs_after, check_log)


def test_mixed_run_meets_the_target_with_exit_0(mixed: Mixed) -> None:
    """The run stops as soon as a kept attempt reaches target.value, with exit code 0."""
    assert mixed.run.exit_code == 0, mixed.run.cli.output
    assert "target met" in mixed.run.cli.stdout
    assert mixed.run.events("run_stopped")[-1]["exit_code"] == 0


def test_results_tsv_has_the_contract_columns_and_one_row_per_attempt_baseline_first(mixed: Mixed) -> None:
    """results.tsv: the seven columns in order, baseline row first, exact metrics/verdicts/costs/descriptions."""
    run = mixed.run
    header = (run.run_dir / "results.tsv").read_text().splitlines()[0].split("\t")
    assert header == COLUMNS
    refs = run.refs()
    expected = [
        ("0", mixed.base[:12], "1", "baseline", "0.0000", "baseline"),
        ("1", refs[1][:12], "2", "keep", "0.5000", "raise to 2"),
        ("2", refs[2][:12], "", "rejected", "0.0000", "touch protected data"),
        ("3", refs[3][:12], "", "rejected", "0.0000", "edit the check"),
        ("4", "", "", "rejected", "0.0000", "no-op"),
        ("5", refs[5][:12], "", "crash", "0.0000", "nan"),
        ("6", "", "", "crash", "0.0000", "proposal fails"),
        ("7", refs[7][:12], "0", "discard", "0.0000", "lower, add a file, delete one"),
        ("8", refs[8][:12], "3", "keep", "0.2500", "raise to 3"),
    ]
    rows = run.rows
    assert [(r["iteration"], r["commit"], r["metric"], r["verdict"], r["cost_usd"], r["description"]) for r in rows] \
        == expected
    assert all(re.fullmatch(r"\d+\.\d", r["seconds"]) for r in rows), [r["seconds"] for r in rows]


def test_run_starts_from_the_committed_base_not_the_dirty_checkout(mixed: Mixed) -> None:
    """The user's uncommitted `X = 100` is not what the baseline measured: the baseline is the base commit."""
    assert mixed.run.rows[0]["metric"] == "1"
    assert mixed.run.meta["base_commit"] == mixed.base


def test_protected_glob_check_script_and_empty_change_are_rejected_without_running_the_check(mixed: Mixed) -> None:
    """Rejected attempts (protected glob, the check's own script, no change) and a failed proposal never ran
    the check: the check ran only for the baseline and the attempts that were judged."""
    assert mixed.check_log.read_text().split() == CHECKED_ITERATIONS
    reasons = {n: a["reason"] for n, a in mixed.run.attempts.items()}
    assert "data/ref.txt (protected)" in reasons[2] and "knob.py" not in reasons[2]
    assert "score.py (protected)" in reasons[3]
    assert reasons[4] == "empty change"
    assert "nan" in reasons[5]
    assert "model refused" in reasons[6]
    for n in (2, 3, 4, 6):
        assert not (mixed.run.run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").exists()


def test_every_attempt_with_a_change_is_reachable_by_its_ref_and_holds_that_change(mixed: Mixed) -> None:
    """refs/goalloop/<run-id>/<n> exists for every attempt that changed something, kept or not (rejected ones
    included); its commit holds exactly that attempt's files, on top of the kept commit of its time."""
    run = mixed.run
    refs = run.refs()
    assert sorted(refs) == [1, 2, 3, 5, 7, 8]
    kept1 = refs[1]
    assert run.show(kept1, "knob.py") == "X = 2\n" and git(run.repo, "rev-parse", f"{kept1}^") == mixed.base
    assert run.show(refs[2], "data/ref.txt") == "tampered\n" and run.show(refs[2], "knob.py") == "X = 5\n"
    assert run.show(refs[3], "score.py") == 'print("score: 100")\n'
    assert run.show(refs[5], "knob.py") == "X = float('nan')\n"
    assert run.show(refs[7], "knob.py") == "X = 0\n" and run.show(refs[7], "extra/new.txt") == "new\n"
    assert run.show(refs[7], "README.md") is None
    assert run.show(refs[8], "knob.py") == "X = 3\n"
    for n in (2, 3, 5, 7, 8):
        assert git(run.repo, "rev-parse", f"{refs[n]}^") == kept1, f"attempt {n} is not on top of the kept commit"
    changed = {n: git(run.repo, "diff-tree", "-r", "--name-only", "--no-commit-id", refs[n]).split() for n in refs}
    assert changed == {1: ["knob.py"], 2: ["data/ref.txt", "knob.py"], 3: ["score.py"], 5: ["knob.py"],
                       7: ["README.md", "extra/new.txt", "knob.py"], 8: ["knob.py"]}


def test_branch_ends_at_the_best_kept_commit(mixed: Mixed) -> None:
    """goalloop/<run-id> points at the last kept attempt (8), whose parent is the previous keep (1)."""
    refs = mixed.run.refs()
    assert mixed.run.branch_head() == refs[8]
    assert git(mixed.run.repo, "rev-list", "--first-parent", f"goalloop/{mixed.run.run_id}").split() \
        == [refs[8], refs[1], mixed.base]


def test_worktree_is_left_clean_at_the_kept_commit(mixed: Mixed) -> None:
    """After discards and rejections the worktree is exactly the kept commit: no leftover new or deleted file."""
    run = mixed.run
    assert git(run.worktree, "rev-parse", "HEAD") == run.refs()[8]
    assert run.worktree_status() == ""
    assert (run.worktree / "README.md").exists() and not (run.worktree / "extra").exists()


def test_users_checkout_is_byte_identical_dirty_state_included(mixed: Mixed) -> None:
    """Every file's bytes and mode, .git/index, HEAD and the current branch are what they were before the run,
    including the unstaged edit, the staged edit and the untracked file."""
    assert mixed.after == mixed.before


def test_run_adds_only_its_branch_and_attempt_refs(mixed: Mixed) -> None:
    """The only new refs are refs/heads/goalloop/<run-id> and refs/goalloop/<run-id>/<n>; none is changed."""
    run_id = mixed.run.run_id
    added = mixed.refs_after - mixed.refs_before
    assert mixed.refs_before <= mixed.refs_after
    assert added == {f"refs/heads/goalloop/{run_id}"} | {f"refs/goalloop/{run_id}/{n}" for n in (1, 2, 3, 5, 7, 8)}


def test_attempt_folder_holds_prompt_diff_and_check_logs(mixed: Mixed) -> None:
    """attempts/NNNN/: prompt.md and diff.patch for every attempt with a change, the check's logs when it ran."""
    attempts = mixed.run.run_dir / "attempts"
    first = attempts / "0001"
    assert "# Attempts so far" in (first / "prompt.md").read_text()
    assert "+X = 2" in (first / "diff.patch").read_text()
    assert "score: 2" in (first / "check.stdout.log").read_text()
    assert (first / "check.stderr.log").exists()
    assert "score: 1" in (attempts / "0000" / "check.stdout.log").read_text()
    assert "+tampered" in (attempts / "0002" / "diff.patch").read_text()
    assert "(protected)" in (attempts / "0003" / "prompt.md").read_text()  # attempt 2's rejection, shown to 3
    for n in range(1, 9):
        assert (attempts / f"{n:04d}" / "prompt.md").is_file()


def test_status_and_runs_show_the_run(mixed: Mixed) -> None:
    """`goalloop status` and `goalloop runs` name the run, its state, its attempts and its best result."""
    home = mixed.run.home
    status = run_cli("status", "--home", str(home), cwd=home)
    assert status.exit_code == 0, status.output
    assert mixed.run.run_id in status.stdout and "target met" in status.stdout
    assert re.search(r"attempts\s+8 \(", status.stdout)
    assert re.search(r"best\s+3 at attempt 8 \(baseline 1\)", status.stdout), status.stdout
    runs = run_cli("runs", "--home", str(home), cwd=home)
    assert runs.exit_code == 0, runs.output
    [line] = [line for line in runs.stdout.splitlines() if mixed.run.run_id in line]
    assert runs.stdout.splitlines()[0].split() == ["run", "state", "attempts", "best", "time"]
    assert re.search(r"\starget met\s+8\s+3\s", line), line


# -- pass/fail and stall -----------------------------------------------------------------------------------------
CALC_PY = """\
def add(a, b):
    return a - b


def mul(a, b):
    return a * b


def neg(a):
    return -a
"""

RUN_TESTS_PY = """\
import calc

cases = {"add": (calc.add, (2, 3), 5), "mul": (calc.mul, (2, 3), 6), "neg": (calc.neg, (4,), -4)}
failed = [name for name, (fn, args, want) in cases.items() if fn(*args) != want]
print(f"{len(failed)} failed: {' '.join(failed)}" if failed else "all passed")
raise SystemExit(1 if failed else 0)
"""


def test_pass_fail_goal_discards_a_worse_attempt_then_keeps_the_fix(tmp_path: Path) -> None:
    """No check.metric: attempt 1 breaks more tests (discard, reverted), attempt 2 (a patch against the base,
    which applies only if 1 was reverted) fixes them (keep), and the run exits 0."""
    repo = make_repo(tmp_path / "proj", {"calc.py": CALC_PY, "run_tests.py": RUN_TESTS_PY})
    steps = [
        step("break mul too", {"calc.py": CALC_PY.replace("a * b", "a + b")}),
        step("fix add", patch=unified_patch("calc.py", CALC_PY, CALC_PY.replace("a - b", "a + b"))),
        step("never used", {"calc.py": "broken"}),
    ]
    run = run_goal(tmp_path, repo, scripted(steps, run=f"{PY} run_tests.py", metric=None))
    assert run.exit_code == 0, run.cli.output
    assert run.table() == [("0", "", "baseline"), ("1", "", "discard"), ("2", "", "keep")]
    attempts = run.run_dir / "attempts"
    assert "1 failed: add" in (attempts / "0000" / "check.stdout.log").read_text()
    assert "2 failed: add mul" in (attempts / "0001" / "check.stdout.log").read_text()
    assert "all passed" in (attempts / "0002" / "check.stdout.log").read_text()
    refs = run.refs()
    assert run.branch_head() == refs[2] == git(run.worktree, "rev-parse", "HEAD")
    assert (run.worktree / "calc.py").read_text() == CALC_PY.replace("a - b", "a + b")
    assert run.worktree_status() == ""


def test_metric_goal_improves_then_stalls_until_the_iteration_budget_is_spent(tmp_path: Path) -> None:
    """No target value: two gains are kept, then a worse and an equal attempt are discarded; the run ends on
    its iteration budget with exit 1, results.tsv exactly as expected."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    steps = [
        step("to 2", {"knob.py": "X = 2\n"}, cost_usd=0.1),
        step("to 3", {"knob.py": "X = 3\n"}, cost_usd=0.2),
        step("to 2.5", {"knob.py": "X = 2.5\n"}),
        step("3 again", {"knob.py": "X = 3  # same value, other text\n"}, cost_usd=0.05),
    ]
    run = run_goal(tmp_path, repo, scripted(steps))
    assert run.exit_code == 1, run.cli.output
    assert "iteration budget spent (4 of 4)" in run.cli.stdout
    refs = run.refs()
    base = git(repo, "rev-parse", "HEAD")
    assert [[r[c] for c in COLUMNS if c != "seconds"] for r in run.rows] == [
        ["0", base[:12], "1", "baseline", "0.0000", "baseline"],
        ["1", refs[1][:12], "2", "keep", "0.1000", "to 2"],
        ["2", refs[2][:12], "3", "keep", "0.2000", "to 3"],
        ["3", refs[3][:12], "2.5", "discard", "0.0000", "to 2.5"],
        ["4", refs[4][:12], "3", "discard", "0.0500", "3 again"],
    ]
    assert run.branch_head() == refs[2]
    assert (run.worktree / "knob.py").read_text() == "X = 3\n"
    assert run.events("run_stopped")[-1]["exit_code"] == 1


# -- rules ------------------------------------------------------------------------------------------------------
def test_goal_file_inside_the_repo_is_protected(tmp_path: Path) -> None:
    """A goal file committed in the repository (found without `repo:`) may not be changed by an attempt."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    goal_path = repo / "goals" / "raise.yaml"
    steps = [step("loosen the goal", {"goals/raise.yaml": "check: {run: 'true'}\n"}),
             step("raise", {"knob.py": "X = 2\n"})]
    write_goal(goal_path, scripted(steps))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "goal")
    log = tmp_path / "checks.log"
    run = run_goal(tmp_path, repo, scripted(steps), goal_path=goal_path, env={"CHECK_LOG": str(log)})
    assert run.exit_code == 1, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "", "rejected"), ("2", "2", "keep")]
    assert "goals/raise.yaml (protected)" in run.attempts[1]["reason"]
    assert log.read_text().split() == ["0", "2"]


def test_editable_allowlist_rejects_changes_outside_it(tmp_path: Path) -> None:
    """With `editable: [knob.py]`, an attempt that also touches README.md is rejected without the check;
    one that touches only knob.py is judged."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY, "README.md": "hi\n"})
    steps = [step("knob and readme", {"knob.py": "X = 5\n", "README.md": "changed\n"}),
             step("new file", {"helper.py": "Y = 1\n"}),
             step("knob only", {"knob.py": "X = 2\n"})]
    log = tmp_path / "checks.log"
    run = run_goal(tmp_path, repo, scripted(steps, editable=["knob.py"]), env={"CHECK_LOG": str(log)})
    assert run.table() == [("0", "1", "baseline"), ("1", "", "rejected"), ("2", "", "rejected"), ("3", "2", "keep")]
    assert "README.md (not editable)" in run.attempts[1]["reason"]
    assert "knob.py" not in run.attempts[1]["reason"]
    assert "helper.py (not editable)" in run.attempts[2]["reason"]
    assert log.read_text().split() == ["0", "3"]


def test_check_that_cannot_run_is_exit_2_naming_the_goal_line_before_any_proposal(tmp_path: Path) -> None:
    """check.run names a command that does not exist (exit 127): exit 2, the message points at the goal file's
    `run:` line under `check:`, and the proposer was never called."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n"})
    marker = tmp_path / "proposer-ran"
    goal = {"check": {"run": "no-such-checker-xyz --fast", "metric": METRIC},
            "proposer": {"kind": "command", "run": f"touch {marker}"}}
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 2, run.cli.output
    goal_path = tmp_path / "goal.yaml"
    line = next(i for i, text in enumerate(goal_path.read_text().splitlines(), 1) if "no-such-checker-xyz" in text)
    assert f"{goal_path}:{line}: check.run" in run.cli.stderr, run.cli.stderr
    assert "127" in run.cli.stderr and "Traceback" not in run.cli.output
    assert not marker.exists()
    runs = run.home / "runs"
    assert not any(runs.glob("*/attempts/0001")) and not any(runs.glob("*/attempts/*/prompt.md"))


# -- interruption -------------------------------------------------------------------------------------------------
HANGING_CHECK_PY = """\
import os
import subprocess
import knob
if os.environ.get("GOALLOOP_ITERATION") == "2":
    child = subprocess.Popen(["sleep", "1000"])
    with open(os.environ["PIDFILE"] + ".tmp", "w") as out:
        out.write(f"{os.getpid()} {child.pid}")
    os.replace(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
    child.wait()
print(f"score: {knob.X}")
"""


def test_ctrl_c_during_a_slow_check_exits_130_kills_the_check_and_restores_the_worktree(tmp_path: Path) -> None:
    """SIGINT to goalloop while attempt 2's check (and its grandchild) hangs: exit 130, no check process left,
    the worktree back at attempt 1 (the kept commit), the in-flight attempt still in git, status says so."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "check.py": HANGING_CHECK_PY})
    steps = [step("to 2", {"knob.py": "X = 2\n"}), step("to 3", {"knob.py": "X = 3\n"})]
    pidfile = tmp_path / "check.pids"
    run, pids = interrupt_run(tmp_path, repo, scripted(steps, run=f"{PY} check.py"), pidfile)
    assert run.exit_code == 130, run.cli.output
    for pid in pids:
        wait_for(lambda pid=pid: not alive(pid), 2, f"check process {pid} to die")
    refs = run.refs()
    assert run.branch_head() == refs[1] == git(run.worktree, "rev-parse", "HEAD")
    assert (run.worktree / "knob.py").read_text() == "X = 2\n"
    assert run.worktree_status() == ""
    assert run.show(refs[2], "knob.py") == "X = 3\n"
    assert run.events("run_stopped")[-1]["exit_code"] == 130
    status = run_cli("status", "--home", str(run.home), cwd=tmp_path)
    assert "interrupted" in status.stdout


# -- the verdict judges exactly the attempt -------------------------------------------------------------------------
def test_files_written_by_the_baseline_check_are_not_part_of_attempt_1(tmp_path: Path) -> None:
    """A check that writes report.txt into its working directory: attempt 1 changes nothing, so it is
    rejected as empty, and no attempt commit contains report.txt."""
    score = COUNTING_SCORE_PY + 'open("report.txt", "w").write("last score\\n")\n'
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": score})
    steps = [step("nothing", {"knob.py": "X = 1\n"}), step("raise", {"knob.py": "X = 2\n"})]
    run = run_goal(tmp_path, repo, scripted(steps))
    assert run.table() == [("0", "1", "baseline"), ("1", "", "rejected"), ("2", "2", "keep")]
    for sha in run.refs().values():
        assert run.show(sha, "report.txt") is None


def test_each_attempt_is_judged_on_its_own_code_not_the_previous_checks_bytecode(tmp_path: Path) -> None:
    """With Python writing bytecode (the default), fast same-size edits of knob.py are each measured afresh."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    steps = [step(f"to {n}", {"knob.py": f"X = {n}\n"}) for n in range(2, 8)]
    run = run_goal(tmp_path, repo, scripted(steps), env={"PYTHONDONTWRITEBYTECODE": ""})
    assert [r["metric"] for r in run.rows] == [str(n) for n in range(1, 8)]
    assert [r["verdict"] for r in run.rows[1:]] == ["keep"] * 6


def test_an_ignored_file_written_by_the_proposer_cannot_change_the_verdict(tmp_path: Path) -> None:
    """The repo ignores local_override.py, which knob.py imports if present. An attempt that writes it (plus a
    comment in knob.py) must not be kept with a score the committed attempt cannot reproduce."""
    knob = "X = 1\ntry:\n    from local_override import X\nexcept ImportError:\n    pass\n"
    repo = make_repo(tmp_path / "proj", {"knob.py": knob, "score.py": COUNTING_SCORE_PY,
                                         ".gitignore": "local_override.py\n"})
    steps = [step("override", {"local_override.py": "X = 100\n", "knob.py": "# tuned\n" + knob})]
    run = run_goal(tmp_path, repo, scripted(steps))
    assert run.rows[1]["metric"] != "100" and run.rows[1]["verdict"] != "keep", run.rows[1]
    assert run.branch_head() == git(repo, "rev-parse", "HEAD"), "the branch moved to an attempt that scores 1"


def test_run_from_inside_the_repo_with_the_default_home_leaves_the_checkout_untouched(tmp_path: Path) -> None:
    """`cd repo && goalloop run goals/g.yaml` (no --home) puts runs/ and workspaces/ in the current directory,
    as documented; every file of the checkout, its index and HEAD stay as they were, and `git status` does not
    list the new folders (each ignores itself)."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    write_goal(repo / "goals" / "g.yaml", scripted([step("to 2", {"knob.py": "X = 2\n"})]))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "goal")
    before = checkout_state(repo)
    status_before = git(repo, "status", "--porcelain", "--untracked-files=all")
    cli = run_cli("run", "goals/g.yaml", cwd=repo)
    assert cli.exit_code == 1, cli.output
    after = checkout_state(repo)
    after["files"] = {k: v for k, v in after["files"].items() if not k.startswith(("runs", "workspaces"))}
    assert after == before
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status_before


def test_check_script_is_protected_even_if_missing_from_the_users_dirty_checkout(tmp_path: Path) -> None:
    """score.py is committed at the base but deleted (not committed) in the user's checkout: an attempt that
    rewrites score.py to print a perfect score is still rejected without running the check."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    (repo / "score.py").unlink()
    steps = [step("edit the check", {"score.py": 'print("score: 100")\n'})]
    run = run_goal(tmp_path, repo, scripted(steps))
    assert run.table() == [("0", "1", "baseline"), ("1", "", "rejected")], run.cli.output
