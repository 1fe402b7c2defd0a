"""What the proposer makes that git ignores never reaches the check: the attempt's commit would not hold it,
so a score it changed could not be reproduced from the commit. Such a file that cannot be removed stops the
run (exit 3, resumable), naming the file, as a `git clean` that fails does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop import workspace as workspace_module
from goalloop.errors import InfrastructureError
from goalloop.known_change import remove_path
from goalloop.workspace import RepoTarget, Workspace

KNOB = "X = 1\ntry:\n    from local_override import X\nexcept ImportError:\n    pass\n"
FILES = {"knob.py": KNOB, ".gitignore": "local_override.py\n", "score.py": "import knob\nprint('score:', knob.X)\n"}


def immutable(path: Path) -> None:
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {made.stderr.strip() or 'chattr is missing'}")


@pytest.fixture
def unfreeze(tmp_path: Path) -> Iterator[None]:
    """Whatever a test made immutable under tmp_path is made deletable again afterwards."""
    yield
    for path in tmp_path.rglob("local_override.py"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def planted(tmp_path: Path) -> tuple[Workspace, Path, str]:
    """A worktree where the proposer edited the knob and planted an immutable, ignored override."""
    repo = make_repo(tmp_path / "proj", FILES)
    base = git(repo, "rev-parse", "HEAD")
    workspace = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    (workspace.worktree / "knob.py").write_text("# tuned\n" + KNOB)
    override = workspace.worktree / "local_override.py"
    override.write_text("X = 100\n")
    immutable(override)
    return workspace, override, base


def test_an_ignored_file_the_proposer_made_undeletable_stops_the_attempt_before_its_check(tmp_path, unfreeze) -> None:
    workspace, override, base = planted(tmp_path)
    with pytest.raises(InfrastructureError, match="local_override.py") as raised:
        workspace.commit_attempt(1, base, "attempt 1")
    assert "goalloop resume" in (raised.value.fix or "")


def test_with_the_rule_off_the_undeletable_override_is_there_for_the_check_to_read(tmp_path, unfreeze,
                                                                                   monkeypatch) -> None:
    def forgiving(worktree: Path, stray: list[str]) -> None:
        for rel in stray:
            try:
                remove_path(worktree / rel)
            except OSError:
                pass

    monkeypatch.setattr(workspace_module, "remove_stray", forgiving)
    workspace, override, base = planted(tmp_path)
    commit = workspace.commit_attempt(1, base, "attempt 1")
    assert commit.removed_ignored == ["local_override.py"] and override.exists(), "the attack lands"
    score = subprocess.run([sys.executable, "score.py"], cwd=workspace.worktree, capture_output=True, text=True)
    assert score.stdout.strip() == "score: 100"


def test_through_the_cli_the_run_stops_with_exit_3_and_nothing_is_kept(tmp_path: Path, unfreeze) -> None:
    probe = tmp_path / "probe"
    probe.write_text("x")
    immutable(probe)
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    propose = ("import pathlib, subprocess\n"
               "pathlib.Path('knob.py').write_text('# tuned\\n' + pathlib.Path('knob.py').read_text())\n"
               "pathlib.Path('local_override.py').write_text('X = 100\\n')\n"
               "subprocess.run(['chattr', '+i', 'local_override.py'], check=True)\n")
    repo = make_repo(tmp_path / "proj", {**FILES, "propose.py": propose})
    goal = {"repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": 2},
            "proposer": {"kind": "command", "run": f"{sys.executable} propose.py"}}
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal)), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "local_override.py" in result.stderr and "Traceback" not in result.stderr, result.stderr
    run_dir = only_run_dir(home)
    assert [row["verdict"] for row in results_rows(run_dir)] == ["baseline"]
    assert git(repo, "rev-parse", f"goalloop/{run_dir.name}") == git(repo, "rev-parse", "HEAD")
