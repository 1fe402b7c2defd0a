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


@dataclass(frozen=True)
class _Found:
    """The repository holding a folder, as git discovers it from there."""

    git_dir: str
    top: str | None
    """Its work tree's top folder; None for a bare repository (or from inside a git directory)."""
    bare: bool


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
    base = _git(top, "rev-parse", "--verify", "--quiet", f"{goal.base}^{{commit}}")
    if base.returncode == 0:
        return RepoTarget(root=top, base_commit=base.stdout.strip())
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
    """The repository holding `start`, or None when there is none; a GoalError when git cannot tell."""
    shown = _git(start, "rev-parse", "--absolute-git-dir", "--is-bare-repository", "--show-toplevel")
    lines = shown.stdout.splitlines()
    if len(lines) >= 2:
        top = lines[2] if shown.returncode == 0 and len(lines) > 2 else None
        return _Found(git_dir=lines[0], top=top, bare=lines[1] == "true")
    if "not a git repository" in shown.stderr:
        return None
    problem = shown.stderr.strip().removeprefix("fatal: ") or f"git rev-parse exited with {shown.returncode}"
    raise goal.error(key, f"git cannot read the repository at {start}: {problem}",
                     fix="fix what git says (`git status` there shows it), then validate again")


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=git_environment(os.environ), capture_output=True, text=True,
                          errors="replace", check=False)
