"""The goal files in goals/ and their projects in examples/: each loads, the runnable ones validate, and the
README's first command (`goalloop run goals/example.yaml`) meets its target offline.

They run in a fresh git repository holding a copy of goals/ and examples/ from this working tree, the way
they sit in a clone of goalloop. goals/autoresearch.yaml points at a clone of karpathy/autoresearch that
is not here, so it is only loaded; goals/fix-tests.yaml needs an agent, so it is only validated.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git, only_run_dir, results_rows, run_cli
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


@pytest.mark.parametrize("name", [n for n in GOAL_FILES if load_goal(SOURCE / "goals" / n).repo is None])
def test_goals_on_this_repository_validate(clone: Path, name: str) -> None:
    result = run_cli("validate", f"goals/{name}", cwd=clone)
    assert result.exit_code == 0, result.output


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
