"""Which paths of the repository a proposer may change, and which it must never see."""

from __future__ import annotations

import shlex
from pathlib import Path

import pathspec

from goalloop.git_runner import RepoGit
from goalloop.goal import Goal
from goalloop.repo_target import RepoTarget


class PathRules:
    """Which paths a proposer may change: the protected set (always forbidden) and the editable allowlist."""

    def __init__(self, protected: list[str], editable: list[str], hidden: list[str] = ()) -> None:  # type: ignore[assignment]
        self.protected_patterns = protected
        self.hidden_patterns = list(hidden)
        self._protected = pathspec.PathSpec.from_lines("gitignore", list(protected) + list(hidden))
        self._editable = pathspec.PathSpec.from_lines("gitignore", editable) if editable else None
        self._hidden = pathspec.PathSpec.from_lines("gitignore", hidden)

    @classmethod
    def for_goal(cls, goal: Goal, target: RepoTarget) -> PathRules:
        """The goal's rules, plus the goal file, its instructions file and the check's own files.

        A file the check command names is protected unless `editable` names it: in autoresearch-style
        goals the check runs the very script the proposer is asked to change.
        """
        protected = list(goal.protected) + list(goal.check.files)
        for implicit in (goal.source, goal.instructions_file and goal.source.parent / goal.instructions_file):
            if implicit:
                rel = _relative_to(Path(implicit).resolve(), target.root)
                if rel is not None:
                    protected.append("/" + rel)
        editable = pathspec.PathSpec.from_lines("gitignore", goal.editable)
        protected += [
            "/" + path for path in check_script_paths(goal.check.run, target) if not editable.match_file(path)
        ]
        hidden: list[str] = []
        if goal.holdout is not None:
            hidden = list(goal.holdout.files) + ["/" + p for p in check_script_paths(goal.holdout.run, target)]
        return cls(protected, list(goal.editable), hidden)

    def violations(self, paths: list[str]) -> list[str]:
        """`path (why)` for every path the proposer was not allowed to change."""
        found = []
        for path in paths:
            if self._protected.match_file(path):
                found.append(f"{path} (protected)")
            elif self._editable is not None and not self._editable.match_file(path):
                found.append(f"{path} (not editable)")
        return found

    def is_protected(self, path: str) -> bool:
        return self._protected.match_file(path)

    def is_hidden(self, path: str) -> bool:
        """The holdout's files: protected, and never to be shown to a proposer."""
        return self._hidden.match_file(path)


def check_script_paths(command: str, target: RepoTarget) -> list[str]:
    """Repo files named in the check command (`python score.py`, `./check.sh`): the check's own script.

    Looked up in the base commit, not the user's checkout, which may have deleted or renamed them.
    """
    candidates = named_paths(command, target.root)
    if not candidates:
        return []
    git = RepoGit(target.root, None, common_dir=target.common_dir)
    listing = git.run("ls-tree", "-r", "--name-only", target.base_commit, "--", *sorted(candidates))
    return sorted(candidates & set(listing.splitlines()))


def named_paths(command: str, root: Path) -> set[str]:
    """The words of a shell command that name a path inside `root` (options and assignments aside),
    relative to it, whether or not the file is there."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    found = set()
    for token in tokens:
        if token.startswith("-") or "=" in token:
            continue
        rel = _relative_to((root / token).resolve(), root)
        if rel:
            found.add(rel)
    return found


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
