"""The fast path of a worktree: attempts whose every change the proposer knows, committed and undone
without asking git to scan the worktree.

A search proposal names every file it wrote (`Proposal.files`). Its commit is the parent's tree with
those blobs replaced, made in-process (git_objects.py); the objects and the attempt ref are written in a
thread while the check runs, through the update-ref process kept for the worktree. HEAD and the index
stay at the parent meanwhile: the check sees the attempt as an uncommitted change.

Undoing it: when the worktree's stat snapshot is the same after the check as before, or else one
`git ls-files` lists nothing but the attempt's files and untracked files, the files' old bytes are written
back and the untracked files removed. Anything else, and the caller resets the worktree in full. An empty
folder the check made is left until that next full reset.

Workspace (workspace.py) decides when the worktree's state allows the fast path (left clean at the parent
by goalloop, HEAD and the index untouched) and keeps its own bookkeeping of that state.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gitdb.exc import ODBError

from goalloop.git_objects import KnownCommit, ObjectWriter
from goalloop.git_runner import GitFailed, RepoGit, Running, WorktreeGit
from goalloop.interrupts import interrupts_held
from goalloop.stat_tree import Stats, add_under, stat_of
from goalloop.worktree import COMMIT_IDENTITY

SNAPSHOT_LIMIT = 500
"""Worktrees with more entries than this are not stat-snapshotted around a fast-path check."""


class KnownChanges:
    """The fast-path attempts of one worktree: the one made last, its writing, and its undoing."""

    def __init__(self, worktree: Path, git: WorktreeGit, repo: RepoGit) -> None:
        self.worktree, self._git, self._repo = worktree, git, repo
        self._known: tuple[str, KnownCommit] | None = None
        """The parent of the last attempt committed on the fast path, and what that attempt changed."""
        self._objects: ObjectWriter | None = None
        self._plain_paths: dict[str, bool] = {}
        """Path -> whether git stores it as the worktree holds it (see `stored_as_written`)."""
        self._autocrlf: str | None = None
        self._unwritten: tuple[list[tuple[bytes, bytes]], str] | None = None
        """The objects and ref script of the attempt `commit` made, until `writing_meanwhile` writes them."""
        self._listing: Running | None = None
        """What the check changed, being listed since `start_undo`."""
        self._stamp_before_check: dict[str, tuple[int, ...]] | None = None
        """The worktree's stat snapshot as the attempt left it for its check (None: too large)."""
        self._check_changed_nothing = False
        """Set by `start_undo` when the snapshots before and after the check are equal."""

    @property
    def parent(self) -> str | None:
        """The parent of the fast-path attempt still to be undone, if any."""
        return self._known[0] if self._known is not None else None

    def commit(self, ref: str, parent: str, message: str, files: dict[str, str]) -> KnownCommit | None:
        """The commit of `files` (path -> new text) over `parent`, to be written with its ref `ref` by
        `writing_meanwhile`; None when git's own path must make it (see `stored_as_written`, and an object
        gitdb cannot read: alternates it cannot follow, a repository it does not know)."""
        self.write_unwritten()
        if not self.stored_as_written(files):
            return None
        if self._objects is None:
            self._objects = ObjectWriter(self._repo.common_dir, COMMIT_IDENTITY)
        try:
            made = self._objects.commit_files(parent, {path: text.encode() for path, text in files.items()}, message)
        except (ODBError, OSError, ValueError, KeyError):
            made = None
        if made is None or made.sha is None:
            return made
        self._unwritten = (made.objects, f"create {ref} {made.sha}\n")
        self._known = (parent, made)
        self._stamp_before_check = _stat_snapshot(self.worktree)
        return made

    def stored_as_written(self, files: dict[str, str]) -> bool:
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
        """Write the objects and the ref of the attempt `commit` made while the block (its check) runs, in
        a thread waited for when the block ends, however it ends; a failure to write is raised then (after
        the block's own exception, if any). Nothing else touches git meanwhile: the block is the attempt's
        judging, which reads only the worktree."""
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

        threading.Thread(target=write, name="write-attempt", daemon=True).start()
        try:
            yield
        finally:
            # The ref exists (or its refusal is raised) before anything reads it, even on a Ctrl-C, which
            # waits for it (an event: an interrupted `Thread.join` can leave the thread looking ended).
            with interrupts_held(raise_after=True):
                written.wait()
        if failed:
            raise failed[0]

    def write_unwritten(self) -> None:
        """Write now what `writing_meanwhile` would have: before anything else reads git, the attempt
        `commit` made is in it."""
        with self.writing_meanwhile():
            pass

    def start_undo(self, head: str, index_untouched: bool) -> None:
        """The attempt's checks are over and it will not be kept: start listing what the check changed,
        so that it runs while the ledger is written; `undo` finishes it. Nothing to start when the check
        moved HEAD or touched the index (`undo` then refuses) or its snapshot shows it changed nothing."""
        self.write_unwritten()
        if self._known is None or self._listing is not None or self._check_changed_nothing:
            return
        if head != self._known[0] or not index_untouched:
            return
        if self._stamp_before_check is not None and _stat_snapshot(self.worktree) == self._stamp_before_check:
            self._check_changed_nothing = True
            return
        # One process lists both: tracked files that differ from the index (C, or R when deleted) and
        # untracked files outside the ignore rules (?); cheaper than `status`, which also compares HEAD.
        self._listing = self._git.start("ls-files", "--modified", "--deleted", "--others", "--exclude-standard",
                                        "-t", "-z")

    def undo(self, head: str, index_untouched: bool) -> bool:
        """Put the worktree back at the attempt's parent: True if only the attempt's files (rewritten from
        their bytes there) and untracked files (removed) differed, else False, having changed nothing (the
        caller then resets in full). Either way the attempt is forgotten."""
        self.start_undo(head, index_untouched)
        known, listing, unchanged = self._known, self._listing, self._check_changed_nothing
        self._known, self._listing, self._check_changed_nothing = None, None, False
        if known is None or (listing is None and not unchanged):
            return False
        entries = [] if listing is None else [(entry[:1], entry[2:])
                                              for entry in listing.output(strip=False).split("\0") if entry]
        _, made = known
        if any(tag not in ("C", "?") or (tag == "C" and path not in made.old) for tag, path in entries):
            return False
        if not all(self._plain_file(path, executable) for path, executable in made.executable.items()):
            return False
        for path, data in made.old.items():
            (self.worktree / path).write_bytes(data)
        for path in (path for tag, path in entries if tag == "?"):
            remove_path(self.worktree / path)
            _prune_empty_parents(self.worktree, Path(path).parent)
        return True

    def drop(self) -> None:
        """Forget the attempt (a full reset follows), waiting for what `start_undo` started."""
        listing, self._known, self._listing, self._check_changed_nothing = self._listing, None, None, False
        if listing is not None:
            try:
                listing.output()
            except GitFailed:
                pass  # the full reset that follows reads the worktree afresh

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


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (not what it points at) or a folder and everything in it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stat_snapshot(root: Path) -> Stats | None:
    """The stat of every file and folder in the worktree but `.git` (stat_tree.py); None past SNAPSHOT_LIMIT
    entries, where `git ls-files` is the cheaper way to find what a check changed."""
    found: Stats = {}
    if not add_under(root, [""], found, SNAPSHOT_LIMIT, skip=frozenset({".git"})):
        return None
    top = stat_of(os.stat(root))
    found[""] = (top[0], 0, *top[2:])  # the folder's own size says nothing the entries do not
    return found


def _prune_empty_parents(root: Path, folder: Path) -> None:
    """Remove `folder` (relative to `root`) and the folders above it while they are empty."""
    while folder.parts:
        try:
            (root / folder).rmdir()
        except OSError:
            return
        folder = folder.parent
