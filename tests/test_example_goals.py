"""The goal files in goals/ and their projects in examples/: each loads, the runnable ones validate, and the
README's first command (`goalloop run goals/example.yaml`) meets its target offline.

They run in a fresh git repository holding a copy of goals/ and examples/ from this working tree, the way
they sit in a clone of goalloop. goals/autoresearch.yaml points at a clone of karpathy/autoresearch that
is not here, so it is validated against a stand-in clone with autoresearch's files; goals/fix-tests.yaml
needs an agent, so it is validated (with the real Claude Code CLI that `.ci/run` installs on PATH), not run.
The README's agent-CLI proposer blocks validate the same way, each in a goal of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from agent_clis import cli_or_skip
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal
from goalloop.goal import load_goal

SOURCE = Path(__file__).resolve().parent.parent
GOAL_FILES = sorted(p.name for p in (SOURCE / "goals").glob("*.yaml"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("goalloop-clone")
    for folder in ("goals", "examples"):
        shutil.copytree(SOURCE / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "goals and examples")
    return repo


def test_the_three_documented_goals_exist() -> None:
    assert {"example.yaml", "fix-tests.yaml", "autoresearch.yaml"} <= set(GOAL_FILES)


@pytest.mark.parametrize("name", GOAL_FILES)
def test_every_goal_file_loads_and_names_the_schema(clone: Path, name: str) -> None:
    path = clone / "goals" / name
    assert path.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=./goal.schema.json\n")
    load_goal(path)


def _agent_env(goal_path: Path) -> dict[str, str]:
    """The environment a user of this goal has: its agent CLI on PATH and a key (skipped when not installed)."""
    kind = yaml.safe_load(goal_path.read_text(encoding="utf-8"))["proposer"]["kind"]
    if kind != "claude-code":
        return {"ANTHROPIC_API_KEY": "sk-ant-test"} if kind == "claude" else {}
    claude = cli_or_skip("claude")
    return {"PATH": f"{Path(claude).parent}{os.pathsep}{os.environ['PATH']}", "ANTHROPIC_API_KEY": "sk-ant-test"}


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip().startswith("warning")]


@pytest.fixture(scope="module")
def autoresearch_clone(clone: Path) -> Path:
    """A stand-in for the karpathy/autoresearch clone beside the goalloop clone, with the files the goal names."""
    return make_repo(clone.parent / "autoresearch", {
        "train.py": "print('val_bpb: 1.0')\n", "prepare.py": "TIME_BUDGET = 300\n",
        "pyproject.toml": '[project]\nname = "autoresearch"\nversion = "0.1"\n', "uv.lock": "version = 1\n"})


@pytest.mark.parametrize("name", GOAL_FILES)
def test_every_goal_file_validates_cleanly(clone: Path, autoresearch_clone: Path, name: str) -> None:
    """No error and no warning: what a user sees on `goalloop validate` with the goal's agent installed."""
    if name == "autoresearch.yaml":
        git(autoresearch_clone, "branch", "-f", "master")
    result = run_cli("validate", f"goals/{name}", cwd=clone, env=_agent_env(clone / "goals" / name))
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.stdout)
    if name == "autoresearch.yaml" and shutil.which("uv") is None:  # the check's runner, absent here
        warnings = [w for w in warnings if "`uv` is not on PATH" not in w]
    # every metric goal measured once is warned about, by design (example.yaml's check is deterministic;
    # autoresearch keeps its one 5-minute training run an attempt, as autoresearch itself does)
    warnings = [w for w in warnings if "keep.repeats is 1" not in w]
    assert warnings == [], result.output


def _readme_proposer_blocks() -> list[str]:
    """The README's indented YAML blocks that set an agent CLI kind, as the proposer block alone."""
    text = (SOURCE / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^    proposer:\n(?:^      .*\n)+", text, re.M)
    return [b for b in blocks if re.search(r"kind: (claude-code|codex|aider)\b", b)]


def test_the_readme_has_agent_cli_proposer_blocks() -> None:
    assert len(_readme_proposer_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_readme_proposer_blocks())))
def test_the_readmes_agent_cli_proposer_blocks_validate(tmp_path: Path, index: int) -> None:
    block = yaml.safe_load(textwrap.dedent(_readme_proposer_blocks()[index]))["proposer"]
    repo = make_repo(tmp_path / "proj", {"check.py": "print('ok')\n"})
    goal = write_goal(tmp_path / "goal.yaml", {"repo": "proj", "check": {"run": f"{sys.executable} check.py"},
                                              "proposer": block})
    result = run_cli("validate", str(goal), cwd=tmp_path, env=_agent_env(goal))
    assert result.exit_code == 0 and _warnings(result.stdout) == [], result.output
    assert repo.exists()


def test_the_example_goal_meets_its_target(clone: Path, tmp_path: Path) -> None:
    goal = load_goal(clone / "goals" / "example.yaml")
    result = run_cli("run", "goals/example.yaml", "--home", str(tmp_path / "home"), cwd=clone, timeout=60)
    assert result.exit_code == 0, result.output
    assert "target met" in result.stdout
    rows = results_rows(only_run_dir(tmp_path / "home"))
    assert rows[0]["verdict"] == "baseline" and float(rows[0]["metric"]) > goal.target.value
    assert rows[-1]["verdict"] == "keep" and float(rows[-1]["metric"]) <= goal.target.value
    assert len(rows) - 1 <= goal.budget.iterations
    assert git(clone, "status", "--porcelain") == "", "the run touched the checkout"


def test_the_fix_tests_example_starts_with_three_failing_tests(clone: Path) -> None:
    tests = clone / "examples" / "textutils" / "tests"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        cwd=clone, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 failed, 4 passed" in proc.stdout
