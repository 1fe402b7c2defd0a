"""The command proposer through the real CLI: its environment and prompt file, failures and timeouts as
recorded attempts, and an agent that commits by itself.

The proposer commands are real shell and Python scripts run by `goalloop run` in a subprocess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import git, make_repo
from test_core_loop import COUNTING_SCORE_PY, METRIC, PY, alive, interrupt_run, run_goal, wait_for

# Records what it was given (environment, working directory, the prompt) to $RECORD_DIR/<iteration>.json,
# then sets X to iteration + 1 and describes the change in $GOALLOOP_DESCRIPTION_FILE.
RECORDING_PROPOSER = """\
import json, os, pathlib
env = {k: v for k, v in os.environ.items() if k.startswith("GOALLOOP_")}
n = int(env["GOALLOOP_ITERATION"])
seen = {"env": env, "cwd": os.getcwd(), "prompt": pathlib.Path(env["GOALLOOP_PROMPT_FILE"]).read_text()}
pathlib.Path(os.environ["RECORD_DIR"], f"{n}.json").write_text(json.dumps(seen))
pathlib.Path("knob.py").write_text(f"X = {n + 1}\\n")
pathlib.Path(env["GOALLOOP_DESCRIPTION_FILE"]).write_text(f"set X to {n + 1}\\n")
"""

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "agent", "GIT_AUTHOR_EMAIL": "agent@example.invalid",
                "GIT_COMMITTER_NAME": "agent", "GIT_COMMITTER_EMAIL": "agent@example.invalid"}


def score_repo_at(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})


def command_goal(run: str, *, iterations: int = 2, timeout: str | None = None, env: dict | None = None,
                 **extra: object) -> dict:
    proposer: dict = {"kind": "command", "run": run}
    if timeout:
        proposer["timeout"] = timeout
    if env:
        proposer["env"] = env
    goal = {"instructions": "Raise X in knob.py.", "check": {"run": f"{PY} score.py", "metric": METRIC},
            "budget": {"iterations": iterations}, "proposer": proposer}
    goal.update(extra)
    return goal


def test_command_gets_prompt_file_worktree_iteration_and_run_dir(tmp_path: Path) -> None:
    """Each call runs in the worktree with GOALLOOP_PROMPT_FILE (instructions, attempts table, last check
    output), GOALLOOP_WORKTREE, GOALLOOP_ITERATION and GOALLOOP_RUN_DIR; its description file names the row."""
    repo = score_repo_at(tmp_path)
    script = tmp_path / "propose.py"
    script.write_text(RECORDING_PROPOSER)
    records = tmp_path / "records"
    records.mkdir()
    run = run_goal(tmp_path, repo, command_goal(f"{PY} {script}", env={"RECORD_DIR": str(records)}))
    assert run.exit_code == 1, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "2", "keep"), ("2", "3", "keep")]
    assert [r["description"] for r in run.rows[1:]] == ["set X to 2", "set X to 3"]
    worktree = os.path.realpath(run.worktree)
    for n in (1, 2):
        seen = json.loads((records / f"{n}.json").read_text())
        env = seen["env"]
        assert env["GOALLOOP_ITERATION"] == str(n)
        assert os.path.realpath(env["GOALLOOP_WORKTREE"]) == worktree == os.path.realpath(seen["cwd"])
        assert os.path.realpath(env["GOALLOOP_RUN_DIR"]) == os.path.realpath(run.run_dir)
        prompt_file = Path(env["GOALLOOP_PROMPT_FILE"])
        assert prompt_file.is_file() and prompt_file.read_text() == seen["prompt"]
        assert "Raise X in knob.py." in seen["prompt"] and "# Attempts so far" in seen["prompt"]
        assert "| 0 | baseline | 1 |" in seen["prompt"]
    first, second = (json.loads((records / f"{n}.json").read_text())["prompt"] for n in (1, 2))
    assert "score: 1" in first and "score: 2" not in first
    assert "| 1 | keep | 2 |" in second and "score: 2" in second


def test_nonzero_exit_is_a_recorded_failed_attempt_and_the_run_goes_on(tmp_path: Path) -> None:
    """Attempt 1 exits 3: a crash row with the command's last stderr line, no check run, its edit kept in
    git; attempt 2 then runs and is kept (target met, exit 0)."""
    repo = score_repo_at(tmp_path)
    command = ('if [ "$GOALLOOP_ITERATION" = 1 ]; then echo "X = 5" > knob.py; echo "model unavailable" >&2; '
               'exit 3; fi; echo "X = 2" > knob.py; echo "raised to 2"')
    log = tmp_path / "checks.log"
    run = run_goal(tmp_path, repo, command_goal(command, iterations=5, target={"value": 2}),
                   env={"CHECK_LOG": str(log)})
    assert run.exit_code == 0, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "", "crash"), ("2", "2", "keep")]
    assert "exited with code 3: model unavailable" in run.attempts[1]["reason"]
    assert run.rows[2]["description"] == "raised to 2"
    assert log.read_text().split() == ["0", "2"]
    assert "model unavailable" in (run.run_dir / "attempts" / "0001" / "proposer.stderr.log").read_text()
    assert run.show(run.refs()[1], "knob.py") == "X = 5\n"


def test_timeout_is_a_recorded_failed_attempt_and_the_run_goes_on(tmp_path: Path) -> None:
    """proposer.timeout 1s: attempt 1 hangs (with a background child), is killed with its child, recorded
    as a crash saying it timed out; attempt 2 runs and is kept."""
    repo = score_repo_at(tmp_path)
    pidfile = tmp_path / "child.pid"
    command = (f'if [ "$GOALLOOP_ITERATION" = 1 ]; then echo "X = 5" > knob.py; sleep 1000 & echo $! > {pidfile}; '
               'wait; fi; echo "X = 2" > knob.py')
    run = run_goal(tmp_path, repo, command_goal(command, timeout="1s"))
    assert run.table() == [("0", "1", "baseline"), ("1", "", "crash"), ("2", "2", "keep")], run.cli.output
    assert "timed out" in run.attempts[1]["reason"]
    assert float(run.attempts[1]["seconds"]) < 500, "the run waited for the hung child (sleep 1000)"
    wait_for(lambda: not alive(int(pidfile.read_text())), 2, "the hung proposer's child to die")
    assert run.show(run.refs()[1], "knob.py") == "X = 5\n"


def test_proposer_that_commits_by_itself_still_has_its_change_recorded_and_judged(tmp_path: Path) -> None:
    """An agent that runs `git commit` in the worktree (and leaves one more edit uncommitted): the attempt
    commit holds both, sits on the kept commit, is judged (1: keep, 2: discard) and the worktree follows."""
    repo = score_repo_at(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    command = ('if [ "$GOALLOOP_ITERATION" = 1 ]; then X=2; else X=0; fi; echo "X = $X" > knob.py; '
               'git add knob.py && git commit -q -m "agent: X=$X" && echo "note $X" > notes.txt && echo "set $X"')
    run = run_goal(tmp_path, repo, command_goal(command, env=GIT_IDENTITY))
    assert run.table() == [("0", "1", "baseline"), ("1", "2", "keep"), ("2", "0", "discard")], run.cli.output
    refs = run.refs()
    assert git(repo, "rev-parse", f"{refs[1]}^") == base and git(repo, "rev-parse", f"{refs[2]}^") == refs[1]
    assert run.show(refs[1], "knob.py") == "X = 2\n" and run.show(refs[1], "notes.txt") == "note 2\n"
    assert run.show(refs[2], "knob.py") == "X = 0\n" and run.show(refs[2], "notes.txt") == "note 0\n"
    assert run.branch_head() == refs[1] == git(run.worktree, "rev-parse", "HEAD")
    assert (run.worktree / "knob.py").read_text() == "X = 2\n"
    assert run.worktree_status() == ""
    assert "agent: X=" not in git(repo, "log", "--format=%s", f"goalloop/{run.run_id}")


def test_proposer_running_git_add_all_does_not_commit_the_checks_caches(tmp_path: Path) -> None:
    """With Python writing bytecode, the baseline check leaves __pycache__/ in the worktree; an agent that
    commits with `git add -A` must not turn it into part of its attempt."""
    repo = score_repo_at(tmp_path)
    command = 'echo "X = 2 " > knob.py && git add -A && git commit -q -m agent'
    run = run_goal(tmp_path, repo, command_goal(command, iterations=1, env=GIT_IDENTITY),
                   env={"PYTHONDONTWRITEBYTECODE": ""})
    changed = git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", run.refs()[1]).split()
    assert changed == ["knob.py"]


def test_ctrl_c_while_the_command_proposes_exits_130_and_keeps_what_it_wrote_in_git(tmp_path: Path) -> None:
    """SIGINT while the agent is still working (it has edited knob.py and added a file): exit 130, the agent
    and its child are killed, and its edits stay reachable under refs/goalloop/<run-id>/."""
    repo = score_repo_at(tmp_path)
    pidfile = tmp_path / "proposer.pids"
    command = ('echo "X = 7" > knob.py; echo draft > notes.txt; sleep 1000 & '
               'echo "$$ $!" > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; wait')
    run, pids = interrupt_run(tmp_path, repo, command_goal(command), pidfile)
    assert run.exit_code == 130, run.cli.output
    for pid in pids:
        wait_for(lambda pid=pid: not alive(pid), 2, f"proposer process {pid} to die")
    assert (run.worktree / "knob.py").read_text() == "X = 1\n" and run.worktree_status() == ""
    assert any(run.show(sha, "knob.py") == "X = 7\n" and run.show(sha, "notes.txt") == "draft\n"
               for sha in run.refs().values()), "the interrupted proposal's edits are in no attempt ref"
