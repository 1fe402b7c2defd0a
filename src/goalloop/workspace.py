"""Attempts in a run's worktree: commit what a proposal changed, keep it or put the worktree back.

Attempts are committed with plumbing (`write-tree`, `commit-tree`, `update-ref`): no hooks, no signing,
no dependence on the user's identity, and a commit a proposer made itself is folded into the attempt.
Before an attempt is committed, whatever a proposer could use to hide a change from git (index flags,
files git ignores) is undone, so the commit holds exactly what the check will judge.

An attempt whose every change the proposer knows (the search proposer's: `Proposal.files`) takes a fast
path when the worktree was left clean at its parent and git stores those files as written: its objects
are made in-process (git_objects.py) and written, with its ref (through the update-ref process kept for
the worktree), in a thread while its check runs. Undoing it: when the worktree's stat snapshot is the
same after the check as before, or else one `git ls-files` lists nothing but those files and untracked
files, the files' old bytes are written back and the untracked files removed; anything else there and
the worktree is reset as usual. Two differences from the usual path: HEAD and the index stay at the
parent while the check runs (the check sees the attempt as an uncommitted change; its commit is the
attempt ref), and an empty folder the check made is left until the next full reset.

The worktree itself (creating, repairing, locks) is worktree.py's; the names below are re-exported for
the modules that import them from here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gitdb.exc import ODBError

from goalloop.git_objects import KnownCommit, ObjectWriter
from goalloop.git_runner import GitFailed, Running
from goalloop.interrupts import interrupts_held
from goalloop.path_rules import PathRules, check_script_paths
from goalloop.repo_target import RepoTarget, resolve_repo
from goalloop.run_lock import RunLock
from goalloop.worktree import COMMIT_IDENTITY, REF_PREFIX, RunWorktree, remove_worktrees, slot_worktrees

SNAPSHOT_LIMIT = 500
"""Worktrees with more entries than this are not stat-snapshotted around a fast-path check."""

__all__ = ["AttemptCommit", "ChangedFile", "PathRules", "RepoTarget", "RunLock", "Workspace", "check_script_paths",
           "remove_worktrees", "resolve_repo", "slot_worktrees"]


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


class Workspace(RunWorktree):
    """A run's worktree on a detached HEAD, and the attempts committed, kept and undone in it."""

    def __init__(self, repo_root: Path, worktree: Path, run_id: str, exclude_file: Path) -> None:
        super().__init__(repo_root, worktree, run_id, exclude_file)
        self._ignored_after_reset: set[str] | None = set()
        """Files git ignores that were there after the last reset (None: not listed since; see commit_attempt)."""
        self._index_written: bytes | None = None
        """A hash of the worktree's index as goalloop last left it; the same bytes mean no proposer set
        flags in it since."""
        self._clean_at: str | None = None
        """The commit the worktree was last left exactly at (by a reset), until anything is committed."""
        self._known: tuple[str, KnownCommit] | None = None
        """The parent of the last attempt committed on the fast path, and what that attempt changed."""
        self._objects: ObjectWriter | None = None
        self._plain_paths: dict[str, bool] = {}
        """Path -> whether git stores it as the worktree holds it (see `_stored_as_written`)."""
        self._autocrlf: str | None = None
        self._unwritten: tuple[list[tuple[bytes, bytes]], str] | None = None
        """The objects and ref script of the attempt `commit_known` made, until `writing_meanwhile` writes them."""
        self._listing: Running | None = None
        """What the check changed, being listed since `start_undo`."""
        self._stamp_before_check: dict[str, tuple[int, ...]] | None = None
        """The worktree's stat snapshot as the fast-path attempt left it for its check (None: too large)."""
        self._check_changed_nothing = False
        """Set by `start_undo` when the snapshots before and after the check are equal."""

    # -- attempts -------------------------------------------------------------------------------------
    def commit_attempt(self, iteration: int, parent: str, message: str) -> AttemptCommit:
        """Commit whatever is in the worktree as attempt `iteration` on top of `parent`, and pin its ref.

        An empty change (the tree equals the parent's) makes no commit. Anything the proposer committed
        itself is folded in: the attempt's parent is always the last kept commit.
        """
        self._clean_at = None
        self._write_unwritten()
        self._drop_undo()
        if self._index_written is None or self._index_stamp() != self._index_written:
            self._unhide_from_git()
        ignored = self.ignored_paths()
        # None after a fast undo, which lists none: only a proposer whose files are known has run since.
        stray = sorted(ignored - (ignored if self._ignored_after_reset is None else self._ignored_after_reset))
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

    def commit_known(self, iteration: int, parent: str, message: str, files: dict[str, str]) -> AttemptCommit | None:
        """Commit attempt `iteration` whose only change is `files` (path -> new text), written over the
        worktree at `parent`, without asking git to scan the worktree. None when the worktree's state
        cannot be vouched for (not left clean at `parent` by goalloop, HEAD moved, the index touched) or a
        file is not a plain file at `parent`: then commit it with `commit_attempt`."""
        self._write_unwritten()
        if (self._clean_at != parent or self.head() != parent or not self._git.head_is_detached()
                or self._index_stamp() != self._index_written or not self._stored_as_written(files)):
            return None
        if self._objects is None:
            self._objects = ObjectWriter(self._repo.common_dir, COMMIT_IDENTITY)
        # An object gitdb cannot read (alternates it cannot follow, a repository it does not know) is
        # no fault of the attempt: git's own path can read it.
        try:
            made = self._objects.commit_files(parent, {path: text.encode() for path, text in files.items()}, message)
        except (ODBError, OSError, ValueError, KeyError):
            made = None
        if made is None:
            return None
        if made.sha is None:
            return AttemptCommit(sha=None)
        self._unwritten = (made.objects, f"create {self.attempt_ref(iteration)} {made.sha}\n")
        self._clean_at, self._known = None, (parent, made)
        self._stamp_before_check = _stat_snapshot(self.worktree)
        return AttemptCommit(sha=made.sha, changed=[ChangedFile(*change) for change in made.numstat], patch=made.patch)

    def _stored_as_written(self, files: dict[str, str]) -> bool:
        """Whether git stores each of `files` byte for byte as it is in the worktree: no attribute (a clean
        filter such as LFS, end-of-line conversion, `export-subst`...) and no `core.autocrlf` applies to it.
        Asked of git once a path a run."""
        unknown = sorted(set(files) - set(self._plain_paths))
        if unknown:
            if self._autocrlf is None:
                try:
                    self._autocrlf = self._repo.run("config", "--get", "core.autocrlf").lower()
                except GitFailed:
                    self._autocrlf = ""
            listing = self._git.run("check-attr", "--all", "-z", "--", *unknown, strip=False).split("\0")
            attributed = set(listing[0::3])
            for path in unknown:
                self._plain_paths[path] = path not in attributed and self._autocrlf in ("", "false")
        return all(self._plain_paths[path] for path in files)

    @contextmanager
    def writing_meanwhile(self) -> Iterator[None]:
        """Write the objects and the ref of the attempt `commit_known` made while the block (its check)
        runs, in a thread joined when the block ends, however it ends; a failure to write is raised then
        (after the block's own exception, if any). Nothing else touches git meanwhile: the block is the
        attempt's judging, which reads only the worktree."""
        if self._unwritten is None:
            yield
            return
        (objects, script), self._unwritten = self._unwritten, None
        failed: list[BaseException] = []
        written = threading.Event()

        def write() -> None:
            try:
                assert self._objects is not None
                self._objects.store(objects)
                self._git.update_refs(script)
            except BaseException as exc:  # noqa: BLE001 (raised in the attempt's thread below)
                failed.append(exc)
            finally:
                written.set()

        threading.Thread(target=write, name=f"write-{self.run_id}", daemon=True).start()
        try:
            yield
        finally:
            # The ref exists (or its refusal is raised) before anything reads it, even on a Ctrl-C, which
            # waits for it (an event: an interrupted `Thread.join` can leave the thread looking ended).
            with interrupts_held(raise_after=True):
                written.wait()
        if failed:
            raise failed[0]

    def _write_unwritten(self) -> None:
        """Write now what `writing_meanwhile` would have: before anything else reads git, the attempt
        `commit_known` made is in it."""
        with self.writing_meanwhile():
            pass

    def start_undo(self) -> None:
        """The attempt's checks are over and it will not be kept: after a fast-path attempt, start listing
        what the check changed, so that it runs while the ledger is written; the next `reset_to` finishes
        the undo."""
        self._write_unwritten()
        if self._known is None or self._listing is not None or self._check_changed_nothing:
            return
        if self.head() != self._known[0] or self._index_stamp() != self._index_written:
            return  # the check moved HEAD or touched the index: reset_to resets in full
        if self._stamp_before_check is not None and _stat_snapshot(self.worktree) == self._stamp_before_check:
            self._check_changed_nothing = True
            return
        # One process lists both: tracked files that differ from the index (C, or R when deleted) and
        # untracked files outside the ignore rules (?); cheaper than `status`, which also compares HEAD.
        self._listing = self._git.start("ls-files", "--modified", "--deleted", "--others", "--exclude-standard",
                                        "-t", "-z")

    def _undo_known(self) -> bool:
        """Put the worktree back at the parent of the last fast-path attempt: True if only the attempt's
        files (rewritten from their bytes there) and untracked files (removed) differed, else False, having
        changed nothing (the caller then resets in full)."""
        self.start_undo()
        known, listing, unchanged = self._known, self._listing, self._check_changed_nothing
        self._known, self._listing, self._check_changed_nothing = None, None, False
        if known is None or (listing is None and not unchanged):
            return False
        entries = [] if listing is None else [(entry[:1], entry[2:])
                                              for entry in listing.output(strip=False).split("\0") if entry]
        sha, made = known
        if any(tag not in ("C", "?") or (tag == "C" and path not in made.old) for tag, path in entries):
            return False
        if not all(self._plain_file(path, executable) for path, executable in made.executable.items()):
            return False
        for path, data in made.old.items():
            (self.worktree / path).write_bytes(data)
        for path in (path for tag, path in entries if tag == "?"):
            _remove(self.worktree / path)
            _prune_empty_parents(self.worktree, Path(path).parent)
        self._clean_at, self._ignored_after_reset, self._index_written = sha, None, self._index_stamp()
        return True

    def _plain_file(self, path: str, executable: bool) -> bool:
        """Whether `path` is still a regular file inside the worktree (not a symlink, through which writing
        would reach outside it) with the executable bit it has at the parent."""
        place = self.worktree / path
        try:
            mode = os.lstat(place).st_mode
        except OSError:
            return False
        inside = place.resolve().is_relative_to(self.worktree.resolve())
        return inside and stat.S_ISREG(mode) and bool(mode & stat.S_IXUSR) == executable

    def _drop_undo(self) -> None:
        """Forget the fast-path attempt (a full reset follows), waiting for what `start_undo` started."""
        listing, self._known, self._listing, self._check_changed_nothing = self._listing, None, None, False
        if listing is not None:
            try:
                listing.output()
            except GitFailed:
                pass  # the full reset that follows reads the worktree afresh

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
        self._write_unwritten()
        if self.ref_exists(self.attempt_ref(iteration)):  # committed already; stopped while checking it
            return None
        if self.head() == parent and not self.has_uncommitted_changes():
            return None
        return self.commit_attempt(iteration, parent, f"goalloop {self.run_id} #{iteration}: {why}").sha

    def commit_unjudged(self, iteration: int, parent: str) -> str | None:
        """The commit of attempt `iteration`, which was stopped before it was judged: its ref's, or what its
        worktree holds committed now on `parent`; None when it changed nothing. (To be set aside next.)"""
        self._write_unwritten()
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
        self._write_unwritten()
        self._git.update_refs(f"update refs/heads/{self.branch} {sha} {previous}\n")
        self.reset_to(sha)

    def reset_to(self, sha: str) -> None:
        """Put the worktree exactly at `sha`: tracked files restored, new files removed."""
        self._write_unwritten()
        if self._known is not None and self._known[0] == sha and self._undo_known():
            return
        self._drop_undo()
        if not self._git.head_is_detached():  # a proposer checked out a branch: leave that branch alone
            self._detach(sha)
        self._run("reset", "--quiet", "--hard", sha)
        self._run("clean", "-d", "--force", "--force", "--quiet")
        self._ignored_after_reset = self.ignored_paths()
        self._index_written = self._index_stamp()
        self._clean_at = sha

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

    def holds_exactly(self, sha: str) -> bool:
        """Whether the worktree's files are exactly commit `sha`'s, nothing untracked beside them, wherever
        HEAD is (a fast-path attempt is checked with HEAD at its parent)."""
        try:
            self._run("diff", "--quiet", sha, "--")
        except GitFailed:
            return False
        return not self._run("ls-files", "--others", "--exclude-standard")

    def has_uncommitted_changes(self) -> bool:
        return bool(self._run("status", "--porcelain", "--untracked-files=all"))

    def move_branch(self, sha: str) -> None:
        """Point the run's branch at `sha` whatever it points at now (used when resuming)."""
        self._repo.run("update-ref", f"refs/heads/{self.branch}", sha)

    def read_at(self, commit: str, path: str) -> str | None:
        try:
            return self._repo.run("show", f"{commit}:{path}", strip=False)
        except GitFailed:
            return None

    def _run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        return self._git.run(*args, input=input, strip=strip)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stat_snapshot(root: Path) -> dict[str, tuple[int, ...]] | None:
    """(mode, size, mtime, ctime, inode) of every file and folder in the worktree but `.git`; None past
    SNAPSHOT_LIMIT entries, where `git ls-files` is the cheaper way to find what a check changed. Two equal
    snapshots mean the check created, deleted and rewrote nothing: a write moves a file's ctime, an entry
    added or removed moves its folder's, and no program can set a ctime back (only the clock can)."""
    found: dict[str, tuple[int, ...]] = {}
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(root / folder if folder else root))
        except OSError:
            return None
        for entry in entries:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            if rel == ".git":
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                return None
            found[rel] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
            if len(found) > SNAPSHOT_LIMIT:
                return None
            if entry.is_dir(follow_symlinks=False):
                folders.append(rel)
    top = os.stat(root)
    found[""] = (top.st_mode, 0, top.st_mtime_ns, top.st_ctime_ns, top.st_ino)
    return found


def _prune_empty_parents(root: Path, folder: Path) -> None:
    """Remove `folder` (relative to `root`) and the folders above it while they are empty."""
    while folder.parts:
        try:
            (root / folder).rmdir()
        except OSError:
            return
        folder = folder.parent


def _parse_numstat(output: str) -> list[ChangedFile]:
    changed = []
    fields = [f for f in output.split("\0") if f]
    for item in fields:
        added, deleted, path = item.split("\t", 2)
        changed.append(
            ChangedFile(path=path, added=int(added) if added != "-" else 0, deleted=int(deleted) if deleted != "-" else 0)
        )
    return changed


