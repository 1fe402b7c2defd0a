"""A run's worktrees: where they are, creating and repairing them, and the locks git left in them.

The user's checkout is never touched. A run adds only:
  - the branch `goalloop/<run-id>`, which moves only when an attempt is kept;
  - refs `refs/goalloop/<run-id>/<n>`, one per attempt, so every attempt stays reachable;
  - a worktree (detached HEAD) under `workspaces/`, and git's metadata for it; with `parallel: N`, one
    worktree a slot (`workspaces/<run-id>/0` .. `N-1`), all sharing the branch and the refs.

Every git command goes through the guarded runners of git_runner.py: named repository and work tree,
the worktree checked to be the run's before each command, refs limited to the run's own.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Self

from goalloop.errors import InfrastructureError
from goalloop.git_runner import GitFailed, RepoGit, WorktreeGit, WorktreeMissing
from goalloop.processes import git_processes_near
from goalloop.repo_target import RepoTarget

BRANCH_PREFIX = "goalloop/"
REF_PREFIX = "refs/goalloop/"
COMMIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "goalloop",
    "GIT_AUTHOR_EMAIL": "goalloop@localhost",
    "GIT_COMMITTER_NAME": "goalloop",
    "GIT_COMMITTER_EMAIL": "goalloop@localhost",
}
# Caches a check leaves behind; never part of an attempt (added to the user's own ignore rules).
DEFAULT_EXCLUDES = [
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".hypothesis/",
    ".ipynb_checkpoints/",
]


OWN_GIT_SETTINGS = {"core.untrackedCache": "false", "core.fsmonitor": "false", "core.ignoreStat": "false"}
"""What goalloop's own git never trusts, whatever the user's configuration says, to see every change a
proposer or a check made: a cache of untracked folders or a file watcher that could be stale, and
`core.ignoreStat`, with which git marks every file it writes as unchanged for good."""


class RunWorktree:
    """One of a run's worktrees on a detached HEAD, and the branch and refs that record the run."""

    def __init__(self, repo_root: Path, worktree: Path, run_id: str, exclude_file: Path) -> None:
        self.repo_root = repo_root
        self.worktree = worktree
        self.run_id = run_id
        self.branch = BRANCH_PREFIX + run_id
        self._exclude_file = exclude_file
        env = {**COMMIT_IDENTITY, **self.tool_env(OWN_GIT_SETTINGS)}
        self._repo = RepoGit(repo_root, run_id, env)
        self._git = WorktreeGit(self._repo, worktree, env)

    @property
    def common_dir(self) -> Path:
        """The repository's git directory, which every worktree of it shares (objects, refs)."""
        return self._repo.common_dir

    def tool_env(self, more: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for anything run in the worktree (checks, proposers, their git commands): goalloop's
        ignore rules, so an agent's own `git add -A` leaves caches out too, and no Python bytecode, which
        could otherwise be judged instead of a same-size edit made within the same second. `more`: further
        git settings (goalloop's own git adds OWN_GIT_SETTINGS)."""
        settings = {
            "core.excludesFile": str(self._exclude_file),
            "feature.manyFiles": "true",  # index v4 and the untracked cache: quicker on large trees
            **(more or {}),
        }
        env = {"GIT_CONFIG_COUNT": str(len(settings)), "PYTHONDONTWRITEBYTECODE": "1"}
        for n, (key, value) in enumerate(settings.items()):
            env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = key, value
        return env

    def attempt_ref(self, iteration: int) -> str:
        return f"{REF_PREFIX}{self.run_id}/{iteration}"

    # -- creation -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, target: RepoTarget, worktree: Path, run_id: str, exclude_file: Path) -> Self:
        """Create the run's branch at base and a detached worktree on it."""
        _write_excludes(exclude_file, target.root)
        space = cls(target.root, worktree, run_id, exclude_file)
        worktree.parent.mkdir(parents=True, exist_ok=True)
        space._repo.run("branch", space.branch, target.base_commit)
        space._repo.run("worktree", "add", "--detach", "--quiet", str(worktree), target.base_commit)
        return space

    @classmethod
    def create_pool(cls, target: RepoTarget, root: Path, run_id: str, exclude_file: Path, parallel: int) -> list[Self]:
        """The run's branch and one detached worktree a slot (see `slot_worktrees`), all at base."""
        paths = slot_worktrees(root, parallel)
        pool = [cls.create(target, paths[0], run_id, exclude_file)]
        for path in paths[1:]:
            space = cls(target.root, path, run_id, exclude_file)
            space._repo.run("worktree", "add", "--detach", "--quiet", str(path), target.base_commit)
            pool.append(space)
        return pool

    def reopen(self, base_commit: str) -> list[str]:
        """Make sure the branch and the worktree exist (a run killed while starting, a deleted worktree).

        A missing worktree is recreated at the branch head (the last kept commit); what was left at its path
        is moved aside, never deleted. Returns what was repaired, for the log.
        """
        repaired = []
        if not self.ref_exists(f"refs/heads/{self.branch}"):
            self._repo.run("branch", self.branch, base_commit)
            repaired.append(f"created the missing branch {self.branch} at {base_commit[:12]}")
        try:
            self._git.gitdir()
        except WorktreeMissing as exc:
            repaired += self._recreate_worktree(exc.message.split(";")[0])
        return repaired

    def _recreate_worktree(self, why: str) -> list[str]:
        notes = [why]
        for meta in self._own_worktree_metadata():
            shutil.rmtree(meta, ignore_errors=True)
        if self.worktree.exists() or self.worktree.is_symlink():
            aside = self.worktree.with_name(f"{self.worktree.name}.remnant-{time.strftime('%Y%m%d-%H%M%S')}")
            self.worktree.rename(aside)
            notes.append(f"moved what was left at {self.worktree} to {aside}")
        self.worktree.parent.mkdir(parents=True, exist_ok=True)
        head = self.branch_head()
        self._repo.run("worktree", "add", "--detach", "--quiet", str(self.worktree), head)
        notes.append(f"recreated the worktree {self.worktree} at the last kept commit {head[:12]}")
        return notes

    def _own_worktree_metadata(self) -> list[Path]:
        """git's metadata folders (`.git/worktrees/<name>`) that record this worktree's path, and only those."""
        found = []
        dotgit = (self.worktree / ".git").resolve()
        for meta in sorted((self._repo.common_dir / "worktrees").glob("*/gitdir")):
            try:
                recorded = meta.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                continue
            if (meta.parent / recorded).resolve() == dotgit:
                found.append(meta.parent)
        return found

    def stale_locks(self) -> list[Path]:
        """Lock files in the run's own git metadata and refs (a git killed mid-write leaves them): the
        worktree's index.lock and HEAD.lock, the run's branch and attempt refs. Never a lock of the user's."""
        candidates = [meta / name for meta in self._own_worktree_metadata() for name in ("index.lock", "HEAD.lock")]
        refs = self._repo.common_dir / "refs"
        candidates.append(refs / "heads" / f"{self.branch}.lock")
        candidates += sorted((refs / "goalloop" / self.run_id).rglob("*.lock"))
        return [path for path in candidates if path.is_file()]

    def remove_stale_locks(self, wait: float = 2.0) -> list[Path]:
        """Remove the run's stale lock files (see `stale_locks`) once no live git process is working in the
        repository or the worktree; raise InfrastructureError naming the process if one still is."""
        locks = self.stale_locks()
        if not locks:
            return []
        deadline = time.monotonic() + wait
        while busy := git_processes_near([self.repo_root, self.worktree, self._repo.common_dir], locks):
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"{locks[0]} is locked and git (pid {busy[0]}) is still working in {self.repo_root}",
                    fix=f"wait for pid {busy[0]} to finish (or stop it), then resume the run",
                )
            time.sleep(0.1)
        for lock in locks:
            lock.unlink(missing_ok=True)
        return locks

    def branch_head(self) -> str:
        return self._repo.run("rev-parse", "--verify", f"refs/heads/{self.branch}")

    def ref_exists(self, ref: str) -> bool:
        try:
            self._repo.run("rev-parse", "--verify", "--quiet", ref)
            return True
        except GitFailed:
            return False

    def require(self) -> None:
        """Raise WorktreeMissing if the worktree is gone (checked after a check, which may have deleted it)."""
        self._git.gitdir()


def slot_worktrees(root: Path, parallel: int) -> list[Path]:
    """A run's worktrees: `root` itself for one slot (as always), `root/0` .. `root/N-1` for `parallel: N`."""
    return [root] if parallel == 1 else [root / str(slot) for slot in range(parallel)]


def remove_worktrees(repo_root: Path, under: Path) -> list[Path]:
    """Remove every worktree of `repo_root` at or below `under` (branches and refs stay). Returns them."""
    runner = RepoGit(repo_root, None)
    listing = runner.run("worktree", "list", "--porcelain")
    under = under.resolve()
    removed = []
    for line in listing.splitlines():
        if not line.startswith("worktree "):
            continue
        path = Path(line.removeprefix("worktree ")).resolve()
        if path == under or under in path.parents:
            runner.run("worktree", "remove", "--force", str(path))
            removed.append(path)
    if under.is_dir() and not any(under.iterdir()):
        under.rmdir()
    return removed


def _write_excludes(exclude_file: Path, repo_root: Path) -> None:
    """Our cache excludes plus the user's own global ignore file, so their rules still apply."""
    lines = list(DEFAULT_EXCLUDES)
    try:
        user_file = RepoGit(repo_root, None).run("config", "--path", "--get", "core.excludesFile")
    except GitFailed:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        user_file = str(Path(xdg) / "git" / "ignore")
    try:
        lines += Path(user_file).expanduser().read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        pass
    exclude_file.parent.mkdir(parents=True, exist_ok=True)
    exclude_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


