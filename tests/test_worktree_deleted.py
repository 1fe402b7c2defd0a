"""The worktree deleted under a live run (a tmp cleaner, `git clean -fdx`, a tidy person), through the CLI.

The run is started the way the bug was found: from the root of the user's repository, with --home there
(so workspaces/ sits inside it), and the user's checkout dirty: an edited file, a staged file, an
untracked file, and a branch of their own. The worktree disappears during a proposal, then during a
check. Each time the run must stop with exit 3 naming the cause and the fix, leave every byte of the
user's checkout, index, HEAD, reflog and branches as it was, and `goalloop resume` must finish the run.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from conftest import git, make_repo, results_rows, run_cli, write_goal

PY = shlex.quote(sys.executable)
SCORE_PY = "import knob\nprint(f'score: {knob.X}')\n"


def user_state(repo: Path) -> dict:
    """Every byte of the user's checkout (the run's own runs/ and workspaces/ aside), their index, HEAD,
    HEAD's reflog, and every branch that is not a run's."""
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.split("/")[0] in (".git", "runs", "workspaces"):
            continue
        files[rel] = ("dir",) if path.is_dir() else (path.read_bytes(), path.stat().st_mode)
    branches = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
    return {
        "files": files,
        "index": (repo / ".git" / "index").read_bytes(),
        "HEAD": (repo / ".git" / "HEAD").read_text(),
        "reflog": (repo / ".git" / "logs" / "HEAD").read_text(),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "branches": [b for b in branches.splitlines() if not b.startswith("refs/heads/goalloop/")],
    }


def dirty_user_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY, "README.md": "readme\n"})
    git(repo, "branch", "feature")
    (repo / "README.md").write_text("readme, edited and not committed\n")
    (repo / "staged.txt").write_text("staged, not committed\n")
    git(repo, "add", "staged.txt")
    (repo / "notes.txt").write_text("untracked notes\n")
    return repo


def only_run(repo: Path) -> Path:
    (run_dir,) = [p for p in (repo / "runs").iterdir() if (p / "run.json").exists()]
    return run_dir


def assert_stopped_for_the_deleted_worktree(result, run_dir: Path) -> None:
    assert result.exit_code == 3, result.output
    assert "was deleted during the run; nothing in your checkout was touched" in result.stderr, result.output
    assert f"goalloop resume {run_dir.name}" in result.stderr
    assert "internal error" not in result.output


def assert_resumes_to_the_end(repo: Path, run_dir: Path, before: dict) -> list[dict[str, str]]:
    resumed = run_cli("resume", run_dir.name, cwd=repo, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert resumed.exit_code in (0, 1), resumed.output
    assert user_state(repo) == before
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any("recreated the worktree" in e.get("note", "") for e in events if e["event"] == "worktree_repaired")
    rows = results_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(len(rows))), "attempt numbers stay contiguous"
    meta = json.loads((run_dir / "run.json").read_text())
    slots = sorted(p for p in Path(meta["worktree"]).iterdir() if p.name.isdigit()) or [Path(meta["worktree"])]
    for worktree in slots:
        assert git(worktree, "rev-parse", "--show-toplevel") == str(worktree)
        assert git(worktree, "rev-parse", "HEAD") == git(repo, "rev-parse", meta["branch"])
    return rows


def run_until_it_stops(repo: Path, goal: dict) -> tuple[Path, dict]:
    """Write the goal into the repo (staged, part of the dirty index), run it from the repo's root, and
    check it stopped for its deleted worktree without touching the user. Returns (run dir, user state)."""
    write_goal(repo / "goals" / "toy.yaml", goal)
    git(repo, "add", "goals/toy.yaml")
    before = user_state(repo)
    result = run_cli("run", "goals/toy.yaml", cwd=repo, env={"PYTHONDONTWRITEBYTECODE": "1"})
    run_dir = only_run(repo)
    assert_stopped_for_the_deleted_worktree(result, run_dir)
    assert user_state(repo) == before
    return run_dir, before


def test_worktree_deleted_during_a_proposal_touches_nothing_of_the_user_and_resumes(tmp_path: Path) -> None:
    repo = dirty_user_repo(tmp_path)
    mark = tmp_path / "deleted-once"
    proposer = (f'if [ "$GOALLOOP_ITERATION" = 2 ] && [ ! -e {mark} ]; then touch {mark}; '
                'rm -rf "$GOALLOOP_WORKTREE"; exit 0; fi; echo "X = $(( GOALLOOP_ITERATION + 1 ))" > knob.py')
    goal = {"check": {"run": f"{PY} score.py", "metric": r"score: (\S+)"}, "target": {"value": 100},
            "budget": {"iterations": 4}, "proposer": {"kind": "command", "run": proposer}}
    run_dir, before = run_until_it_stops(repo, goal)
    assert not (repo / ".git" / "ORIG_HEAD").exists(), "no reset ever ran in the user's repository"

    rows = assert_resumes_to_the_end(repo, run_dir, before)
    assert [r["verdict"] for r in rows][:2] == ["baseline", "keep"]
    assert len(rows) == 5, rows  # attempt 2 (its worktree deleted) counted, then 3 and 4


def test_worktree_deleted_during_a_check_touches_nothing_of_the_user_and_resumes(tmp_path: Path) -> None:
    repo = dirty_user_repo(tmp_path)
    mark = tmp_path / "deleted-once"
    check = (f'if [ "$GOALLOOP_ITERATION" = 2 ] && [ ! -e {mark} ]; then touch {mark}; rm -rf "$PWD"; exit 0; fi; '
             f"{PY} score.py")
    steps = [{"description": f"X={v}", "files": {"knob.py": f"X = {v}\n"}} for v in (2, 3, 4, 5)]
    goal = {"check": {"run": check, "metric": r"score: (\S+)"}, "target": {"value": 100},
            "budget": {"iterations": 4}, "proposer": {"kind": "scripted", "steps": steps}}
    run_dir, before = run_until_it_stops(repo, goal)
    assert git(repo, "rev-parse", "HEAD") == git(repo, "rev-parse", "refs/heads/main")

    rows = assert_resumes_to_the_end(repo, run_dir, before)
    by_iteration = {r["iteration"]: r for r in rows}
    assert by_iteration["2"]["verdict"] == "keep", "the attempt whose check lost its worktree is proposed again"
    assert by_iteration["4"]["metric"] == "5"
    (aside,) = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/unjudged/").splitlines()
    assert git(repo, "show", f"{aside}:knob.py") == "X = 3", "its first try's commit is kept"


@pytest.mark.parametrize("parallel", [2])
def test_a_slot_worktree_deleted_in_a_parallel_round_stops_the_run_cleanly(tmp_path: Path, parallel: int) -> None:
    repo = dirty_user_repo(tmp_path)
    mark = tmp_path / "deleted-once"
    proposer = (f'if [ "$GOALLOOP_SLOT" = 1 ] && [ ! -e {mark} ]; then touch {mark}; rm -rf "$GOALLOOP_WORKTREE"; '
                'exit 0; fi; echo "X = $(( GOALLOOP_ITERATION + 1 ))" > knob.py')
    goal = {"check": {"run": f"{PY} score.py", "metric": r"score: (\S+)"}, "target": {"value": 100},
            "budget": {"iterations": 4}, "parallel": parallel, "proposer": {"kind": "command", "run": proposer}}
    run_dir, before = run_until_it_stops(repo, goal)
    rows = assert_resumes_to_the_end(repo, run_dir, before)
    assert len(rows) == 5
    assert os.path.isdir(json.loads((run_dir / "run.json").read_text())["worktree"] + "/1")
