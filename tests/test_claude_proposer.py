"""The Claude proposer through the real CLI and the real `anthropic` client, against a loopback API server.

Every run is `python -m goalloop run` in a subprocess whose ANTHROPIC_BASE_URL points at tests/loopback_api.py,
a stdlib HTTP server in this process that plays scripted replies and records each request. Nothing is mocked
and nothing reaches the network; the one test that would need the real API is marked live_api and skipped
unless a real ANTHROPIC_API_KEY is set. Each test attacks one property, named in its name.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import make_repo, run_cli, write_goal
from loopback_api import (
    DROP,
    MALFORMED,
    LoopbackAPI,
    Reply,
    bash,
    edit,
    finish,
    prefix_tokens,
    refusal,
    status,
    text,
    tool_result_text,
    turn,
)
from test_core_loop import PY, Run, run_goal

from goalloop.goal import DEFAULT_CLAUDE_MODEL
from goalloop.proposers.claude import PriceTable

CALC_PY = "def add(a, b):\n    return a - b\n"
CHECK_CALC_PY = 'from calc import add\nassert add(2, 3) == 5, f"add(2, 3) returned {add(2, 3)}"\nprint("ok")\n'
PRICED_MODEL = "claude-sonnet-5-5"
FAST_BACKOFF = {"GOALLOOP_OUTAGE_BACKOFF": "0.05"}


def calc_repo(tmp_path: Path) -> Path:
    """A repo whose check `python check_calc.py` fails until calc.add adds."""
    return make_repo(tmp_path / "proj", {"calc.py": CALC_PY, "check_calc.py": CHECK_CALC_PY})


def claude_goal(*, iterations: int = 2, budget: dict | None = None, editable: list[str] | None = None,
                **proposer: object) -> dict:
    return {
        "instructions": "Make check_calc.py pass by fixing calc.py.",
        "editable": editable or [],
        "check": {"run": f"{PY} check_calc.py"},
        "budget": {"iterations": iterations, **(budget or {})},
        "proposer": {"kind": "claude", "model": PRICED_MODEL, **proposer},
    }


def run_claude(tmp_path: Path, repo: Path, goal: dict, api: LoopbackAPI, **env: str) -> Run:
    return run_goal(tmp_path, repo, goal, env={**api.env(), **FAST_BACKOFF, **env})


def fix_add() -> dict:
    return edit("str_replace", "calc.py", old_str="return a - b", new_str="return a + b")


def transcript(run: Run, iteration: int) -> list[dict]:
    path = run.run_dir / "attempts" / f"{iteration:04d}" / "claude.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def billed_usd(usages: list[dict[str, int]]) -> float:
    """What the usages the server reported cost at the price table's rates for PRICED_MODEL today."""
    rates = PriceTable.load().rates(PRICED_MODEL, datetime.now(timezone.utc).date())
    return sum(
        u["input_tokens"] * rates.input + u["output_tokens"] * rates.output
        + u["cache_creation_input_tokens"] * rates.cache_write + u["cache_read_input_tokens"] * rates.cache_read
        for u in usages
    ) / 1e6


def breakpoints(body: dict) -> list[str]:
    """Where a request's cache_control marks are: 'tools', 'system' or 'message <i> block <j>'."""
    found = ["tools" for tool in body["tools"] if "cache_control" in tool]
    found += ["system" for block in body["system"] if "cache_control" in block]
    for i, message in enumerate(body["messages"]):
        found += [f"message {i} block {j}" for j, block in enumerate(message["content"]) if "cache_control" in block]
    return found


# -- a run that works -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_attempts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, LoopbackAPI, dict[str, dict]]:
    """Attempt 1 multiplies (discarded, but leaves a lesson); attempt 2 runs the check, adds (kept)."""
    tmp_path = tmp_path_factory.mktemp("two_attempts")
    repo = calc_repo(tmp_path)
    calls = {"view": edit("view", "calc.py"), "run_check": bash(f"{PY} check_calc.py")}
    script = [
        turn(text("Let me look."), calls["view"]),
        turn(edit("str_replace", "calc.py", old_str="return a - b", new_str="return a * b")),
        turn(finish("multiply instead of subtract", lesson="the check wants add to sum its arguments")),
        turn(calls["run_check"]),
        turn(fix_add()),
        turn(finish("add instead of subtract, as check_calc.py expects")),
    ]
    with LoopbackAPI(script) as api:
        run = run_claude(tmp_path, repo, claude_goal(), api)
    return run, api, calls


def test_scripted_claude_fixes_the_failing_check_in_two_attempts(two_attempts) -> None:
    run, api, _ = two_attempts
    assert run.exit_code == 0, run.cli.output
    assert [(r["iteration"], r["verdict"]) for r in run.rows] == [("0", "baseline"), ("1", "discard"), ("2", "keep")]
    assert run.rows[1]["description"] == "multiply instead of subtract"
    assert run.rows[2]["description"] == "add instead of subtract, as check_calc.py expects"
    assert run.show(f"goalloop/{run.run_id}", "calc.py") == "def add(a, b):\n    return a + b\n"
    assert (run.repo / "calc.py").read_text() == CALC_PY
    assert len(api.requests) == 6 and api.remaining == 0


def test_tools_run_in_the_worktree_and_their_output_goes_back_to_claude(two_attempts) -> None:
    _, api, calls = two_attempts
    assert "return a - b" in tool_result_text(api.tool_result(calls["view"]))
    check_output = tool_result_text(api.tool_result(calls["run_check"]))
    assert "AssertionError: add(2, 3) returned -1" in check_output and "[exit code 1]" in check_output
    sent = api.headers[0]
    assert "sk-ant-loopback-dummy" in sent.get("x-api-key", "") + sent.get("authorization", "")
    assert {tool["name"] for tool in api.requests[0]["tools"]} == {"str_replace_based_edit_tool", "bash", "finish"}
    assert {tool.get("type") for tool in api.requests[0]["tools"]} >= {"text_editor_20250728", "bash_20250124"}


def test_a_lesson_goes_to_notes_md_and_into_every_later_prompt(two_attempts) -> None:
    run, api, _ = two_attempts
    assert (run.run_dir / "notes.md").read_text() == "- attempt 1: the check wants add to sum its arguments\n"
    first, second = api.first_requests_of_attempts()
    assert "sum its arguments" not in json.dumps(first["messages"])
    assert "attempt 1: the check wants add to sum its arguments" in second["messages"][0]["content"][1]["text"]


def test_stable_prefix_is_identical_across_attempts_and_marked_for_caching(two_attempts) -> None:
    _, api, _ = two_attempts
    first, second = api.first_requests_of_attempts()
    assert first["system"] == second["system"] and first["tools"] == second["tools"]
    assert first["messages"][0]["content"][0] == second["messages"][0]["content"][0]
    assert first["messages"][0]["content"][1] != second["messages"][0]["content"][1]
    for body in api.requests:
        marks = breakpoints(body)
        last = len(body["messages"]) - 1
        assert marks[:2] == ["system", "message 0 block 0"]
        assert f"message {last} block {len(body['messages'][last]['content']) - 1}" in marks
        assert len(marks) <= 4


def test_each_turn_and_each_new_attempt_reads_the_cached_prefix(two_attempts) -> None:
    _, api, _ = two_attempts
    reads = [usage["cache_read_input_tokens"] for usage in api.usages]
    assert reads[0] == 0
    assert all(reads[i] > reads[i - 1] for i in (1, 2, 4, 5)), reads
    opening_of_attempt_2 = api.requests[3]
    tools_system_and_stable = len(opening_of_attempt_2["tools"]) + len(opening_of_attempt_2["system"]) + 1
    assert reads[3] == prefix_tokens(opening_of_attempt_2, tools_system_and_stable)


def test_cost_is_priced_from_usage_and_the_transcript_is_saved(two_attempts) -> None:
    run, api, _ = two_attempts
    expected = billed_usd(api.usages)
    recorded = sum(float(r["cost_usd"]) for r in run.rows[1:])
    assert recorded == pytest.approx(expected, abs=2e-4) and recorded > 0
    kinds = [entry["kind"] for entry in transcript(run, 2)]
    assert kinds[:2] == ["setup", "message"] and kinds.count("usage") == 3 and kinds[-1] == "result"


# -- the worktree's walls ---------------------------------------------------------------------------------
def test_editor_refuses_paths_outside_the_worktree_git_and_protected_or_not_editable_files(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    repo = calc_repo(tmp_path)
    (repo / "escape.txt").symlink_to(outside)
    make_repo(repo, {})  # commits the symlink
    refused = {
        "dot-dot": edit("view", "../outside.txt"),
        "absolute": edit("create", str(tmp_path / "planted.txt"), file_text="x"),
        "symlink": edit("str_replace", "escape.txt", old_str="keep", new_str="lose"),
        "protected": edit("create", "check_calc.py", file_text="print('ok')\n"),
        "not editable": edit("create", "helper.py", file_text="x = 1\n"),
        "git": edit("create", ".git/hooks/pre-commit", file_text="exit 0\n"),
    }
    allowed_view = edit("view", "check_calc.py")
    script = [turn(*refused.values(), allowed_view), turn(fix_add(), finish("add"))]
    with LoopbackAPI(script) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1, editable=["calc.py"]), api)
    assert run.exit_code == 0, run.cli.output
    messages = {name: tool_result_text(api.tool_result(call)) for name, call in refused.items()}
    assert all(api.tool_result(call).get("is_error") is True for call in refused.values())
    assert "outside the repository" in messages["dot-dot"]
    assert "outside the repository" in messages["absolute"] and "outside the repository" in messages["symlink"]
    assert "protected" in messages["protected"] and "not editable" in messages["not editable"]
    assert "git's own data" in messages["git"]
    assert "assert add(2, 3) == 5" in tool_result_text(api.tool_result(allowed_view))
    assert outside.read_text() == "keep me\n" and not (tmp_path / "planted.txt").exists()
    assert run.show(f"goalloop/{run.run_id}", "check_calc.py") == CHECK_CALC_PY


def test_the_holdout_check_is_hidden_from_the_editor_and_from_the_prompt(tmp_path: Path) -> None:
    """The holdout's script can be neither viewed nor listed, and nothing of it reaches Claude."""
    repo = make_repo(tmp_path / "proj", {"calc.py": CALC_PY, "check_calc.py": CHECK_CALC_PY,
                                         "holdout_calc.py": "from calc import add\nprint(f'held: {add(10, 5)}')\n"})
    peek, listing = edit("view", "holdout_calc.py"), edit("view", ".")
    script = [turn(peek, listing), turn(fix_add(), finish("add"))]
    goal = claude_goal(iterations=1)
    goal["holdout"] = {"run": f"{PY} holdout_calc.py", "metric": r"^held: (\S+)"}
    with LoopbackAPI(script) as api:
        run = run_claude(tmp_path, repo, goal, api)
    assert run.exit_code == 0, run.cli.output
    assert api.tool_result(peek).get("is_error") is True
    assert "not available" in tool_result_text(api.tool_result(peek))
    assert "holdout_calc" not in tool_result_text(api.tool_result(listing))
    first_request = json.dumps(api.requests[0])
    assert "holdout_calc" not in first_request and "held:" not in first_request


def test_editor_commands_view_create_insert_and_str_replace_answer_like_anthropics_editor(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    calls = {
        "insert": edit("insert", "calc.py", insert_line=0, insert_text='"""Arithmetic."""'),
        "view range": edit("view", "calc.py", view_range=[2, 3]),
        "ambiguous": edit("str_replace", "calc.py", old_str="a", new_str="x"),
        "missing": edit("str_replace", "calc.py", old_str="return a / b", new_str="x"),
        "create": edit("create", "extra.py", file_text="EXTRA = 1\n"),
        "listing": edit("view", "."),
    }
    with LoopbackAPI([turn(*calls.values()), turn(fix_add(), finish("add"))]) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1), api)
    assert run.exit_code == 0, run.cli.output
    said = {name: tool_result_text(api.tool_result(call)) for name, call in calls.items()}
    errors = {name for name, call in calls.items() if api.tool_result(call).get("is_error")}
    assert errors == {"ambiguous", "missing"}
    assert said["view range"] == "     2\tdef add(a, b):\n     3\t    return a - b"
    assert "appears 3 times" in said["ambiguous"] and "not found" in said["missing"]
    assert {"calc.py", "extra.py", "check_calc.py"} <= set(said["listing"].splitlines())
    branch = f"goalloop/{run.run_id}"
    assert run.show(branch, "calc.py") == '"""Arithmetic."""\ndef add(a, b):\n    return a + b\n'
    assert run.show(branch, "extra.py") == "EXTRA = 1\n"


def test_bash_runs_in_the_worktree_within_its_timeout_and_without_secrets_in_its_environment(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    show_env, hang = bash("pwd; env"), bash("echo started; sleep 30")
    script = [turn(show_env, hang), turn(fix_add(), finish("add"))]
    with LoopbackAPI(script) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1, bash_timeout="1s"), api,
                         MY_SERVICE_TOKEN="hunter2", DB_PASSWORD="swordfish", VISIBLE_MARKER="hello")
    assert run.exit_code == 0, run.cli.output
    output = tool_result_text(api.tool_result(show_env))
    assert str(run.worktree) in output and "VISIBLE_MARKER=hello" in output
    assert "PYTHONDONTWRITEBYTECODE=1" in output, "goalloop's own variables for the worktree are set"
    for secret in ("ANTHROPIC_API_KEY", "sk-ant-loopback-dummy", "hunter2", "swordfish"):
        assert secret not in output
    timed_out = api.tool_result(hang)
    assert timed_out.get("is_error") is True
    assert "started" in tool_result_text(timed_out) and "timed out after 1s" in tool_result_text(timed_out)


# -- faults -----------------------------------------------------------------------------------------------
def test_an_api_outage_is_waited_out_with_backoff_then_the_attempt_goes_on(tmp_path: Path) -> None:
    """Three 529s exhaust the SDK's own retries once, then a dropped connection, a 500 and a 429 once more."""
    repo = calc_repo(tmp_path)
    storm = [status(529)] * 3 + [DROP, status(500), status(429)]
    with LoopbackAPI([*storm, turn(fix_add()), turn(finish("add"))]) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1, outage_wait="30s"), api)
    assert run.exit_code == 0, run.cli.output
    assert run.cli.stderr.count("claude_api_unavailable_waiting") == 2
    waits = [entry for entry in transcript(run, 1) if entry["kind"] == "claude_api_unavailable_waiting"]
    assert [w["problem"].split(" (")[0] for w in waits] == ["HTTP 529", "HTTP 429"]
    assert len(api.requests) == 8


def test_an_outage_longer_than_outage_wait_stops_the_run_resumably_with_exit_3(tmp_path: Path) -> None:
    """One reply, then an outage: the run stops with exit 3, and the attempt is recorded with what it spent."""
    repo = calc_repo(tmp_path)
    with LoopbackAPI([turn(edit("view", "calc.py"))] + [status(529)] * 200) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1, outage_wait="1s"), api,
                         GOALLOOP_OUTAGE_BACKOFF="0.2")
    assert run.exit_code == 3, run.cli.output
    assert "the Claude API has been unavailable" in run.cli.stderr and "goalloop resume" in run.cli.stderr
    assert 4 <= len(api.requests) <= 16
    assert [r["verdict"] for r in run.rows] == ["baseline", "crash"]
    assert float(run.rows[1]["cost_usd"]) > 0, "the reply before the outage is counted against the budget"


def test_a_rejected_key_ends_the_run_at_once_with_exit_3_and_says_to_set_the_key(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    with LoopbackAPI([status(401, "invalid x-api-key")]) as api:
        run = run_claude(tmp_path, repo, claude_goal(), api)
    assert run.exit_code == 3, run.cli.output
    assert "HTTP 401" in run.cli.stderr and "invalid x-api-key" in run.cli.stderr
    assert "set ANTHROPIC_API_KEY" in run.cli.stderr
    assert len(api.requests) == 1


def test_an_unknown_model_404_names_the_models_to_use(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    with LoopbackAPI([status(404, "model: claude-sonnet-9")]) as api:
        run = run_claude(tmp_path, repo, claude_goal(model="claude-sonnet-9"), api)
    assert run.exit_code == 3, run.cli.output
    assert "does not know model 'claude-sonnet-9'" in run.cli.stderr
    assert "set proposer.model to one of:" in run.cli.stderr and PRICED_MODEL in run.cli.stderr


def test_unreadable_refused_and_toolless_replies_are_failed_attempts_and_max_turns_still_checks(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    script = [
        MALFORMED,
        refusal(),
        turn(text("I think the code is fine as it is.")),
        turn(text("Fixing add."), fix_add()),
        turn(edit("view", "calc.py")),
    ]
    with LoopbackAPI(script) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=4, max_turns=2), api)
    assert run.exit_code == 0, run.cli.output
    assert [r["verdict"] for r in run.rows] == ["baseline", "crash", "crash", "crash", "keep"]
    reasons = {i: run.attempts[i]["reason"] for i in (1, 2, 3)}
    assert "Claude's reply could not be read" in reasons[1]
    assert "Claude declined" in reasons[2]
    assert "replied without using a tool: I think the code is fine" in reasons[3]
    assert run.rows[4]["description"] == "Fixing add. (Claude used all 2 turns without calling finish)"
    assert api.remaining == 0


# -- spend ------------------------------------------------------------------------------------------------
def test_a_dollar_budget_stops_the_run_before_a_call_could_pass_it(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)

    def wrong_fix_then_finish(body: dict) -> Reply:
        if len(body["messages"]) == 1:
            return turn(edit("str_replace", "calc.py", old_str="return a - b", new_str="return a * b"))
        return turn(finish("multiply"))

    budget_usd = 0.03
    with LoopbackAPI([wrong_fix_then_finish] * 100) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=100, budget={"usd": budget_usd}, max_tokens=300), api)
    assert run.exit_code == 1, run.cli.output
    assert "budget spent: dollar budget:" in run.cli.stdout
    billed = billed_usd(api.usages)
    recorded = sum(float(r["cost_usd"] or 0) for r in run.rows[1:])
    assert 0.5 * budget_usd < billed <= budget_usd
    assert recorded == pytest.approx(billed, abs=5e-4)
    assert f"${recorded:.2f}" in run.cli.stdout.split("spent ")[-1]
    assert run.attempts[max(run.attempts)]["reason"].startswith("proposal failed: stopped: dollar budget")


def test_a_model_missing_from_the_price_table_warns_and_records_no_cost(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    with LoopbackAPI([turn(fix_add(), finish("add"))]) as api:
        run = run_claude(tmp_path, repo, claude_goal(iterations=1, model="claude-imaginary-9"), api)
    assert run.exit_code == 0, run.cli.output
    assert "model_not_priced" in run.cli.stderr
    assert run.rows[1]["cost_usd"] == ""
    assert api.requests[0]["model"] == "claude-imaginary-9"


def test_a_thinking_budget_not_below_max_tokens_is_a_goal_error(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **claude_goal(max_tokens=2048, thinking=4096)})
    result = run_cli("validate", str(goal_path), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "thinking" in result.stderr and "must be less than max_tokens" in result.stderr
    assert repo.exists()


# -- the price table --------------------------------------------------------------------------------------
def test_every_priced_model_has_all_four_rates_and_the_default_model_is_priced() -> None:
    table = PriceTable.load()
    today = datetime.now(timezone.utc).date()
    assert table.rates(DEFAULT_CLAUDE_MODEL, today) is not None
    for name, price in table.models.items():
        rates = price.rates_on(today)
        assert rates is not None and min(rates.input, rates.output, rates.cache_write, rates.cache_read) > 0, name
        assert rates.cache_read < rates.input < rates.cache_write < rates.output, name


def test_the_default_model_is_not_about_to_retire() -> None:
    price = PriceTable.load().lookup(DEFAULT_CLAUDE_MODEL)
    assert price is not None and price.retires is None


# -- the real API -----------------------------------------------------------------------------------------
REAL_KEY = os.environ.get("ANTHROPIC_API_KEY", "")


@pytest.mark.live_api
@pytest.mark.skipif(not REAL_KEY.startswith("sk-ant-") or "dummy" in REAL_KEY or os.environ.get("ANTHROPIC_BASE_URL"),
                    reason="needs a real ANTHROPIC_API_KEY (and no ANTHROPIC_BASE_URL)")
def test_live_claude_fixes_the_check(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    goal = claude_goal(iterations=2, budget={"usd": 0.5}, max_turns=8, max_tokens=2048)
    goal["proposer"]["model"] = DEFAULT_CLAUDE_MODEL
    run = run_goal(tmp_path, repo, goal, timeout=600)
    assert run.exit_code == 0, run.cli.output
    assert float(run.rows[-1]["cost_usd"]) > 0
