"""Removing a run that never got going: one whose goal proved unusable before the first attempt (exit 2),
or one left behind by a process that died before it recorded a baseline.

Such a run holds nothing of value: no attempt was made, its branch still points at base and no ref
points at an attempt. It is removed whole: worktrees, branch, refs and the run folder. A run that
recorded anything at all is never removed here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from goalloop.ledger import RunRecord

REF_PREFIX = "refs/goalloop/"


def holds_nothing(record: RunRecord) -> bool:
    """Whether the run recorded no attempt and no baseline (so there is nothing in it to lose)."""
    return not record.attempts


def remove_run(repo: Path, worktree_root: Path, run_id: str, run_dir: Path) -> None:
    """Remove the run's worktrees, its branch, its refs and its record folder."""
    _git(repo, "worktree", "remove", "--force", str(worktree_root))
    listing = _git(repo, "worktree", "list", "--porcelain")
    for line in listing.splitlines():
        if line.startswith("worktree ") and Path(line[9:]).resolve().is_relative_to(worktree_root.resolve()):
            _git(repo, "worktree", "remove", "--force", line[9:])
    shutil.rmtree(worktree_root, ignore_errors=True)
    _git(repo, "worktree", "prune")
    _git(repo, "branch", "-D", f"goalloop/{run_id}")
    for ref in _git(repo, "for-each-ref", "--format=%(refname)", f"{REF_PREFIX}{run_id}/").splitlines():
        _git(repo, "update-ref", "-d", ref)
    shutil.rmtree(run_dir, ignore_errors=True)


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout
