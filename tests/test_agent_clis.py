"""The real agent CLIs as proposers, through `goalloop run`, against the project's loopback model servers.

Claude Code talks to tests/loopback_api.py (Anthropic Messages, streamed); Codex (Responses API) and
Aider (chat completions, through litellm) to tests/loopback_openai.py. Each scripted model answers with
the tool calls its CLI really expects (Claude Code: Read, Edit, Bash; Codex: apply_patch, exec_command;
Aider: a SEARCH/REPLACE block), so each CLI fixes a failing test as it would for a user. Tests skip,
saying how to install, when a CLI is absent (`.ci/run` installs all three).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent_clis import (
    FIXED_CALC, HOLDOUT_SECRET, NETRC_SECRET, calc_goal, calc_repo, check_command, cli_or_skip, goalloop, place,
    run_calc_goal, run_guarded_calc_goal, stdout_json_lines, without_keys,
)
from conftest import git, only_run_dir, results_rows, write_goal
from loopback_api import LoopbackAPI, Reply, text, tool_use, turn
from loopback_openai import Call, LoopbackOpenAI
from loopback_openai import Reply as OpenAIReply
from test_command_spend import add_large_context

from goalloop.sandbox import unavailable

BWRAP_MISSING = unavailable()
needs_bwrap = pytest.mark.skipif(BWRAP_MISSING is not None,
                                 reason=f"bubblewrap cannot run here: {BWRAP_MISSING and BWRAP_MISSING.problem}")
SANDBOX = pytest.mark.parametrize("sandbox", [False, True], ids=["sandbox-off", "sandbox-on"])


def _nested_bubblewrap_refused() -> str | None:
    """Why a bubblewrap inside bubblewrap (Codex's own sandbox inside goalloop's) cannot start here, if it cannot."""
    if BWRAP_MISSING is not None:
        return None
    nested = subprocess.run(["bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--dev-bind", "/", "/",
                             "bwrap", "--unshare-user", "--unshare-pid", "--dev-bind", "/", "/", "true"],
                            capture_output=True, text=True, timeout=30)
    return None if nested.returncode == 0 else (nested.stderr.strip() or f"exit {nested.returncode}")


NESTED_BWRAP_REFUSED = _nested_bubblewrap_refused()

CLAUDE_MODEL = "claude-sonnet-4-5"
"""A model Claude Code's own price table knows, so it reports a cost."""


def attempt_events(run_dir: Path) -> dict[int, dict[str, Any]]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return {e["iteration"]: e for e in events if e.get("event") == "attempt"}


def assert_only_the_fix(repo: Path, run_dir: Path) -> None:
    """The fix is kept on the run's branch, it changed calc.py alone, and the worktree holds nothing else."""
    branch = f"goalloop/{run_dir.name}"
    assert git(repo, "show", f"{branch}:calc.py") == FIXED_CALC.rstrip("\n")
    assert git(repo, "diff", "--name-only", "main", branch) == "calc.py"
    worktree = Path(json.loads((run_dir / "run.json").read_text())["worktree"])
    assert git(worktree, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""
    assert sorted(p.name for p in worktree.iterdir()) == sorted(git(repo, "ls-tree", "--name-only", "main").split()
                                                                  + [".git"])


def assert_prompt_whole(run_dir: Path, sent: str) -> None:
    prompt = (run_dir / "attempts" / "0001" / "prompt.md").read_text(encoding="utf-8")
    assert len(prompt.encode()) > 200 * 1024
    assert prompt.strip() in sent


def assert_no_key_in_the_check(key_log: Path) -> None:
    seen = [json.loads(line) for line in key_log.read_text().splitlines()]
    assert seen and all(keys == [] for keys in seen), seen


# -- Claude Code ------------------------------------------------------------------------------------------
def test_claude_code_fixes_the_failing_test_with_its_state_and_key_kept_out(tmp_path: Path) -> None:
    """kind: claude-code reads a 200 KiB prompt from stdin, edits calc.py, runs the goal's check through
    its Bash tool (allowed for that command only), and its fix is kept (exit 0); its config and sessions
    are under the run folder, the worktree holds only the fix, the check never sees the key, and the
    attempt's cost and tokens are what Claude Code reported."""
    claude = cli_or_skip("claude")
    repo = calc_repo(tmp_path)
    context = add_large_context(repo)
    run_check = tool_use("Bash", command=check_command(), description="Run the failing test")
    script = [turn(tool_use("Read", file_path="calc.py")),
              turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a + b")),
              turn(run_check),
              turn(text("Fixed add(): it subtracted instead of adding."))]
    key_log = tmp_path / "keys.log"
    with LoopbackAPI(script, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        env = without_keys({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback",
                            "SEEN_LOG": str(key_log)})
        result = run_calc_goal(tmp_path, {"kind": "claude-code", "program": claude, "model": CLAUDE_MODEL}, env,
                               context=context)
        assert result.exit_code == 0, result.output
        assert "all passed" in str(api.tool_result(run_check)["content"])
        first = api.requests[0]["messages"][0]["content"]
        sent = "\n".join(block.get("text", "") for block in first)
    run_dir = only_run_dir(tmp_path / "home")
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep"]
    assert results_rows(run_dir)[1]["description"] == "Fixed add(): it subtracted instead of adding."
    assert_only_the_fix(repo, run_dir)
    assert_prompt_whole(run_dir, sent)
    assert list((run_dir / "agents" / "claude-code" / "projects").rglob("*.jsonl"))
    assert_no_key_in_the_check(key_log)
    report = stdout_json_lines(run_dir / "attempts" / "0001" / "proposer.stdout.log")[-1]
    attempt = attempt_events(run_dir)[1]
    assert report["total_cost_usd"] > 0 and attempt["cost_usd"] == report["total_cost_usd"]
    assert attempt["tokens"] == sum(u["inputTokens"] + u["outputTokens"] + u["cacheReadInputTokens"]
                                    + u["cacheCreationInputTokens"] for u in report["modelUsage"].values())


def _wrong_fix(body: dict[str, Any]) -> Reply:
    """An open-ended attempt that never fixes the bug: Read, a wrong Edit, then a summary."""
    results = sum(1 for m in body["messages"] if isinstance(m["content"], list)
                  for block in m["content"] if block.get("type") == "tool_result")
    if results == 0:
        return turn(tool_use("Read", file_path="calc.py"))
    if results == 1:
        return turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a * b"))
    return turn(text("Changed add() to multiply."))


def test_claude_code_reported_cost_stops_the_run_at_the_attempt_that_passes_budget_usd(tmp_path: Path) -> None:
    """budget.usd 0.2 with 10 attempts allowed: Claude Code reports what each attempt cost; the run stops
    (exit 1) at the first attempt whose cost takes the total to the budget, the ledger's costs add up to
    what Claude Code reported, and each call was given what was left as --max-budget-usd."""
    claude = cli_or_skip("claude")
    repo = calc_repo(tmp_path)
    budget = 0.2
    with LoopbackAPI([_wrong_fix] * 60, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        env = without_keys({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback",
                            "SEEN_LOG": str(tmp_path / "keys.log")})
        result = run_calc_goal(tmp_path, {"kind": "claude-code", "program": claude, "model": CLAUDE_MODEL}, env,
                               budget={"iterations": 10, "usd": budget})
    assert result.exit_code == 1, result.output
    assert "dollar budget spent" in result.output
    run_dir = only_run_dir(tmp_path / "home")
    attempts = [a for n, a in sorted(attempt_events(run_dir).items()) if n > 0]
    assert 2 <= len(attempts) < 10
    costs = [a["cost_usd"] for a in attempts]
    assert sum(costs[:-1]) < budget <= sum(costs)
    reports = [stdout_json_lines(run_dir / "attempts" / f"{n:04d}" / "proposer.stdout.log")[-1]
               for n in range(1, len(attempts) + 1)]
    assert costs == [r["total_cost_usd"] for r in reports]
    assert reports[-1]["subtype"] == "error_max_budget_usd"  # it was given only what was left, and stopped there
    (said,) = reports[-1]["errors"]
    assert said.startswith("Reached maximum budget ($")
    assert float(said.split("$")[1].rstrip(")")) == pytest.approx(budget - sum(costs[:-1]), abs=1e-4)
    assert f"${sum(costs):.2f}" in result.output


@pytest.mark.parametrize("allow", [[], ["Bash(touch:*)"]])
def test_claude_code_may_run_only_the_check_unless_allow_grants_more(tmp_path: Path, allow: list[str]) -> None:
    """The model asks Bash for `touch made-by-bash.txt` (not the check): denied by default, so only the fix
    is made and kept; with allow: ["Bash(touch:*)"] the same request runs, and the attempt is rejected for
    changing a file outside editable:, which shows the rule is what stopped it."""
    claude = cli_or_skip("claude")
    repo = calc_repo(tmp_path)
    other = tool_use("Bash", command="touch made-by-bash.txt", description="Make a file")
    script = [turn(tool_use("Read", file_path="calc.py")), turn(other),
              turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a + b")),
              turn(text("Fixed add()."))]
    with LoopbackAPI(script, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        env = without_keys({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback",
                            "SEEN_LOG": str(tmp_path / "keys.log")})
        result = run_calc_goal(tmp_path, {"kind": "claude-code", "program": claude, "model": CLAUDE_MODEL,
                                          "allow": allow}, env, budget={"iterations": 1})
        answer = str(api.tool_result(other)["content"])
    run_dir = only_run_dir(tmp_path / "home")
    verdict = results_rows(run_dir)[1]["verdict"]
    patch = (run_dir / "attempts" / "0001" / "diff.patch").read_text()
    if allow:
        assert "denied" not in answer and "made-by-bash.txt" in patch
        assert (result.exit_code, verdict) == (1, "rejected"), result.output
    else:
        assert "denied" in answer and "made-by-bash.txt" not in patch
        assert (result.exit_code, verdict) == (0, "keep"), result.output


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(str(b.get("text", "")) for b in system)


def test_claude_code_runs_a_multi_line_check_through_its_script(tmp_path: Path) -> None:
    """A check of two lines matches no one-line Bash rule; Claude Code is told the script in the run folder
    that holds it (`sh <script>`), may run that, and sees the check pass after its fix."""
    claude = cli_or_skip("claude")
    repo = calc_repo(tmp_path)
    ran: list[dict[str, Any]] = []

    def run_the_script(body: dict[str, Any]) -> Reply:
        found = re.search(r"run exactly: (sh \S+)", _system_text(body))
        assert found, "Claude Code was not told how to run the check"
        ran.append(tool_use("Bash", command=found[1], description="Run the check"))
        return turn(ran[-1])

    script = [turn(tool_use("Read", file_path="calc.py")),
              turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a + b")),
              run_the_script, turn(text("Fixed add()."))]
    with LoopbackAPI(script, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        env = without_keys({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback",
                            "SEEN_LOG": str(tmp_path / "keys.log")})
        result = run_calc_goal(tmp_path, {"kind": "claude-code", "program": claude, "model": CLAUDE_MODEL}, env,
                               check={"run": f"test -f calc.py\n{check_command()}\n"}, budget={"iterations": 1})
        assert result.exit_code == 0, result.output
        answer = str(api.tool_result(ran[0])["content"])
    assert "all passed" in answer and "denied" not in answer, answer
    run_dir = only_run_dir(tmp_path / "home")
    assert ran[0]["input"]["command"].endswith(str(run_dir / "agents" / "claude-code" / "check.sh"))
    assert_only_the_fix(repo, run_dir)


# -- Codex ------------------------------------------------------------------------------------------------
CODEX_MODEL = "gpt-5.5"
"""A model Codex 0.171 has metadata for: it is offered the apply_patch tool."""
PATCH = ("*** Begin Patch\n*** Update File: calc.py\n@@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
         "*** End Patch\n")


def test_codex_fixes_the_failing_test_in_its_own_sandbox(tmp_path: Path) -> None:
    """kind: codex reads a 200 KiB prompt from stdin, applies a patch, runs the check with exec_command in its
    workspace-write sandbox, and its fix is kept (exit 0); CODEX_HOME is in the run folder, OPENAI_API_KEY
    reached it as CODEX_API_KEY, its tokens are counted and its cost is "not tracked" (Codex reports none)."""
    codex = cli_or_skip("codex")
    repo = calc_repo(tmp_path)
    context = add_large_context(repo)
    script = [OpenAIReply(calls=[Call("apply_patch", PATCH, custom=True)]),
              OpenAIReply(calls=[Call("exec_command", {"cmd": check_command()})]),
              OpenAIReply("Fixed add(): it subtracted instead of adding.")]
    key_log = tmp_path / "keys.log"
    with LoopbackOpenAI(script) as api:
        env = without_keys({"OPENAI_API_KEY": "sk-loopback", "SEEN_LOG": str(key_log)})
        result = run_calc_goal(tmp_path, {"kind": "codex", "program": codex, "model": CODEX_MODEL,
                                          "base_url": f"{api.url}/v1"}, env, context=context)
        assert result.exit_code == 0, result.output
        ran = [item for item in api.requests[2]["input"] if item.get("type") == "function_call_output"]
        assert "all passed" in ran[-1]["output"]
        users = [item for item in api.requests[0]["input"] if item.get("role") == "user"]
        sent = "\n".join(part.get("text", "") for item in users for part in item["content"])
    run_dir = only_run_dir(tmp_path / "home")
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep"]
    assert results_rows(run_dir)[1]["description"] == "Fixed add(): it subtracted instead of adding."
    assert_only_the_fix(repo, run_dir)
    assert_prompt_whole(run_dir, sent)
    assert (run_dir / "agents" / "codex" / "sessions").is_dir()
    assert_no_key_in_the_check(key_log)
    turns = [e["usage"] for e in stdout_json_lines(run_dir / "attempts" / "0001" / "proposer.stdout.log")
             if e.get("type") == "turn.completed"]
    attempt = attempt_events(run_dir)[1]
    assert attempt["tokens"] == sum(u["input_tokens"] + u["output_tokens"] for u in turns) > 0
    assert attempt["cost_usd"] is None and "not tracked" in result.output


# -- Aider ------------------------------------------------------------------------------------------------
AIDER_EDIT = ("calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n"
              ">>>>>>> REPLACE\n```\n")


def test_aider_fixes_the_failing_test_without_touching_gitignore_or_leaving_aider_files(tmp_path: Path) -> None:
    """kind: aider reads a 200 KiB prompt from --message-file, applies its SEARCH/REPLACE edit without
    committing, and the fix is kept (exit 0): no .gitignore edit, no .aider* file in the worktree (even
    with editable: calc.py), its history files in the attempt folder, its reported cost and tokens counted."""
    aider = cli_or_skip("aider")
    repo = calc_repo(tmp_path)
    context = add_large_context(repo)
    key_log = tmp_path / "keys.log"
    with LoopbackOpenAI([OpenAIReply("add() subtracted; it should add.\n\n" + AIDER_EDIT)]) as api:
        env = without_keys({"OPENAI_API_KEY": "sk-loopback", "SEEN_LOG": str(key_log)})
        result = run_calc_goal(tmp_path, {"kind": "aider", "program": aider, "model": "gpt-4o",
                                          "base_url": f"{api.url}/v1"}, env, context=context)
        assert result.exit_code == 0, result.output
        sent = "\n".join(str(m.get("content")) for m in api.requests[0]["messages"] if m["role"] == "user")
    run_dir = only_run_dir(tmp_path / "home")
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep"]
    assert_only_the_fix(repo, run_dir)
    assert_prompt_whole(run_dir, sent)
    attempt_dir = run_dir / "attempts" / "0001"
    assert (attempt_dir / "aider.chat.history.md").is_file() and (attempt_dir / "aider.llm.history").is_file()
    assert_no_key_in_the_check(key_log)
    output = (attempt_dir / "proposer.stdout.log").read_text()
    cost_line = next(line for line in output.splitlines() if line.startswith("Tokens:"))
    session = float(cost_line.split("$")[-1].split()[0])
    attempt = attempt_events(run_dir)[1]
    assert attempt["cost_usd"] == session > 0 and attempt["tokens"] > 2000


# -- found before anything runs ---------------------------------------------------------------------------
KINDS = {"claude-code": "ANTHROPIC_API_KEY", "codex": "CODEX_API_KEY", "aider": "OPENAI_API_KEY"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_missing_cli_is_exit_2_with_the_fix_before_the_baseline(tmp_path: Path, kind: str) -> None:
    calc_repo(tmp_path)
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **_goal(kind, program=str(tmp_path / "nowhere" / kind))})
    env = without_keys({KINDS[kind]: "sk-test", "SEEN_LOG": str(tmp_path / "keys.log")})
    for command in (["validate", str(goal_path)], ["run", str(goal_path), "--home", str(tmp_path / "home")]):
        result = goalloop(*command, cwd=tmp_path, env=env)
        assert result.exit_code == 2, result.output
        assert "is not an executable file" in result.output and "fix: install it" in result.output
    assert not (tmp_path / "keys.log").exists() and not (tmp_path / "home" / "runs").exists()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_missing_key_is_exit_2_with_the_fix_before_the_baseline(tmp_path: Path, kind: str) -> None:
    calc_repo(tmp_path)
    stand_in = tmp_path / "bin" / kind
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **_goal(kind, program=str(stand_in))})
    env = without_keys({"SEEN_LOG": str(tmp_path / "keys.log")})
    for command in (["validate", str(goal_path)], ["run", str(goal_path), "--home", str(tmp_path / "home")]):
        result = goalloop(*command, cwd=tmp_path, env=env)
        assert result.exit_code == 2, result.output
        assert f"{kind} needs an API key" in result.output and f"export {KINDS[kind]}=" in result.output
    assert not (tmp_path / "keys.log").exists() and not (tmp_path / "home" / "runs").exists()
    ok = goalloop("validate", str(goal_path), cwd=tmp_path, env={**env, KINDS[kind]: "sk-test"})
    assert ok.exit_code == 0, ok.output


def _goal(kind: str, **proposer: Any) -> dict[str, Any]:
    return calc_goal({"kind": kind, **proposer})


def _stand_in(tmp_path: Path, kind: str) -> Path:
    """An executable named like the CLI that notes each call (these tests are about what runs before it)."""
    stand_in = tmp_path / "bin" / kind
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text(f"#!/bin/sh\necho called >> {tmp_path / 'calls.log'}\nexit 0\n")
    stand_in.chmod(0o755)
    return stand_in


@pytest.mark.parametrize("kind, proposer, env", [
    ("claude-code", {}, {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_PROFILE": "dev"}),
    ("claude-code", {}, {"CLAUDE_CODE_USE_VERTEX": "1", "ANTHROPIC_VERTEX_PROJECT_ID": "p"}),
    ("claude-code", {"env": {"CLAUDE_CODE_USE_BEDROCK": "true"}}, {}),
    ("aider", {"model": "ollama_chat/qwen2.5-coder"}, {"OLLAMA_API_BASE": "http://127.0.0.1:11434"}),
    ("aider", {"base_url": "http://127.0.0.1:8080/v1", "model": "openai/local"}, {}),
], ids=["bedrock", "vertex", "bedrock-in-goal", "aider-ollama", "aider-base-url"])
def test_a_cli_that_needs_no_key_here_is_not_refused_for_want_of_one(tmp_path: Path, kind: str,
                                                                      proposer: dict[str, Any], env: dict[str, str]) -> None:
    """Claude Code on Bedrock or Vertex authenticates with the cloud's credentials, Aider on a local model
    with none: validate accepts them without an API key; the same goals without the switch are refused."""
    calc_repo(tmp_path)
    program = str(_stand_in(tmp_path, kind))
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **_goal(kind, program=program, **proposer)})
    result = goalloop("validate", str(goal_path), cwd=tmp_path, env=without_keys(env))
    assert result.exit_code == 0, result.output
    plain = write_goal(tmp_path / "plain.yaml", {"repo": "proj", **_goal(kind, program=program)})
    refused = goalloop("validate", str(plain), cwd=tmp_path, env=without_keys())
    assert refused.exit_code == 2 and f"{kind} needs an API key" in refused.output, refused.output


README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("kind, program", [("claude-code", "claude"), ("codex", "codex"), ("aider", "aider")])
def test_the_readme_shows_the_options_each_cli_is_really_given(tmp_path: Path, kind: str, program: str) -> None:
    """The command line in the README's bullet for each kind names exactly the options goalloop passes."""
    calc_repo(tmp_path)
    stand_in = tmp_path / "bin" / program
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'args.txt'}\nexit 1\n")
    stand_in.chmod(0o755)
    key = {**{k: "sk-test" for k in KINDS.values()}, "SEEN_LOG": str(tmp_path / "keys.log")}
    run_calc_goal(tmp_path, {"kind": kind, "program": str(stand_in)}, without_keys(key), budget={"iterations": 1})
    given = {a for a in (tmp_path / "args.txt").read_text().splitlines() if re.fullmatch(r"--[a-zA-Z-]+", a)}
    bullet = re.search(rf"^- `{kind}` runs `(.*?)`", README.read_text(encoding="utf-8"), re.M | re.S)
    assert bullet, f"README has no bullet saying what {kind} runs"
    shown = set(re.findall(r"--[a-zA-Z][a-zA-Z-]+", bullet[1]))
    assert shown == given, f"README shows {sorted(shown - given)} not given; omits {sorted(given - shown)}"


def test_a_dollar_budget_left_below_the_caps_precision_is_spent_not_a_zero_cap(tmp_path: Path) -> None:
    """budget.usd 0.00004: --max-budget-usd would read 0.0000; the budget counts as spent (exit 1) and
    Claude Code is never started with a cap of nothing."""
    calc_repo(tmp_path)
    program = str(_stand_in(tmp_path, "claude"))
    result = run_calc_goal(tmp_path, {"kind": "claude-code", "program": program},
                           without_keys({"ANTHROPIC_API_KEY": "sk-test", "SEEN_LOG": str(tmp_path / "keys.log")}),
                           budget={"iterations": 3, "usd": 0.00004})
    assert result.exit_code == 1, result.output
    assert "dollar budget spent" in result.output
    assert not (tmp_path / "calls.log").exists(), "Claude Code was started with --max-budget-usd 0.0000"


def test_validate_warns_that_codex_cannot_be_held_to_a_dollar_budget(tmp_path: Path) -> None:
    """Codex reports tokens, not dollars: budget.usd is named as unenforceable, budget.tokens is not."""
    calc_repo(tmp_path)
    stand_in = tmp_path / "bin" / "codex"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    goal = _goal("codex", program=str(stand_in))
    goal["budget"] = {"iterations": 3, "usd": 2, "tokens": 100000}
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **goal})
    result = goalloop("validate", str(goal_path), cwd=tmp_path, env=without_keys({"CODEX_API_KEY": "sk-test"}))
    assert result.exit_code == 0, result.output
    assert "budget.usd cannot be enforced: codex reports tokens of its spend" in result.output
    assert "budget.tokens cannot be enforced" not in result.output


# -- under the sandbox --------------------------------------------------------------------------------------
# Each CLI is driven to read the holdout's answers and ~/.netrc, then to make the fix. With `sandbox: true`
# it still reaches its model server (loopback), keeps its state in the run folder and its fix is kept, but
# neither secret reaches the model; with the sandbox off the same script sends both (Aider: the holdout),
# so each test can fail. The holdout check itself still reads its files, sandboxed or not.
def assert_guarded_run(place: Path, result: Any, sent: list[dict[str, Any]], sandbox: bool, secrets: list[str]) -> Path:
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(place / "home")
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep"], result.output
    assert_only_the_fix(place / "proj", run_dir)
    assert attempt_events(run_dir)[0]["holdout"] == 1.0, "the holdout check reads its own files"
    received = json.dumps(sent)
    for secret in secrets:
        assert (secret in received) is not sandbox, f"{secret} {'reached' if sandbox else 'did not reach'} the model"
    return run_dir


@needs_bwrap
@SANDBOX
def test_claude_code_under_the_sandbox_cannot_read_the_holdout_or_home(place: Path, sandbox: bool) -> None:
    """Claude Code's own Read tool (allowed in the worktree, and on ~/.netrc by `allow:`) is what reads."""
    claude = cli_or_skip("claude")
    peeks = [tool_use("Read", file_path="holdout/answers.txt"), tool_use("Read", file_path=str(place / "user" / ".netrc"))]
    run_check = tool_use("Bash", command=check_command(), description="Run the failing test")
    script = [turn(peeks[0]), turn(peeks[1]), turn(tool_use("Read", file_path="calc.py")),
              turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a + b")),
              turn(run_check), turn(text("Fixed add()."))]
    with LoopbackAPI(script, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        env = without_keys({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback",
                            "SEEN_LOG": str(place / "keys.log")})
        result = run_guarded_calc_goal(place, {"kind": "claude-code", "program": claude, "model": CLAUDE_MODEL,
                                               "allow": ["Read(~/.netrc)"]}, env, sandbox)
        assert "all passed" in str(api.tool_result(run_check)["content"]), "its Bash tool ran the check"
        sent = api.requests
    run_dir = assert_guarded_run(place, result, sent, sandbox, [HOLDOUT_SECRET, NETRC_SECRET])
    assert list((run_dir / "agents" / "claude-code" / "projects").rglob("*.jsonl")), "its state was written"


@needs_bwrap
@SANDBOX
def test_codex_under_the_sandbox_cannot_read_the_holdout_or_home_and_keeps_its_own_sandbox(
        place: Path, sandbox: bool) -> None:
    """Codex runs `cat` through exec_command in its own bubblewrap sandbox, nested in goalloop's."""
    if sandbox and NESTED_BWRAP_REFUSED:
        pytest.skip(f"this kernel runs bubblewrap but not one nested in another, as Codex's sandbox inside "
                    f"goalloop's needs: {NESTED_BWRAP_REFUSED}")
    codex = cli_or_skip("codex")
    script = [OpenAIReply(calls=[Call("exec_command", {"cmd": "cat holdout/answers.txt; cat ~/.netrc"})]),
              OpenAIReply(calls=[Call("apply_patch", PATCH, custom=True)]),
              OpenAIReply(calls=[Call("exec_command", {"cmd": check_command()})]),
              OpenAIReply("Fixed add(): it subtracted instead of adding.")]
    with LoopbackOpenAI(script) as api:
        env = without_keys({"OPENAI_API_KEY": "sk-loopback", "SEEN_LOG": str(place / "keys.log")})
        result = run_guarded_calc_goal(place, {"kind": "codex", "program": codex, "model": CODEX_MODEL,
                                               "base_url": f"{api.url}/v1"}, env, sandbox)
        outputs = [item["output"] for item in api.requests[-1]["input"] if item.get("type") == "function_call_output"]
        sent = api.requests
    assert "all passed" in outputs[-1], outputs
    run_dir = assert_guarded_run(place, result, sent, sandbox, [HOLDOUT_SECRET, NETRC_SECRET])
    assert (run_dir / "agents" / "codex" / "sessions").is_dir()


@needs_bwrap
@SANDBOX
def test_aider_under_the_sandbox_cannot_read_the_holdout(place: Path, sandbox: bool) -> None:
    """The model names holdout/answers.txt beside its edit: unsandboxed, Aider (--yes-always) adds the named
    files to the chat, sends their text and asks again (the edit is made on the second answer); sandboxed
    it runs with --no-git (the git data is out of reach), makes the edit at once and reads nothing more."""
    aider = cli_or_skip("aider")
    script = [OpenAIReply("add() subtracted; holdout/answers.txt may say more.\n\n" + AIDER_EDIT),
              OpenAIReply("add() subtracted.\n\n" + AIDER_EDIT)]
    with LoopbackOpenAI(script) as api:
        env = without_keys({"OPENAI_API_KEY": "sk-loopback", "SEEN_LOG": str(place / "keys.log")})
        result = run_guarded_calc_goal(place, {"kind": "aider", "program": aider, "model": "gpt-4o",
                                               "base_url": f"{api.url}/v1"}, env, sandbox)
        sent = api.requests
    run_dir = assert_guarded_run(place, result, sent, sandbox, [HOLDOUT_SECRET])
    assert (run_dir / "attempts" / "0001" / "aider.chat.history.md").read_text().strip(), "its history was written"


@needs_bwrap
def test_a_cli_installed_under_the_hidden_home_still_runs_and_the_rest_of_home_stays_hidden(place: Path) -> None:
    """`program:` in ~/.npm-global/lib/node_modules (not on PATH): sandboxed, $HOME is an empty folder of its
    own, yet the CLI's install is shown read-only, and only it: ~/.netrc beside it stays out of reach. A
    stand-in for Claude Code (a script printing its JSON result) makes the fix."""
    install = place / "user" / ".npm-global" / "lib" / "node_modules" / "@anthropic-ai" / "claude-code"
    install.mkdir(parents=True)
    program = install / "cli.sh"
    program.write_text("#!/bin/sh\ncat ~/.netrc || echo NETRC-HIDDEN\nsed -i 's/a - b/a + b/' calc.py\n"
                       "echo '{\"type\": \"result\", \"result\": \"Fixed add().\", \"total_cost_usd\": 0.01}'\n")
    program.chmod(0o755)
    env = without_keys({"ANTHROPIC_API_KEY": "sk-ant-loopback", "SEEN_LOG": str(place / "keys.log")})
    result = run_guarded_calc_goal(place, {"kind": "claude-code", "program": str(program)}, env, sandbox=True)
    run_dir = assert_guarded_run(place, result, [], True, [])
    said = (run_dir / "attempts" / "0001" / "proposer.stdout.log").read_text()
    assert "NETRC-HIDDEN" in said and NETRC_SECRET not in said, said
    assert results_rows(run_dir)[1]["description"] == "Fixed add()."
