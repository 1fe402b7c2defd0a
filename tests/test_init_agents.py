"""`goalloop init` writes a goal that runs as written: its default proposer, Claude Code, driven for real
(the CLI `.ci/run` installs) through `goalloop run` against the loopback Anthropic server, fixes a failing
test, running the init-written check through its Bash tool."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from agent_clis import cli_or_skip, goalloop, without_keys
from conftest import git, make_repo, only_run_dir, results_rows
from loopback_api import LoopbackAPI, Reply, text, tool_use, turn
from test_layouts import make_venv

PROJECT = {
    ".gitignore": ".venv/\ngoals/\n",
    "pyproject.toml": '[project]\nname = "calc"\nversion = "1.0"\n[project.optional-dependencies]\ntest = ["pytest"]\n',
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}


def test_the_goal_init_writes_runs_with_the_real_claude_code(tmp_path: Path) -> None:
    claude = cli_or_skip("claude")
    repo = make_repo(tmp_path / "calc", PROJECT)
    make_venv(repo)
    env = without_keys({"PATH": f"{Path(claude).parent}{os.pathsep}{os.environ['PATH']}"})
    made = goalloop("init", cwd=repo, env=env)
    assert made.exit_code == 0, made.output
    goal_path = repo / "goals" / "calc.yaml"
    goal = yaml.safe_load(goal_path.read_text(encoding="utf-8"))
    assert goal["proposer"]["kind"] == "claude-code"
    run_check = tool_use("Bash", command=goal["check"]["run"], description="Run the tests")
    script = [turn(tool_use("Read", file_path="calc.py")),
              turn(tool_use("Edit", file_path="calc.py", old_string="a - b", new_string="a + b")),
              turn(run_check),
              turn(text("add() subtracted; it adds now."))]
    with LoopbackAPI(script, side=lambda body: None if body.get("tools") else Reply([text("ok")])) as api:
        keyed = {**env, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-loopback"}
        checked = goalloop("validate", str(goal_path), cwd=repo, env=keyed)
        assert checked.exit_code == 0 and "warning" not in checked.stdout, checked.output
        result = goalloop("run", str(goal_path), "--home", str(tmp_path / "home"), cwd=repo, env=keyed)
        assert result.exit_code == 0, result.output
        assert "1 passed" in str(api.tool_result(run_check)["content"]), "Claude Code ran the check itself"
    run_dir = only_run_dir(tmp_path / "home")
    assert [r["verdict"] for r in results_rows(run_dir)] == ["baseline", "keep"]
    assert git(repo, "diff", "--name-only", "HEAD", f"goalloop/{run_dir.name}") == "calc.py"


def test_without_the_cli_init_still_writes_the_goal_and_validate_names_the_install(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "calc", PROJECT)
    env = without_keys({"PATH": "/usr/bin:/bin"})
    made = goalloop("init", cwd=repo, env=env)
    assert made.exit_code == 0, made.output
    checked = goalloop("validate", "goals/calc.yaml", cwd=repo, env=env)
    assert checked.exit_code == 2, checked.output
    assert "claude is not found on PATH" in checked.stderr
    assert "npm install -g @anthropic-ai/claude-code" in checked.stderr
