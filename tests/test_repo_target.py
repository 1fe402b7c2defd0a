"""Which repository and base commit a goal file names, found with `git rev-parse`: every way of pointing at
the wrong place gets its own message at the line to fix, and the right places resolve to the same top folder
and commit git itself reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goalloop.errors import GoalError
from goalloop.goal import load_goal
from goalloop.path_rules import check_script_paths
from goalloop.preflight import goal_warnings
from goalloop.repo_target import resolve_repo

from conftest import git, make_repo

CHECK = "check: {run: 'true'}\nproposer: {kind: command, run: 'true'}\n"


def goal_at(path: Path, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(extra + CHECK, encoding="utf-8")
    return path


def resolve(path: Path):  # noqa: ANN201
    return resolve_repo(load_goal(path))


def message(path: Path) -> str:
    with pytest.raises(GoalError) as caught:
        resolve(path)
    return f"{caught.value.message}\n  fix: {caught.value.fix}"


def test_the_repository_holding_the_goal_file_at_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n"})
    target = resolve(goal_at(repo / "goals" / "g.yaml"))
    assert target.root == repo.resolve()
    assert target.base_commit == git(repo, "rev-parse", "HEAD")
    assert target.common_dir == (repo / ".git").resolve()


def test_a_linked_worktree_is_its_own_top_folder_and_shares_the_repositorys_git_directory(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n", "score.py": "print(1)\n"})
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "linked"))
    goal = goal_at(tmp_path / "linked" / "g.yaml").read_text().replace("run: 'true'}", "run: 'python3 score.py'}", 1)
    (tmp_path / "linked" / "g.yaml").write_text(goal, encoding="utf-8")
    target = resolve(tmp_path / "linked" / "g.yaml")
    assert (target.root, target.common_dir) == ((tmp_path / "linked").resolve(), (repo / ".git").resolve())
    assert check_script_paths("python3 score.py", target) == ["score.py"]


def test_repo_key_and_a_base_tag_through_a_symlink(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n"})
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    (repo / "a.txt").write_text("b\n", encoding="utf-8")
    git(repo, "commit", "-qam", "second")
    os.symlink(repo, tmp_path / "link")
    target = resolve(goal_at(tmp_path / "goals" / "g.yaml", "repo: ../link\nbase: v1\n"))
    assert (target.root, target.base_commit) == (repo.resolve(), first)


def test_not_inside_a_repository(tmp_path: Path) -> None:
    text = message(goal_at(tmp_path / "plain" / "g.yaml"))
    assert "g.yaml" in text and "is not inside a git repository, and the goal has no repo: key" in text
    assert "git init" in text


def test_repo_key_at_a_plain_folder_a_subfolder_and_a_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"src/a.py": "a\n"})
    (tmp_path / "plain").mkdir()
    assert f"{tmp_path / 'plain'} is not a git repository" in message(goal_at(tmp_path / "g1.yaml", "repo: plain\n"))
    inside = message(goal_at(tmp_path / "g2.yaml", "repo: proj/src\n"))
    assert f"it is a folder inside {repo}" in inside and "git init" in inside
    file = message(goal_at(tmp_path / "g3.yaml", "repo: proj/src/a.py\n"))
    assert f"it is a file inside {repo}" in file and "git init" not in file
    assert "does not exist" in message(goal_at(tmp_path / "g4.yaml", "repo: nowhere\n"))


def test_a_bare_repository_and_a_git_directory_are_not_checkouts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n"})
    git(tmp_path, "clone", "-q", "--bare", str(repo), "bare.git")
    assert f"{tmp_path / 'bare.git'} is a bare repository" in message(goal_at(tmp_path / "g1.yaml", "repo: bare.git\n"))
    assert "is a git directory, not a checkout" in message(goal_at(repo / ".git" / "g2.yaml"))


def test_no_commits_yet(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    text = message(goal_at(repo / "g.yaml"))
    assert "base: " in text and "has no commits yet" in text and "git commit" in text


def test_an_unknown_base_suggests_the_branch_or_tag_it_misspells(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n"})
    git(repo, "tag", "release-1.0")
    assert "did you mean 'main'?" in message(goal_at(repo / "g1.yaml", "base: mian\n"))
    assert "did you mean 'release-1.0'?" in message(goal_at(repo / "g2.yaml", "base: relase-1.0\n"))
    text = message(goal_at(repo / "g3.yaml", "base: zzzzzz\n"))
    assert "'zzzzzz' is not a branch, tag or commit" in text and "did you mean" not in text


def test_git_variables_of_the_callers_shell_do_not_redirect_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n"})
    other = make_repo(tmp_path / "other", {"b.txt": "b\n"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    target = resolve(goal_at(repo / "g.yaml"))
    assert target.root == repo.resolve()
    monkeypatch.delenv("GIT_DIR")
    assert target.base_commit == git(repo, "rev-parse", "HEAD")


def test_the_files_validate_warns_about_are_the_goal_repositorys_whatever_git_dir_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started from a git hook, GIT_DIR names the hook's repository: the files a protected pattern is
    matched against must still be the goal repository's, not none at all."""
    repo = make_repo(tmp_path / "proj", {"a.txt": "a\n", "b.txt": "b\n"})
    other = make_repo(tmp_path / "other", {"c.txt": "c\n"})
    goal = load_goal(goal_at(repo / "g.yaml", "protected: [b.txt]\n"))
    target = resolve_repo(goal)
    assert not [w for w in goal_warnings(goal, target, {}) if "matches no file" in w]
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert not [w for w in goal_warnings(goal, target, {}) if "matches no file" in w]
