"""`parallel: N`: rounds of N candidates proposed and checked at once, each in its own worktree.

Through the real CLI with the scripted proposer (step i is used for attempt i, so a round of N slots plays N
consecutive steps). Each test attacks one property: the best of a round is kept, a target met mid-round
ends the run after the round, a killed parallel run resumes with ledger and git agreeing, `{slot}` reaches
the check, the iteration budget is never passed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import assert_ledger_and_git_agree, git, make_repo, write_goal
from test_core_loop import PY, run_goal, scripted, step
from test_resume import SLOW_SCORE_PY, VALUES, _kill_and_resume_until_done

SLOT_SCORE_PY = """\
import os
import knob
with open(os.environ["CHECK_LOG"], "a") as log:
    log.write(f"{os.environ['GOALLOOP_ITERATION']} {os.environ.get('SLOT_VAR', '-')} {os.getcwd()}\\n")
print(f"score: {knob.X}")
"""


def _knob_steps(values: list[int]) -> list[dict]:
    return [step(f"set X to {v}", {"knob.py": f"X = {v}\n"}) for v in values]


def test_best_of_a_round_is_kept_and_the_other_improvement_is_beaten(tmp_path: Path, score_repo: Path) -> None:
    goal = scripted(_knob_steps([5, 9, 0]), parallel=3)
    run = run_goal(tmp_path, score_repo, goal)
    assert run.exit_code == 1, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "5", "discard"), ("2", "9", "keep"), ("3", "0", "discard")]
    assert run.attempts[1]["reason"] == "beaten by attempt 2 in the same round"
    assert run.attempts[3]["reason"] == "not better than the kept state"
    refs = run.refs()
    assert sorted(refs) == [1, 2, 3], "every candidate keeps its ref"
    assert run.show(refs[1], "knob.py") == "X = 5\n"
    assert run.branch_head() == refs[2], "only the best candidate moved the branch"
    assert git(run.repo, "rev-list", "--count", f"{refs[2]}^..goalloop/{run.run_id}") == "1"
    for slot in range(3):
        worktree = run.worktree / str(slot)
        assert git(worktree, "rev-parse", "HEAD") == refs[2], f"slot {slot} is back at the kept commit"
        assert (worktree / "knob.py").read_text() == "X = 9\n"


def test_target_met_mid_round_ends_the_run_after_the_round(tmp_path: Path, score_repo: Path) -> None:
    goal = scripted(_knob_steps([2, 9, 3, 4, 20, 30, 40, 50]), parallel=4, target={"value": 8})
    run = run_goal(tmp_path, score_repo, goal)
    assert run.exit_code == 0, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "2", "discard"), ("2", "9", "keep"),
                           ("3", "3", "discard"), ("4", "4", "discard")]
    assert "target met by attempt 2" in run.cli.output
    assert sorted(run.refs()) == [1, 2, 3, 4]
    assert run.show(f"goalloop/{run.run_id}", "knob.py") == "X = 9\n"


def test_env_per_slot_gives_each_slot_its_own_value(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SLOT_SCORE_PY})
    log = tmp_path / "checks.log"
    goal = scripted(_knob_steps([2, 3, 4, 5]), parallel=2)
    goal["check"]["env_per_slot"] = {"SLOT_VAR": "gpu{slot}"}
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert run.exit_code == 1, run.cli.output
    seen = {int(it): (var, cwd) for it, var, cwd in (line.split(" ", 2) for line in log.read_text().splitlines())}
    assert sorted(seen) == [0, 1, 2, 3, 4]
    for iteration in range(1, 5):
        slot = (iteration - 1) % 2
        assert seen[iteration] == (f"gpu{slot}", str(run.worktree / str(slot))), iteration
    assert seen[0][0] == "gpu0", "the baseline runs in slot 0"


def test_iteration_budget_is_never_passed_when_parallel_does_not_divide_it(tmp_path: Path, score_repo: Path) -> None:
    goal = scripted(_knob_steps([2, 3, 4, 5, 6, 7, 8, 9]), parallel=3, iterations=5)
    run = run_goal(tmp_path, score_repo, goal)
    assert run.exit_code == 1, run.cli.output
    assert [r[0] for r in run.table()] == ["0", "1", "2", "3", "4", "5"]
    assert sorted(p.name for p in (run.run_dir / "attempts").iterdir()) == [f"{n:04d}" for n in range(6)]
    assert "iteration budget spent (5 of 5)" in run.cli.output
    assert run.show(f"goalloop/{run.run_id}", "knob.py") == "X = 6\n"


@pytest.mark.parametrize("seed", [7, 8])
def test_killed_parallel_run_resumes_and_git_agrees_with_ledger(tmp_path: Path, seed: int) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": SLOW_SCORE_PY})
    steps = [{"description": f"set X to {v}", "files": {"knob.py": f"X = {v}\n"}, "sleep": "0.1s"} for v in VALUES]
    iterations = len(VALUES)
    goal = write_goal(tmp_path / "crash.yaml", {
        "repo": str(repo), "parallel": 3,
        "check": {"run": f"{PY} score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 1000}, "budget": {"iterations": iterations},
        "proposer": {"kind": "scripted", "steps": steps},
    })
    home = tmp_path / "home"
    home.mkdir()
    kills = _kill_and_resume_until_done(goal, home, random.Random(seed), kills=6)
    assert kills >= 1

    run_dir = next(p.parent for p in (home / "runs").glob("crash-*/run.json"))
    assert_ledger_and_git_agree(repo, home, run_dir, iterations, slots=3)


# -- proposers in parallel ------------------------------------------------------------------------------------
REGRET_PY = """\
import math, re
text = open("knobs.py").read()
x, y = (float(re.search(rf"^{n} = (\\S+)$", text, re.M).group(1)) for n in ("X", "Y"))
print(f"regret: {(x - 0.73) ** 2 + (y - 0.21) ** 2}")
"""


def test_search_asks_for_a_round_of_points_before_telling_any(tmp_path: Path) -> None:
    import optuna

    repo = make_repo(tmp_path / "proj", {"knobs.py": "X = 0.5\nY = 0.5\n", "score.py": REGRET_PY})
    params = {name: {"file": "knobs.py", "pattern": rf"^{name.upper()} = (\S+)$", "low": 0.0, "high": 1.0}
              for name in ("x", "y")}
    goal = {"parallel": 4, "check": {"run": f"{PY} score.py", "metric": r"^regret: (\S+)"},
            "target": {"direction": "minimize"}, "budget": {"iterations": 8},
            "proposer": {"kind": "search", "seed": 0, "params": params}}
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 1, run.cli.output
    rows = run.rows
    assert [r["iteration"] for r in rows] == [str(n) for n in range(9)]
    assert all(r["verdict"] in ("keep", "discard") for r in rows[1:]), rows
    for first in (1, 5):
        round_points = {rows[n]["description"] for n in range(first, first + 4)}
        assert len(round_points) == 4, f"the round from {first} asked four different points"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(run.run_dir / "search.journal")))
    trials = optuna.load_study(study_name="goalloop", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 9 and all(t.state.is_finished() for t in trials), "every trial told, baseline included"


def test_command_proposer_runs_in_its_slot_worktree(tmp_path: Path, score_repo: Path) -> None:
    log = tmp_path / "proposer.log"
    command = ('echo "$GOALLOOP_ITERATION $GOALLOOP_SLOT $GOALLOOP_ROUND_SIZE $GOALLOOP_WORKTREE" >> "$LOG"; '
               'echo "X = $((GOALLOOP_ITERATION + 1))" > knob.py; echo "set X"')
    goal = {"parallel": 2, "check": {"run": f"{PY} score.py", "metric": r"score: (\S+)"},
            "budget": {"iterations": 3}, "proposer": {"kind": "command", "run": command}}
    run = run_goal(tmp_path, score_repo, goal, env={"LOG": str(log)})
    assert run.exit_code == 1, run.cli.output
    seen = sorted(tuple(line.split(" ", 3)) for line in log.read_text().splitlines())
    root = run.worktree
    assert seen == [("1", "0", "2", str(root / "0")), ("2", "1", "2", str(root / "1")),
                    ("3", "0", "1", str(root / "0"))], "the last round is shrunk to the one attempt left"
    assert run.table() == [("0", "1", "baseline"), ("1", "2", "discard"), ("2", "3", "keep"), ("3", "4", "keep")]


# -- Ctrl-C ------------------------------------------------------------------------------------------------
HANGING_SCORE_PY = """\
import os, pathlib, sys, time
it = os.environ["GOALLOOP_ITERATION"]
if it == "0":
    print("score: 1")
    sys.exit()
pidfile = pathlib.Path(os.environ["PIDFILE"])
pidfile.with_name(f"pid.{it}").write_text(str(os.getpid()))
if it == "2":
    other = pidfile.with_name("pid.1")
    while not other.exists():
        time.sleep(0.05)
    tmp = pidfile.with_name("pids.tmp")
    tmp.write_text(other.read_text() + " " + str(os.getpid()))
    tmp.rename(pidfile)
time.sleep(120)
"""


def test_ctrl_c_ends_every_slot_and_its_check(tmp_path: Path) -> None:
    from test_core_loop import alive, interrupt_run

    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": HANGING_SCORE_PY})
    goal = scripted(_knob_steps([2, 3, 4, 5]), parallel=2)
    run, pids = interrupt_run(tmp_path, repo, goal, tmp_path / "pids")
    assert run.exit_code == 130, run.cli.output
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids), "both slots' checks were killed"
    assert run.table() == [("0", "1", "baseline")]
    assert sorted(run.refs()) == [1, 2], "both interrupted attempts keep their commits"
    for slot in range(2):
        assert git(run.worktree / str(slot), "rev-parse", "HEAD") == run.branch_head()
    assert not list(run.run_dir.glob("child*.pgid"))


def test_claude_runs_one_independent_conversation_a_slot(tmp_path: Path) -> None:
    from loopback_api import LoopbackAPI, finish, turn
    from test_claude_proposer import calc_repo, claude_goal, fix_add, run_claude, transcript

    def by_stage(body: dict):
        """The same two-turn conversation whichever slot asks: edit first, then finish."""
        return turn(fix_add()) if len(body["messages"]) == 1 else turn(finish("add instead of subtract"))

    repo = calc_repo(tmp_path)
    with LoopbackAPI([by_stage] * 4) as api:
        run = run_claude(tmp_path, repo, {**claude_goal(iterations=2), "parallel": 2}, api)
        requests = api.requests
    assert run.exit_code == 0, run.cli.output
    assert run.table() == [("0", "", "baseline"), ("1", "", "keep"), ("2", "", "discard")]
    assert run.attempts[2]["reason"] == "beaten by attempt 1 in the same round"
    assert len(requests) == 4 and sum(len(r["messages"]) == 1 for r in requests) == 2, "two conversations"
    for iteration in (1, 2):
        kinds = [event["kind"] for event in transcript(run, iteration)]
        assert kinds.count("usage") == 2 and kinds[-1] == "result", f"attempt {iteration} had its own conversation"
        assert run.attempts[iteration]["cost_usd"] > 0
