"""The repository a goal works on, and the commit its run starts from.

Found with `git rev-parse` (a few milliseconds), so `validate` need not load GitPython."""

from __future__ import annotations

import difflib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from goalloop.git_runner import git_environment
from goalloop.goal import Goal


@dataclass(frozen=True)
class RepoTarget:
    """The repository a goal works on and the commit it starts from."""

    root: Path
    base_commit: str
    common_dir: Path | None = None
    """The repository's git directory (the one its linked worktrees share), when discovery found it."""


@dataclass(frozen=True)
class _Found:
    """The repository holding a folder, as git discovers it from there."""

    git_dir: str
    top: str | None
    """Its work tree's top folder; None for a bare repository (or from inside a git directory)."""
    bare: bool
    common_dir: str | None = None
    base_commit: str | None = None
    """The goal's base, when it names a commit there."""


def resolve_repo(goal: Goal) -> RepoTarget:
    """Find the goal's repository and resolve its base, or raise a GoalError naming the line to fix."""
    goal_dir = goal.source.resolve().parent
    if goal.repo is None:
        found = _discover(goal, goal_dir, ())
        if found is None:
            raise goal.error(
                (),
                f"{goal_dir} is not inside a git repository, and the goal has no repo: key",
                fix="add `repo: path/to/your/repo` (relative to the goal file), or `git init` that folder",
            )
    else:
        path = (goal_dir / goal.repo).resolve()
        if not path.exists():
            raise goal.error(("repo",), f"{path} does not exist", fix="give the repository's path relative to the goal file")
        found = _discover(goal, path if path.is_dir() else path.parent, ("repo",))
        if found is None:
            raise goal.error(
                ("repo",), f"{path} is not a git repository", fix=f"run `git init` in {path}, or point repo: at one"
            )
        if found.top is not None and Path(found.top).resolve() != path:  # a file or folder inside another repository
            raise goal.error(
                ("repo",),
                f"{path} is not a git repository: it is a {'file' if path.is_file() else 'folder'} inside {found.top}",
                fix=f"point repo: at the top of the repository ({found.top})"
                + ("" if path.is_file() else f", or run `git init` in {path} if it is a project of its own"),
            )
    if found.top is None:
        what = "is a bare repository" if found.bare else "is a git directory, not a checkout"
        raise goal.error(("repo",), f"{found.git_dir} {what}", fix="point repo: at a checkout")
    top = Path(found.top)
    if found.base_commit is not None:
        return RepoTarget(root=top, base_commit=found.base_commit,
                          common_dir=Path(found.common_dir).resolve() if found.common_dir else None)
    if _git(top, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        raise goal.error(("base",), f"{top} has no commits yet", fix="commit the project first "
                         "(git add -A && git commit -m start); goalloop starts from a commit")
    refs = _git(top, "for-each-ref", "--format=%(refname)").stdout.splitlines()
    names = ["/".join(ref.split("/")[2:]) or ref for ref in refs]  # refs/heads/main -> main, refs/tags/v1 -> v1
    close = difflib.get_close_matches(goal.base, names, n=1, cutoff=0.6)
    raise goal.error(
        ("base",),
        f"'{goal.base}' is not a branch, tag or commit in {top}",
        fix=(f"did you mean '{close[0]}'? " if close else "")
        + "use a branch, tag or commit that exists (see `git branch` and `git log --oneline`)",
    )


def _discover(goal: Goal, start: Path, key: tuple[str, ...]) -> _Found | None:
    """The repository holding `start`, or None when there is none; a GoalError when git cannot tell. One
    git process says it all, the goal's base included: git prints the folders, then the commit (exit 0),
    or nothing more when the base names none (exit 1); the top folder and what follows it are missing
    where there is no work tree (exit 128)."""
    shown = _git(start, "rev-parse", "--absolute-git-dir", "--is-bare-repository", "--show-toplevel",
                 "--path-format=absolute", "--git-common-dir", "--verify", "--quiet", f"{goal.base}^{{commit}}")
    lines = shown.stdout.splitlines()
    if len(lines) >= 2:
        top, common = (lines[2], lines[3]) if shown.returncode in (0, 1) and len(lines) >= 4 else (None, None)
        commit = lines[4] if shown.returncode == 0 and len(lines) >= 5 else None
        return _Found(git_dir=lines[0], top=top, bare=lines[1] == "true", common_dir=common, base_commit=commit)
    if "not a git repository" in shown.stderr:
        return None
    problem = shown.stderr.strip().removeprefix("fatal: ") or f"git rev-parse exited with {shown.returncode}"
    raise goal.error(key, f"git cannot read the repository at {start}: {problem}",
                     fix="fix what git says (`git status` there shows it), then validate again")


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=git_environment(os.environ), capture_output=True, text=True,
                          errors="replace", check=False)
