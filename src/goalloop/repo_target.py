"""The repository a goal works on, and the commit its run starts from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import git

from goalloop.goal import Goal


@dataclass(frozen=True)
class RepoTarget:
    """The repository a goal works on and the commit it starts from."""

    root: Path
    base_commit: str


def resolve_repo(goal: Goal) -> RepoTarget:
    """Find the goal's repository and resolve its base, or raise a GoalError naming the line to fix."""
    goal_dir = goal.source.resolve().parent
    if goal.repo is None:
        try:
            repo = git.Repo(goal_dir, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise goal.error(
                (),
                f"{goal_dir} is not inside a git repository, and the goal has no repo: key",
                fix="add `repo: path/to/your/repo` (relative to the goal file), or `git init` that folder",
            ) from None
    else:
        path = (goal_dir / goal.repo).resolve()
        if not path.exists():
            raise goal.error(("repo",), f"{path} does not exist", fix="give the repository's path relative to the goal file")
        try:
            repo = git.Repo(path, search_parent_directories=True)
        except git.InvalidGitRepositoryError:
            raise goal.error(
                ("repo",), f"{path} is not a git repository", fix=f"run `git init` in {path}, or point repo: at one"
            ) from None
        top = repo.working_tree_dir
        if top is not None and Path(top).resolve() != path:  # a file or folder inside some other repository
            raise goal.error(
                ("repo",),
                f"{path} is not a git repository: it is a {'file' if path.is_file() else 'folder'} inside {top}",
                fix=f"point repo: at the top of the repository ({top})"
                + ("" if path.is_file() else f", or run `git init` in {path} if it is a project of its own"),
            )
    if repo.bare or repo.working_tree_dir is None:
        raise goal.error(("repo",), f"{repo.git_dir} is a bare repository", fix="point repo: at a checkout")
    try:
        base = repo.git.rev_parse("--verify", "--quiet", f"{goal.base}^{{commit}}")
    except git.GitCommandError:

        if not repo.head.is_valid():
            raise goal.error(("base",), f"{repo.working_tree_dir} has no commits yet", fix="commit the project first "
                             "(git add -A && git commit -m start); goalloop starts from a commit") from None
        close = difflib.get_close_matches(goal.base, [ref.name for ref in repo.refs], n=1, cutoff=0.6)
        raise goal.error(
            ("base",),
            f"'{goal.base}' is not a branch, tag or commit in {repo.working_tree_dir}",
            fix=(f"did you mean '{close[0]}'? " if close else "")
            + "use a branch, tag or commit that exists (see `git branch` and `git log --oneline`)",
        ) from None
    return RepoTarget(root=Path(repo.working_tree_dir), base_commit=base)
