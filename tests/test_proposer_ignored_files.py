"""What the proposer makes or changes that git ignores never reaches the check: the attempt's commit would not
hold it, so a score it changed could not be reproduced from the commit. That covers new ignored paths, an
ignored file the check made that the proposer rewrote, and a file added inside an ignored folder. Such a file
that cannot be removed stops the run (exit 3, resumable), naming the file, as a `git clean` that fails does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop import ignored_watch
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


# -- ignored files the check made, then the proposer changed -------------------------------------------------
CACHING_CHECK = """\
import os, pathlib
if not os.path.exists("local_settings.py"):
    pathlib.Path("local_settings.py").write_text("X = 1\\n")
pathlib.Path("cache").mkdir(exist_ok=True)
pathlib.Path("cache/base.txt").write_text("made by the check\\n")
import local_settings
extra = pathlib.Path("cache/override.txt")
print("score:", int(extra.read_text()) if extra.exists() else local_settings.X)
"""
CACHING_FILES = {"knob.py": "X = 1\n", ".gitignore": "local_settings.py\ncache/\n*.log\n", "score.py": CACHING_CHECK}


def checked_once(tmp_path: Path) -> tuple[Workspace, str]:
    """A worktree reset after a check that left the ignored files it makes (local_settings.py, cache/)."""
    repo = make_repo(tmp_path / "proj", CACHING_FILES)
    base = git(repo, "rev-parse", "HEAD")
    workspace = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    subprocess.run([sys.executable, "score.py"], cwd=workspace.worktree, check=True, capture_output=True)
    workspace.reset_to(base)
    return workspace, base


def tamper(worktree: Path) -> None:
    """The proposer's edit, plus a rewrite of the check's ignored settings and a file in its ignored folder."""
    (worktree / "knob.py").write_text("# tuned\nX = 1\n")
    (worktree / "local_settings.py").write_text("X = 100\n")
    (worktree / "cache" / "override.txt").write_text("200\n")


def test_an_ignored_file_the_check_made_and_the_proposer_rewrote_is_removed_before_the_check(tmp_path) -> None:
    workspace, base = checked_once(tmp_path)
    tamper(workspace.worktree)
    commit = workspace.commit_attempt(1, base, "attempt 1")
    assert commit.removed_ignored == ["cache/override.txt", "local_settings.py"]
    assert (workspace.worktree / "cache" / "base.txt").exists(), "what the check made and nobody changed stays"
    score = subprocess.run([sys.executable, "score.py"], cwd=workspace.worktree, capture_output=True, text=True)
    assert score.stdout.strip() == "score: 1"


def test_with_the_watch_off_the_rewritten_settings_and_the_planted_file_reach_the_check(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(workspace_module.ignored_watch, "rewritten", lambda worktree, before: [])
    workspace, base = checked_once(tmp_path)
    tamper(workspace.worktree)
    commit = workspace.commit_attempt(1, base, "attempt 1")
    assert commit.removed_ignored == [], "the ignored listing alone sees the same entries as after the reset"
    score = subprocess.run([sys.executable, "score.py"], cwd=workspace.worktree, capture_output=True, text=True)
    assert score.stdout.strip() == "score: 200", "the attack lands"


def test_through_the_cli_a_rewritten_ignored_file_does_not_make_a_keep(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", CACHING_FILES)
    goal = {"repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": 1},
            "proposer": {"kind": "scripted", "steps": [{"description": "tuned", "files": {
                "knob.py": "# tuned\nX = 1\n", "local_settings.py": "X = 100\n"}}]}}
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal)), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.stdout + result.stderr
    run_dir = only_run_dir(home)
    (baseline, first) = results_rows(run_dir)
    assert first["metric"] == "1" and first["verdict"] != "keep", first
    events = (run_dir / "events.jsonl").read_text(encoding="utf-8")
    assert "removed files git ignores: local_settings.py" in events, "the attempt's row names it"


def test_past_the_watch_limit_only_new_top_level_ignored_paths_are_found(tmp_path, monkeypatch) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"more than\n  {ignored_watch.WATCH_LIMIT:,} files under what git ignores" in readme
    monkeypatch.setattr(ignored_watch, "WATCH_LIMIT", 1)
    workspace, base = checked_once(tmp_path)
    tamper(workspace.worktree)
    (workspace.worktree / "new.log").write_text("new\n")
    commit = workspace.commit_attempt(1, base, "attempt 1")
    assert commit.removed_ignored == ["new.log"]
    monkeypatch.setattr(ignored_watch, "WATCH_LIMIT", 10_000)
    walked = []
    monkeypatch.setattr(ignored_watch, "stamp", lambda *args: walked.append(args))
    workspace.reset_to(base)
    assert walked == [], "for the rest of the run, what is too big to stamp is not walked again"


def test_a_new_folder_inside_an_ignored_one_is_named_once_and_growth_past_the_limit_names_every_entry(
        tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cache" / "old").mkdir(parents=True)
    (tmp_path / "cache" / "old" / "a.bin").write_text("a")
    before = ignored_watch.stamp(tmp_path, {"cache/"})
    assert before is not None
    (tmp_path / "cache" / "new" / "deep").mkdir(parents=True)
    (tmp_path / "cache" / "new" / "deep" / "b.bin").write_text("b")
    assert ignored_watch.rewritten(tmp_path, before) == ["cache/new"]
    monkeypatch.setattr(ignored_watch, "WATCH_LIMIT", 4)
    assert ignored_watch.rewritten(tmp_path, before) == ["cache"], "too many now to tell which part changed"
