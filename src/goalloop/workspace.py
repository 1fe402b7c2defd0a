"""Git for one run: the branch, the worktree, attempt commits, keep and revert, and the run lock.

The user's checkout is never touched. A run adds only:
  - the branch `goalloop/<run-id>`, which moves only when an attempt is kept;
  - refs `refs/goalloop/<run-id>/<n>`, one per attempt, so every attempt stays reachable;
  - a worktree (detached HEAD) under `workspaces/`, and git's metadata for it; with `parallel: N`, one
    worktree a slot (`workspaces/<run-id>/0` .. `N-1`), all sharing the branch and the refs.

Every git command goes through the guarded runners of git_runner.py: named repository and work tree,
the worktree checked to be the run's before each command, refs limited to the run's own.

Attempts are committed with plumbing (`write-tree`, `commit-tree`, `update-ref`): no hooks, no signing,
no dependence on the user's identity, and a commit a proposer made itself is folded into the attempt.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import git
import pathspec
from filelock import FileLock, Timeout

from goalloop.errors import InfrastructureError, LockHeld
from goalloop.git_runner import GitFailed, RepoGit, WorktreeGit, WorktreeMissing
from goalloop.goal import Goal
from goalloop.processes import git_processes_near

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


@dataclass(frozen=True)
class ChangedFile:
    path: str
    added: int
    deleted: int


@dataclass(frozen=True)
class AttemptCommit:
    """What a proposal changed, committed. `sha` is None for an empty change."""

    sha: str | None
    changed: list[ChangedFile] = field(default_factory=list)
    patch: str = ""
    removed_ignored: list[str] = field(default_factory=list)
    """Files git ignores that the proposal created; removed before the check, which must judge the commit."""

    @property
    def added_lines(self) -> int:
        return sum(c.added for c in self.changed)


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
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    candidates = set()
    for token in tokens:
        if token.startswith("-") or "=" in token:
            continue
        rel = _relative_to((target.root / token).resolve(), target.root)
        if rel:
            candidates.add(rel)
    if not candidates:
        return []
    listing = RepoGit(target.root, None).run("ls-tree", "-r", "--name-only", target.base_commit, "--", *sorted(candidates))
    return sorted(candidates & set(listing.splitlines()))


def _relative_to(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


class Workspace:
    """A run's worktree on a detached HEAD, and the branch and refs that record it."""

    def __init__(self, repo_root: Path, worktree: Path, run_id: str, exclude_file: Path) -> None:
        self.repo_root = repo_root
        self.worktree = worktree
        self.run_id = run_id
        self.branch = BRANCH_PREFIX + run_id
        self._exclude_file = exclude_file
        env = {**COMMIT_IDENTITY, **self.tool_env()}
        self._repo = RepoGit(repo_root, run_id, env)
        self._git = WorktreeGit(self._repo, worktree, env)
        self._ignored_after_reset: set[str] = set()
        self._index_written: bytes | None = None
        """A hash of the worktree's index as goalloop last left it; the same bytes mean no proposer set
        flags in it since."""

    def tool_env(self) -> dict[str, str]:
        """Environment for anything run in the worktree (checks, proposers, their git commands): goalloop's
        ignore rules, so an agent's own `git add -A` leaves caches out too, and no Python bytecode, which
        could otherwise be judged instead of a same-size edit made within the same second."""
        settings = {
            "core.excludesFile": str(self._exclude_file),
            "feature.manyFiles": "true",  # index v4 and the untracked cache: quicker on large trees
        }
        env = {"GIT_CONFIG_COUNT": str(len(settings)), "PYTHONDONTWRITEBYTECODE": "1"}
        for n, (key, value) in enumerate(settings.items()):
            env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = key, value
        return env

    def attempt_ref(self, iteration: int) -> str:
        return f"{REF_PREFIX}{self.run_id}/{iteration}"

    # -- creation -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, target: RepoTarget, worktree: Path, run_id: str, exclude_file: Path) -> Workspace:
        """Create the run's branch at base and a detached worktree on it."""
        _write_excludes(exclude_file, target.root)
        space = cls(target.root, worktree, run_id, exclude_file)
        worktree.parent.mkdir(parents=True, exist_ok=True)
        space._repo.run("branch", space.branch, target.base_commit)
        space._repo.run("worktree", "add", "--detach", "--quiet", str(worktree), target.base_commit)
        return space

    @classmethod
    def create_pool(cls, target: RepoTarget, root: Path, run_id: str, exclude_file: Path, parallel: int) -> list[Workspace]:
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

    # -- attempts -------------------------------------------------------------------------------------
    def commit_attempt(self, iteration: int, parent: str, message: str) -> AttemptCommit:
        """Commit whatever is in the worktree as attempt `iteration` on top of `parent`, and pin its ref.

        An empty change (the tree equals the parent's) makes no commit. Anything the proposer committed
        itself is folded in: the attempt's parent is always the last kept commit.
        """
        if self._index_written is None or self._index_stamp() != self._index_written:
            self._unhide_from_git()
        stray = sorted(self.ignored_paths() - self._ignored_after_reset)
        for rel in stray:
            _remove(self.worktree / rel)
        if self.head() != parent or not self._git.head_is_detached():  # the proposer committed or checked out
            self._detach(self.head())
            self._run("reset", "--quiet", "--mixed", parent)
        self._run("add", "--all")
        tree = self._run("write-tree")
        # One diff for both: with -z the numstat records end in a NUL each, then a NUL, then the patch.
        numstat, _, patch = self._run("diff-tree", "-r", "--numstat", "--patch", "--binary", "--no-renames", "-z",
                                      parent, tree, strip=False).partition("\0\0")
        changed = _parse_numstat(numstat)
        self._index_written = self._index_stamp()
        if not changed:
            return AttemptCommit(sha=None, removed_ignored=stray)
        sha = self._run("commit-tree", tree, "-p", parent, "-m", message)
        self._run(
            "update-ref", "--stdin",
            input=f"option no-deref\nupdate HEAD {sha}\n"
            f"option no-deref\ncreate {self.attempt_ref(iteration)} {sha}\n",
        )
        return AttemptCommit(sha=sha, changed=changed, patch=patch, removed_ignored=stray)

    def _unhide_from_git(self) -> None:
        """Clear `assume-unchanged` and `skip-worktree` flags, with which a proposer could make git overlook
        an edit: the check would measure it, the commit would not hold it, and a reset would not undo it."""
        entries = [e for e in self._run("ls-files", "-v", "-z", strip=False).split("\0") if e]
        skipped = [e[2:] for e in entries if e[0] == "S"]
        assumed = [e[2:] for e in entries if e[0].islower()]
        if skipped:  # one flag per call: git ignores --no-skip-worktree when combined with the other
            self._run("update-index", "--no-skip-worktree", "--", *skipped)
        if assumed:
            self._run("update-index", "--no-assume-unchanged", "--", *assumed)

    def save_unrecorded(self, iteration: int, parent: str, why: str) -> str | None:
        """Commit what a proposal left in the worktree when the run was stopped before judging it.

        Its ref keeps it until the next resume sets it aside (resume.py) and proposes the attempt again.
        Returns the commit, or None if nothing changed.
        """
        if self.ref_exists(self.attempt_ref(iteration)):  # committed already; stopped while checking it
            return None
        if self.head() == parent and not self.has_uncommitted_changes():
            return None
        return self.commit_attempt(iteration, parent, f"goalloop {self.run_id} #{iteration}: {why}").sha

    def commit_unjudged(self, iteration: int, parent: str) -> str | None:
        """The commit of attempt `iteration`, which was stopped before it was judged: its ref's, or what its
        worktree holds committed now on `parent`; None when it changed nothing. (To be set aside next.)"""
        ref = self.attempt_ref(iteration)
        if self.ref_exists(ref):
            return self._run("rev-parse", "--verify", ref)
        if self.head() != parent or self.has_uncommitted_changes():
            return self.commit_attempt(iteration, parent, f"goalloop {self.run_id} #{iteration}: set aside").sha
        return None

    def move_aside(self, iteration: int, sha: str) -> str:
        """Move attempt `iteration`'s ref (at `sha`) to `refs/goalloop/<run-id>/unjudged/<n>-<time>`, in one
        transaction, so the attempt number is free to be proposed again; return the new ref."""
        aside = f"{REF_PREFIX}{self.run_id}/unjudged/{iteration}-{int(time.time())}"
        self._run("update-ref", "--stdin", input=f"create {aside} {sha}\ndelete {self.attempt_ref(iteration)} {sha}\n")
        return aside

    def keep(self, sha: str, previous: str) -> None:
        """Move the run's branch to `sha` (only if it still points at `previous`) and clean the worktree."""
        self._run("update-ref", f"refs/heads/{self.branch}", sha, previous)
        self.reset_to(sha)

    def reset_to(self, sha: str) -> None:
        """Put the worktree exactly at `sha`: tracked files restored, new files removed."""
        if not self._git.head_is_detached():  # a proposer checked out a branch: leave that branch alone
            self._detach(sha)
        self._run("reset", "--quiet", "--hard", sha)
        self._run("clean", "-d", "--force", "--force", "--quiet")
        self._ignored_after_reset = self.ignored_paths()
        self._index_written = self._index_stamp()

    def _index_stamp(self) -> bytes | None:
        """A hash of the worktree's index file (a millisecond for 20,000 entries; `ls-files -v` takes 50x)."""
        try:
            return hashlib.blake2b((self._git.gitdir() / "index").read_bytes(), digest_size=16).digest()
        except FileNotFoundError:
            return None

    def ignored_paths(self) -> set[str]:
        """Untracked files and folders that git ignores (folders collapsed to `dir/`)."""
        listing = self._run("ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z", strip=False)
        return {p for p in listing.split("\0") if p}

    def _detach(self, sha: str) -> None:
        """Point the worktree's HEAD at `sha` directly, off any branch a proposer checked out there."""
        self._run("update-ref", "--no-deref", "HEAD", sha)

    def branch_head(self) -> str:
        return self._repo.run("rev-parse", "--verify", f"refs/heads/{self.branch}")

    def head(self) -> str:
        """The worktree's HEAD commit: read from its HEAD file when detached (always, but for a proposer
        that checked out a branch), else asked of git."""
        text = (self._git.gitdir() / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text):
            return text
        return self._run("rev-parse", "--verify", "HEAD")

    def attempt_refs(self) -> dict[int, str]:
        """Attempt number -> commit, for every attempt ref of this run."""
        listing = self._repo.run("for-each-ref", "--format=%(refname) %(objectname)", f"{REF_PREFIX}{self.run_id}/")
        refs = {}
        for line in listing.splitlines():
            name, sha = line.split()
            tail = name.rsplit("/", 1)[-1]
            if tail.isdigit():
                refs[int(tail)] = sha
        return refs

    def has_uncommitted_changes(self) -> bool:
        return bool(self._run("status", "--porcelain", "--untracked-files=all"))

    def move_branch(self, sha: str) -> None:
        """Point the run's branch at `sha` whatever it points at now (used when resuming)."""
        self._repo.run("update-ref", f"refs/heads/{self.branch}", sha)

    def ref_exists(self, ref: str) -> bool:
        try:
            self._repo.run("rev-parse", "--verify", "--quiet", ref)
            return True
        except GitFailed:
            return False

    def read_at(self, commit: str, path: str) -> str | None:
        try:
            return self._repo.run("show", f"{commit}:{path}", strip=False)
        except GitFailed:
            return None

    def require(self) -> None:
        """Raise WorktreeMissing if the worktree is gone (checked after a check, which may have deleted it)."""
        self._git.gitdir()

    def _run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        return self._git.run(*args, input=input, strip=strip)


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _parse_numstat(output: str) -> list[ChangedFile]:
    changed = []
    fields = [f for f in output.split("\0") if f]
    for item in fields:
        added, deleted, path = item.split("\t", 2)
        changed.append(
            ChangedFile(path=path, added=int(added) if added != "-" else 0, deleted=int(deleted) if deleted != "-" else 0)
        )
    return changed


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


class RunLock:
    """An exclusive lock on a run and on its goal, released when the process dies (kill -9 included).

    The holder's pid and run id are written beside the lock so a second process can say who holds it.
    """

    def __init__(self, lock_path: Path, what: str) -> None:
        self.lock_path = lock_path
        self.what = what
        self._lock = FileLock(str(lock_path))
        self._owner = lock_path.with_suffix(".owner")

    def acquire(self, run_id: str) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            owner = self._owner.read_text(encoding="utf-8").strip() if self._owner.exists() else "another process"
            raise LockHeld(
                f"{self.what} is already being run by {owner}",
                fix="wait for it to finish, or stop that process; a lock left by a dead process is taken over",
            ) from None
        self._owner.write_text(f"pid {os.getpid()} (run {run_id})\n", encoding="utf-8")

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
