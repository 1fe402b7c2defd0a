"""Removing a run that never got going: one whose goal proved unusable before the first attempt (exit 2),
or one left behind by a process that died before it recorded a baseline.

Such a run holds nothing of value: no attempt was made, its branch still points at base and no ref
points at an attempt. It is removed whole: worktrees, branch, refs and the run folder. A run that
recorded anything at all is never removed here.
"""

from __future__ import annotations

import shutil
from contextlib import suppress
from pathlib import Path

from goalloop.errors import InfrastructureError
from goalloop.git_runner import BRANCH_PREFIX, REF_PREFIX, RepoGit
from goalloop.ledger import RunRecord


def holds_nothing(record: RunRecord) -> bool:
    """Whether the run recorded no attempt and no baseline (so there is nothing in it to lose)."""
    return not record.attempts


def remove_run(repo: Path, worktree_root: Path, run_id: str, run_dir: Path) -> None:
    """Remove the run's worktrees, its branch, its refs and its record folder, through the guarded runner:
    only the run's own branch and refs can be deleted, and no other worktree's metadata is touched (no
    `git worktree prune`, which would also forget a worktree of the user's on a drive not mounted now)."""
    git = RepoGit(repo, run_id)
    root = worktree_root.resolve()
    with suppress(InfrastructureError, OSError):
        for path in _worktrees_under(git, root):
            with suppress(InfrastructureError):
                git.run("worktree", "remove", "--force", str(path))
    shutil.rmtree(worktree_root, ignore_errors=True)
    with suppress(InfrastructureError, OSError):
        for meta in (git.common_dir / "worktrees").glob("*/gitdir"):  # worktrees already gone from disk
            recorded = meta.read_text(encoding="utf-8", errors="replace").strip()
            if (meta.parent / recorded).resolve().is_relative_to(root):  # relative to it, as git reads it
                shutil.rmtree(meta.parent, ignore_errors=True)
    with suppress(InfrastructureError):
        refs = git.run("for-each-ref", "--format=%(refname)", f"{REF_PREFIX}{run_id}/").splitlines()
        for ref in [f"{BRANCH_PREFIX}{run_id}", *refs]:
            with suppress(InfrastructureError):
                git.run("update-ref", "-d", ref)
    shutil.rmtree(run_dir, ignore_errors=True)


def _worktrees_under(git: RepoGit, root: Path) -> list[Path]:
    listing = git.run("worktree", "list", "--porcelain")
    paths = [Path(line[9:]).resolve() for line in listing.splitlines() if line.startswith("worktree ")]
    return [path for path in paths if path.is_relative_to(root)]
