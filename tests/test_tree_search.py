"""`search:` a tree of kept states, through the real CLI with a command proposer that plays a landscape.

The repository holds `path.txt`, a word; the check scores it from a table: "" 0, "a" 10 (the trap: every
word built on it scores 1), "b" 5, "bb" 20 (the target). The proposer reads the state its worktree holds
(the parent's) and writes the next child listed for that state, so what it proposes depends only on where
the loop put it. Greedy builds on "a" for ever; a tree that gives up on a node after two failed children
goes back to "", finds "b", and from that second-best branch reaches "bb".

Each test attacks one property: the tree reaches the target and greedy does not; kill -9 mid-proposal and
resume keep the frontier (and the cut-short proposal is set aside on its own parent); parallel slots pick
different parents; a search key of the wrong strategy is refused with the line and the fix; an old run's
results.tsv keeps its seven columns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import git, make_repo, results_rows, run_cli, write_goal
from test_core_loop import PY, run_goal

from goalloop.ledger import RESULTS_COLUMNS, TREE_COLUMNS, AttemptRecord, Ledger

SCORE_PY = """\
from pathlib import Path
word = Path("path.txt").read_text().strip()
print(f"score: {({'': 0, 'a': 10, 'b': 5, 'bb': 20}).get(word, 1)}")
"""

PROPOSE_PY = """\
import json, os, sys, time
from pathlib import Path
children = {"": ["a", "b"], "a": ["aa", "ab", "ac", "ad", "ae", "af", "ag", "ah"], "b": ["bb", "bc"]}
plan = Path(os.environ["PLAN_DIR"])
word = Path("path.txt").read_text().strip()
tried = plan / f"tried-{word or 'root'}.txt"
done = tried.read_text().split() if tried.exists() else []
by_slot = os.environ.get("BY_SLOT") and word == ""
pick = children[word][int(os.environ["GOALLOOP_SLOT"]) if by_slot else len(done)]
Path("path.txt").write_text(pick + "\\n")
with open(plan / "parents.log", "a") as log:
    log.write(json.dumps({"iteration": int(os.environ["GOALLOOP_ITERATION"]), "slot": int(os.environ["GOALLOOP_SLOT"]),
                          "parent": int(os.environ["GOALLOOP_PARENT"]), "commit": os.environ["GOALLOOP_PARENT_COMMIT"],
                          "word": word}) + "\\n")
if os.environ.get("HANG_AT") == os.environ["GOALLOOP_ITERATION"] and not (plan / "hung").exists():
    (plan / "hung").write_text("")
    time.sleep(120)
tried.write_text(" ".join(done + [pick]))
print(f"{word or 'root'} -> {pick}")
"""


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "proj", {"path.txt": "\n", "score.py": SCORE_PY})
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "propose.py").write_text(PROPOSE_PY)
    return repo, plan


def _goal(plan: Path, search: dict | None, iterations: int = 8, **extra: object) -> dict:
    goal = {"check": {"run": f"{PY} score.py", "metric": r"score: (\S+)"}, "target": {"value": 20},
            "budget": {"iterations": iterations},
            "proposer": {"kind": "command", "run": f"{PY} {plan / 'propose.py'}"}, **extra}
    if search is not None:
        goal["search"] = search
    return goal


def _parents(plan: Path) -> list[dict]:
    return [json.loads(line) for line in (plan / "parents.log").read_text().splitlines()]


BEST_FIRST = {"strategy": "top-k", "k": 1, "patience": 2}


def test_the_tree_follows_the_second_best_branch_to_the_target_and_greedy_does_not(tmp_path: Path) -> None:
    repo, plan = _setup(tmp_path / "greedy")
    greedy = run_goal(tmp_path / "greedy", repo, _goal(plan, None), env={"PLAN_DIR": str(plan)})
    assert greedy.exit_code == 1, greedy.cli.output
    assert [r["metric"] for r in greedy.rows] == ["0", "10"] + ["1"] * 7
    assert {p["parent"] for p in _parents(plan)[1:]} == {1}, "greedy proposes from its latest keep only"
    assert "parent" not in greedy.rows[0], "a greedy run's results.tsv keeps the seven columns"

    repo, plan = _setup(tmp_path / "tree")
    tree = run_goal(tmp_path / "tree", repo, _goal(plan, BEST_FIRST), env={"PLAN_DIR": str(plan)})
    assert tree.exit_code == 0, tree.cli.output
    assert "target met by attempt 5" in tree.cli.output
    assert [(r["metric"], r["verdict"], r["parent"]) for r in tree.rows] == [
        ("0", "baseline", ""), ("10", "keep", "0"), ("1", "discard", "1"), ("1", "discard", "1"),
        ("5", "keep", "0"), ("20", "keep", "4")]
    header = (tree.run_dir / "results.tsv").read_text().splitlines()[0].split("\t")
    assert header == TREE_COLUMNS, "the parent column comes last"
    refs = tree.refs()
    assert tree.branch_head() == refs[5], "the branch points at the best node"
    assert git(repo, "rev-parse", f"{refs[4]}^") == tree.meta["base_commit"], "attempt 4 was built on the baseline"
    assert git(repo, "rev-parse", f"{refs[5]}^") == refs[4]
    assert [p["commit"] for p in _parents(plan)] == [tree.meta["base_commit"], refs[1], refs[1],
                                                     tree.meta["base_commit"], refs[4]]
    prompt = (tree.run_dir / "attempts" / "0003" / "prompt.md").read_text()
    assert "You start from attempt 1 (10), the best so far" in prompt
    assert "# Already tried from attempt 1" in prompt and "| 2 | discard | 1 |" in prompt
    later = (tree.run_dir / "attempts" / "0005" / "prompt.md").read_text()
    assert "You start from attempt 4 (5), not the best so far (attempt 1: 10)" in later
    assert "| 0 | 0 | baseline |\n| 4 | 5 |" in later, "the lineage, root first"
    status = run_cli("status", "--home", str(tree.home), cwd=tmp_path)
    assert "20" in status.stdout and "attempt 5" in status.stdout, status.output

    assert run_cli("report", "--home", str(tree.home), cwd=tmp_path).exit_code == 0
    page = (tree.run_dir / "report.html").read_text()
    drawn = page[page.index("<h2>Search tree</h2>"):]
    drawn = drawn[:drawn.index("</svg>")]
    assert drawn.count("<circle") == 6, "a node per attempt, the baseline included"
    assert drawn.count('stroke-width="3"') == 2, "the best path: baseline -> 4 -> 5"
    assert drawn.count("<path") == 3, "each kept node joined to its parent"
    assert "#5 keep: 20 (from #4)" in drawn
    assert run_cli("report", "--home", str(greedy.home), cwd=tmp_path).exit_code == 0
    assert "Search tree" not in (greedy.run_dir / "report.html").read_text(), "a greedy run is a line, not a tree"


def test_kill_9_while_proposing_and_resume_keep_the_frontier(tmp_path: Path) -> None:
    repo, plan = _setup(tmp_path)
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": os.path.relpath(repo, tmp_path), **_goal(plan, BEST_FIRST)})
    home = tmp_path / "home"
    env = {**os.environ, "PLAN_DIR": str(plan), "HANG_AT": "4", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal_path), "--home", str(home), "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not (plan / "hung").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before attempt 4"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # attempt 4 has written "b" into a worktree at the baseline
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path, env={"PLAN_DIR": str(plan)})
    assert resumed.exit_code == 0, resumed.output
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    rows = results_rows(run_dir)
    assert [(r["iteration"], r["metric"], r["verdict"], r["parent"]) for r in rows] == [
        ("0", "0", "baseline", ""), ("1", "10", "keep", "0"), ("2", "1", "discard", "1"), ("3", "1", "discard", "1"),
        ("4", "5", "keep", "0"), ("5", "20", "keep", "4")], \
        "after the resume node 1 is still closed: the tree goes on from the baseline, not from the trap"
    listing = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/goalloop/{run_dir.name}/")
    refs = dict(line.split()[::-1] for line in listing.splitlines())
    aside = [sha for sha, name in refs.items() if "/unjudged/4-" in name]
    assert len(aside) == 1, listing
    base = json.loads((run_dir / "run.json").read_text())["base_commit"]
    assert git(repo, "rev-parse", f"{aside[0]}^") == base, "the cut-short proposal is kept on its own parent"
    assert git(repo, "show", f"{aside[0]}:path.txt") == "b"
    best = next(sha for sha, name in refs.items() if name.endswith(f"{run_dir.name}/5"))
    assert git(repo, "rev-parse", f"refs/heads/goalloop/{run_dir.name}") == best


def test_the_run_ends_when_every_kept_state_is_out_of_patience(tmp_path: Path) -> None:
    repo, plan = _setup(tmp_path)
    goal = _goal(plan, {"strategy": "top-k", "k": 1, "patience": 1}, iterations=20)
    goal["target"] = {"value": 30}
    run = run_goal(tmp_path, repo, goal, env={"PLAN_DIR": str(plan)})
    assert run.exit_code == 1, run.cli.output
    assert [(r["verdict"], r["parent"]) for r in run.rows[1:]] == [
        ("keep", "0"), ("discard", "1"), ("keep", "0"), ("keep", "3"), ("crash", "4"), ("discard", "3"),
        ("crash", "0")], "each state is left after one child that was not kept; the root last"
    assert run.events("run_stopped")[-1]["reason"] == (
        "every kept state is closed: each had 1 attempt in a row from it without a keep (search.patience: 1)")
    assert run.branch_head() == run.refs()[4], "the branch holds the best, 'bb'"


def test_parallel_slots_pick_different_parents(tmp_path: Path) -> None:
    repo, plan = _setup(tmp_path)
    goal = _goal(plan, {"strategy": "top-k", "k": 2, "seed": 7}, iterations=6, parallel=2)
    run = run_goal(tmp_path, repo, goal, env={"PLAN_DIR": str(plan), "BY_SLOT": "1"})
    assert run.exit_code in (0, 1), run.cli.output
    picks = _parents(plan)
    assert [p["parent"] for p in picks[:2]] == [0, 0], "one node: both slots start from it"
    assert [r["verdict"] for r in run.rows[1:3]] == ["keep", "keep"], "each child beat its own parent"
    rounds = [picks[n:n + 2] for n in range(2, len(picks), 2)]
    assert rounds, run.cli.output
    for pair in rounds:
        assert pair[0]["parent"] != pair[1]["parent"], picks
    refs = run.refs()
    commits = {0: run.meta["base_commit"], **refs}
    for pick in picks:
        assert git(repo, "rev-parse", f"{refs[pick['iteration']]}^") == commits[pick["parent"]], pick


def test_a_search_key_of_another_strategy_is_refused_with_its_line_and_fix(tmp_path: Path) -> None:
    repo, plan = _setup(tmp_path)
    goal = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **_goal(plan, {"strategy": "softmax", "k": 3})})
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "goal.yaml:" in result.output and "k does not apply to strategy: softmax" in result.output
    assert "write strategy: top-k" in result.output and "Traceback" not in result.output
    goal = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **_goal(plan, {"strategy": "best-first"})})
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert result.exit_code == 2 and "top-k" in result.output, result.output


def test_an_old_results_tsv_keeps_its_seven_columns(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.tsv").write_text("\t".join(RESULTS_COLUMNS) + "\n0\tabc\t1\tbaseline\t0.0\t0.0000\tbaseline\n")
    ledger = Ledger(run_dir)
    ledger.use_columns(TREE_COLUMNS)
    ledger.record(AttemptRecord(iteration=1, verdict="keep", description="x", metric=2.0, parent=0))
    ledger.close()
    lines = (run_dir / "results.tsv").read_text().splitlines()
    assert [len(line.split("\t")) for line in lines] == [7, 7, 7], "a run keeps the layout it began with"
