"""What a command proposer spends, through the real CLI: the $GOALLOOP_COST_FILE protocol counted into
the budget, a cost nobody reported shown "not tracked" (never $0.00), and a command that fails the same
known way every time ending the run with exit 3 and the fix instead of spending the budget."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, run_cli, write_goal
from test_command_proposer import command_goal, score_repo_at
from test_core_loop import PY, run_goal

# Raises X by one and reports $0.02 and 1,000 tokens for the attempt, in two JSON lines (two model calls).
PAYING_COMMAND = (
    'n=$(( GOALLOOP_ITERATION + 1 )); echo "X = $n" > knob.py; '
    'echo \'{"cost_usd": 0.015, "input_tokens": 600, "output_tokens": 100}\' >> "$GOALLOOP_COST_FILE"; '
    'echo \'{"cost_usd": 0.005, "tokens": 300}\' >> "$GOALLOOP_COST_FILE"; echo "X to $n"'
)

CONTEXT_FILES = 5
"""Context files of 50,000 characters each (the most a prompt shows of one): a prompt over 200 KiB."""


def add_large_context(repo: Path) -> list[str]:
    """Commit five 50,000-character context files into `repo`; their paths, for the goal's context:."""
    paths = []
    for n in range(CONTEXT_FILES):
        line = f"context file {n}: a line the agent must receive whole, numbered "
        text = "".join(f"{line}{i:06d}\n" for i in range(50_000 // (len(line) + 7)))
        (repo / f"notes{n}.md").write_text(text)
        paths.append(f"notes{n}.md")
    git(repo, "add", *paths)
    git(repo, "commit", "-qm", "large context")
    return paths


def test_cost_file_spend_stops_the_run_at_the_attempt_that_passes_budget_usd(tmp_path: Path) -> None:
    """$0.02 an attempt under budget.usd 0.05 (and 10 attempts): the run stops with exit 1 after attempt 3,
    the first whose spend reaches it; the ledger has each attempt's reported cost and tokens."""
    repo = score_repo_at(tmp_path)
    run = run_goal(tmp_path, repo, command_goal(PAYING_COMMAND, iterations=10, budget={"iterations": 10, "usd": 0.05}))
    assert run.exit_code == 1, run.cli.output
    assert [r["verdict"] for r in run.rows] == ["baseline", "keep", "keep", "keep"]
    assert [r["cost_usd"] for r in run.rows[1:]] == ["0.0200"] * 3
    assert [run.attempts[n]["tokens"] for n in (1, 2, 3)] == [1000] * 3
    assert "dollar budget spent ($0.06 of $0.05)" in run.cli.output
    assert "$0.06, 3,000 tokens" in run.cli.output


def test_cost_file_tokens_count_against_budget_tokens(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path)
    goal = command_goal(PAYING_COMMAND, budget={"iterations": 10, "tokens": 2500})
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 1, run.cli.output
    assert len(run.rows) == 4 and "token budget spent (3,000 of 2,500)" in run.cli.output


def test_a_cost_nobody_reported_is_not_tracked_never_zero(tmp_path: Path) -> None:
    """A command that writes no cost file: cost_usd is empty in results.tsv, None in the events, and the
    summary and `status` say "not tracked" where they would otherwise claim $0.00 and 0 tokens."""
    repo = score_repo_at(tmp_path)
    run = run_goal(tmp_path, repo, command_goal('echo "X = 2" > knob.py', iterations=2))
    assert run.exit_code == 1, run.cli.output
    assert [r["cost_usd"] for r in run.rows] == ["0.0000", "", ""]
    assert run.attempts[1]["cost_usd"] is None and run.attempts[1]["tokens"] is None
    assert "cost not tracked, tokens not tracked" in run.cli.output and "$0.00" not in run.cli.output
    status = run_cli("status", "--home", str(run.home), cwd=tmp_path)
    assert "cost not tracked, tokens not tracked" in status.output and "$0.00" not in status.output


def test_an_unreadable_cost_file_is_unknown_not_zero(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path)
    command = 'echo "X = 2" > knob.py; echo "about a dollar" > "$GOALLOOP_COST_FILE"'
    run = run_goal(tmp_path, repo, command_goal(command, iterations=1))
    assert run.rows[1]["cost_usd"] == "" and run.attempts[1]["cost_usd"] is None


def test_validate_warns_that_a_command_proposer_cannot_enforce_usd_and_tokens_budgets(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path)
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **command_goal(
        'echo "X = 2" > knob.py', budget={"iterations": 3, "usd": 1, "tokens": 5000})})
    result = run_cli("validate", str(goal_path), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "budget.usd cannot be enforced" in result.output and "budget.tokens cannot be enforced" in result.output
    assert "GOALLOOP_COST_FILE" in result.output
    quiet = write_goal(tmp_path / "plain.yaml", {"repo": "proj", **command_goal('echo "X = 2" > knob.py')})
    assert "cannot be enforced" not in run_cli("validate", str(quiet), cwd=tmp_path).output


def test_a_missing_agent_cli_ends_the_run_after_three_attempts_with_exit_3_and_the_fix(tmp_path: Path) -> None:
    """`run: no-such-agent -p ...` exits 127 every attempt: after three, the run ends (exit 3) naming the
    failure and the fix, with those three attempts recorded, instead of spending 20 attempts."""
    repo = score_repo_at(tmp_path)
    run = run_goal(tmp_path, repo, command_goal('no-such-agent-cli -p < "$GOALLOOP_PROMPT_FILE"', iterations=20))
    assert run.exit_code == 3, run.cli.output
    assert [r["verdict"] for r in run.rows] == ["baseline", "crash", "crash", "crash"]
    assert "failed the same way 3 times in a row: the command was not found (exit 127)" in run.cli.output
    assert "fix: install the program" in run.cli.output and "goalloop resume" in run.cli.output


def test_a_prompt_in_argv_over_128_kib_is_named_and_ends_the_run(tmp_path: Path) -> None:
    """The old recipe `agent "$(cat "$GOALLOOP_PROMPT_FILE")"` with a 200 KiB context file: exit 126,
    Argument list too long, every attempt; the run stops after three saying to use stdin or a file."""
    repo = score_repo_at(tmp_path)
    context = add_large_context(repo)
    goal = command_goal(f'{PY} -c "import sys" "$(cat "$GOALLOOP_PROMPT_FILE")"', iterations=20, context=context)
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 3, run.cli.output
    assert len(run.rows) == 4
    assert "Argument list too long (exit 126)" in run.cli.output
    assert "pass the prompt on stdin or by file" in run.cli.output


def test_not_logged_in_every_attempt_ends_the_run(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path)
    command = 'echo \'{"type":"result","is_error":true,"result":"Not logged in · Please run /login"}\'; exit 1'
    run = run_goal(tmp_path, repo, command_goal(command, iterations=20))
    assert run.exit_code == 3 and len(run.rows) == 4, run.cli.output
    assert "not logged in or its API key was refused" in run.cli.output


def test_failures_that_differ_or_recover_do_not_end_the_run(tmp_path: Path) -> None:
    """Exit 127 twice, then a working attempt, then 127 twice more: never three in a row, so the run
    goes on to spend its 5 attempts (exit 1)."""
    repo = score_repo_at(tmp_path)
    command = ('if [ "$GOALLOOP_ITERATION" = 3 ]; then echo "X = 3" > knob.py; else no-such-agent-cli; fi')
    run = run_goal(tmp_path, repo, command_goal(command, iterations=5))
    assert run.exit_code == 1, run.cli.output
    assert [r["verdict"] for r in run.rows] == ["baseline", "crash", "crash", "keep", "crash", "crash"]


def test_cost_file_of_a_command_that_then_fails_still_counts(tmp_path: Path) -> None:
    """A proposal that failed still spent: its reported cost is in its row and in the budget."""
    repo = score_repo_at(tmp_path)
    command = 'echo \'{"cost_usd": 0.5}\' > "$GOALLOOP_COST_FILE"; echo "model refused" >&2; exit 1'
    run = run_goal(tmp_path, repo, command_goal(command, iterations=5, budget={"iterations": 5, "usd": 0.9}))
    assert run.exit_code == 1, run.cli.output
    assert [r["cost_usd"] for r in run.rows[1:]] == ["0.5000", "0.5000"]
    assert json.loads((run.run_dir / "attempts" / "0002" / "proposal.json").read_text())["cost_usd"] == 0.5


def test_a_prompt_on_stdin_reaches_the_command_whole(tmp_path: Path) -> None:
    """The README's recipe `run: my-agent < "$GOALLOOP_PROMPT_FILE"` with a prompt over 200 KiB: the command
    reads every byte of it."""
    repo = score_repo_at(tmp_path)
    context = add_large_context(repo)
    received = tmp_path / "received.md"
    agent = f"import sys, pathlib; pathlib.Path({str(received)!r}).write_text(sys.stdin.read()); print('read it')"
    goal = command_goal(f'{PY} -c "{agent}" < "$GOALLOOP_PROMPT_FILE"', iterations=1, context=context)
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 1, run.cli.output
    prompt = (run.run_dir / "attempts" / "0001" / "prompt.md").read_text()
    assert len(prompt.encode()) > 200 * 1024 and received.read_text() == prompt


WEB_APP_TEST_OUTPUT = """\
FAILED tests/test_auth.py::test_dashboard_redirects - AssertionError: expected 'Please log in to continue'
E   assert response.status == "401 Unauthorized"
    return render("Please login first")
"""


def test_an_agent_whose_output_quotes_login_code_is_not_taken_for_not_logged_in(tmp_path: Path) -> None:
    """An agent working on a web app's login code fails three times, its output full of that code's words
    ("Please log in", "401 Unauthorized"): not the CLI's own message, so the run spends its budget (exit 1)."""
    repo = score_repo_at(tmp_path)
    (tmp_path / "said.txt").write_text(WEB_APP_TEST_OUTPUT)
    run = run_goal(tmp_path, repo, command_goal(f"cat {tmp_path / 'said.txt'}; exit 1", iterations=4))
    assert run.exit_code == 1, run.cli.output
    assert [r["verdict"] for r in run.rows] == ["baseline"] + ["crash"] * 4
    assert "not logged in" not in run.cli.output


def test_an_agent_waiting_for_a_browser_login_ends_the_run_after_three_timeouts(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path)
    command = 'echo "Waiting for browser login..."; sleep 60'
    run = run_goal(tmp_path, repo, command_goal(command, iterations=20, timeout="1s"))
    assert run.exit_code == 3, run.cli.output
    assert len(run.rows) == 4, run.cli.output
    assert "the agent waited for a browser login until it timed out" in run.cli.output
    assert "fix: give it an API key" in run.cli.output
