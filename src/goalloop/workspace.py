"""Attempts in a run's worktree: commit what a proposal changed, keep it or put the worktree back.

Attempts are committed with plumbing (`write-tree`, `commit-tree`, `update-ref`): no hooks, no signing,
no dependence on the user's identity, and a commit a proposer made itself is folded into the attempt.
Before an attempt is committed, whatever a proposer could use to hide a change from git (index flags,
files git ignores) is undone, so the commit holds exactly what the check will judge.

An attempt whose every change the proposer knows (the search proposer's: `Proposal.files`) takes the
fast path of known_change.py when the worktree was left clean at its parent and git stores those files as
written: no scan of the worktree to commit it or to undo it. While its check runs, HEAD and the index stay
at the parent (the check sees the attempt as an uncommitted change; its commit is the attempt ref).

Putting the worktree back after a check is a reset in full only when it must be. Once goalloop committed
an attempt itself and the check left HEAD and the index as they were, one `git status` says what the check
changed; those paths and the attempt's own are restored from the target commit and the check's new files
removed (see `Workspace._undo_by_paths`). On a large tree that is a status and the listing of ignored
files side by side, instead of `reset --hard`, `clean` and that listing one after the other.

The worktree itself (creating, repairing, locks) is worktree.py's; the names below are re-exported for
the modules that import them from here.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from goalloop import ignored_watch
from goalloop.errors import InfrastructureError
from goalloop.git_runner import GitFailed, Running
from goalloop.known_change import KnownChanges, remove_path
from goalloop.path_rules import PathRules, check_script_paths
from goalloop.repo_target import RepoTarget, resolve_repo
from goalloop.run_lock import RunLock
from goalloop.worktree import REF_PREFIX, RunWorktree, remove_worktrees, slot_worktrees

__all__ = ["AttemptCommit", "ChangedFile", "PathRules", "RepoTarget", "RunLock", "Workspace", "check_script_paths",
           "remove_worktrees", "resolve_repo", "slot_worktrees"]


STATUS_ARGS = ("status", "--porcelain=v1", "-z", "--ignored=no", "--untracked-files=normal", "--no-renames")
"""What the check changed, in one scan: `--untracked-files` set here whatever the user's
`status.showUntrackedFiles` says (`no` would hide the check's new files); goalloop's own git uses no
untracked cache (worktree.OWN_GIT_SETTINGS)."""
INDEX_KEPT_WHOLE = 8 << 20
"""An index up to this size (about 100,000 entries) is kept as it is to compare with; a larger one by hash."""
IGNORED_ARGS = ("ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z")


@dataclass(frozen=True)
class _Committed:
    """Where `commit_attempt` left the worktree: HEAD at `head` (the attempt, or its parent for an empty
    change), the index exactly `head`'s tree, the worktree the same plus files git ignores."""

    head: str
    parent: str
    paths: tuple[str, ...]
    """The paths the attempt changed, in either tree."""


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
        self._ignored_stamp: ignored_watch.IgnoredStamp | None = None
        """What was under those ignored paths after the reset (ignored_watch.py), to find what the proposer changed."""
        self._watching_ignored = True
        """False once what git ignores is too big to stamp (past WATCH_LIMIT) or cannot be read: not walked again."""
        self._index_written: bytes | None = None
        """The worktree's index as goalloop last left it (`_index_stamp`); the same bytes mean no proposer set
        flags in it since."""
        self._clean_at: str | None = None
        """The commit the worktree was last left exactly at (by a reset), until anything is committed."""
        self._fast = KnownChanges(self.worktree, self._git, self._repo)
        """The fast path's attempt (known_change.py), if the last one took it."""
        self._committed: _Committed | None = None
        """The attempt `commit_attempt` made last, until the worktree is reset."""

    # -- attempts -------------------------------------------------------------------------------------
    def commit_attempt(self, iteration: int, parent: str, message: str) -> AttemptCommit:
        """Commit whatever is in the worktree as attempt `iteration` on top of `parent`, and pin its ref.

        An empty change (the tree equals the parent's) makes no commit. Anything the proposer committed
        itself is folded in: the attempt's parent is always the last kept commit.
        """
        self._clean_at, self._committed = None, None
        self._fast.write_unwritten()
        self._fast.drop()
        if self._index_written is None or self._index_stamp() != self._index_written:
            self._unhide_from_git()
        if self.head() != parent or not self._git.head_is_detached():  # the proposer committed or checked out
            self._detach(self.head())
            self._run("reset", "--quiet", "--mixed", parent)
        # The listing runs beside `add`: neither changes which untracked files git ignores.
        listing = self._git.start(*IGNORED_ARGS)
        self._run("add", "--all")
        tree = self._run("write-tree")
        ignored = _paths(listing.output(strip=False))
        # None after a fast undo, which lists none: only a proposer whose files are known has run since.
        stray = sorted(ignored - (ignored if self._ignored_after_reset is None else self._ignored_after_reset))
        remove_stray(self.worktree, stray)
        if self._ignored_stamp is not None:
            changed_inside = ignored_watch.rewritten(self.worktree, self._ignored_stamp)
            remove_stray(self.worktree, changed_inside)
            stray = sorted(stray + changed_inside)
        # One diff for both: with -z the numstat records end in a NUL each, then a NUL, then the patch.
        numstat, _, patch = self._run("diff-tree", "-r", "--numstat", "--patch", "--binary", "--no-renames", "-z",
                                      parent, tree, strip=False).partition("\0\0")
        changed = _parse_numstat(numstat)
        self._index_written = self._index_stamp()
        paths = tuple(c.path for c in changed)
        if not changed:
            self._committed = _Committed(parent, parent, paths)
            return AttemptCommit(sha=None, removed_ignored=stray)
        sha = self._run("commit-tree", tree, "-p", parent, "-m", message)
        self._git.update_refs(f"option no-deref\nupdate HEAD {sha}\n"
                              f"option no-deref\ncreate {self.attempt_ref(iteration)} {sha}\n")
        self._committed = _Committed(sha, parent, paths)
        return AttemptCommit(sha=sha, changed=changed, patch=patch, removed_ignored=stray)

    def commit_known(self, iteration: int, parent: str, message: str, files: dict[str, str]) -> AttemptCommit | None:
        """Commit attempt `iteration` whose only change is `files` (path -> new text), written over the
        worktree at `parent`, without asking git to scan the worktree. None when the worktree's state
        cannot be vouched for (not left clean at `parent` by goalloop, HEAD moved, the index touched) or a
        file is not a plain file at `parent`: then commit it with `commit_attempt`."""
        self._fast.write_unwritten()
        if (self._clean_at != parent or self._detached_head() != parent
                or self._index_stamp() != self._index_written):
            return None
        made = self._fast.commit(self.attempt_ref(iteration), parent, message, files)
        if made is None:
            return None
        if made.sha is not None:
            self._clean_at = None
        return AttemptCommit(sha=made.sha, changed=[ChangedFile(*change) for change in made.numstat], patch=made.patch)

    def writing_meanwhile(self) -> AbstractContextManager[None]:
        """Write the attempt `commit_known` made (its objects and ref) while the block, its check, runs; see
        `KnownChanges.writing_meanwhile`. Without one, a block that does nothing more."""
        return self._fast.writing_meanwhile()

    def start_undo(self) -> None:
        """The attempt's checks are over and it will not be kept: after a fast-path attempt, start listing
        what the check changed, so that it runs while the ledger is written; the next `reset_to` finishes
        the undo."""
        if self._fast.parent is not None:  # else nothing is unwritten either: only the fast path defers writes
            self._fast.start_undo(self.head(), self._index_stamp() == self._index_written)

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
        self._fast.write_unwritten()
        if self.ref_exists(self.attempt_ref(iteration)):  # committed already; stopped while checking it
            return None
        if self.head() == parent and not self.has_uncommitted_changes():
            return None
        return self.commit_attempt(iteration, parent, f"goalloop {self.run_id} #{iteration}: {why}").sha

    def commit_unjudged(self, iteration: int, parent: str) -> str | None:
        """The commit of attempt `iteration`, which was stopped before it was judged: its ref's, or what its
        worktree holds committed now on `parent`; None when it changed nothing. (To be set aside next.)"""
        self._fast.write_unwritten()
        ref = self.attempt_ref(iteration)
        if self.ref_exists(ref):
            return self._run("rev-parse", "--verify", ref)
        if self.head() != parent or self.has_uncommitted_changes():
            return self.commit_attempt(iteration, parent, f"goalloop {self.run_id} #{iteration}: set aside").sha
        return None

    def aside_ref(self, iteration: int, stamp: str) -> str:
        return f"{REF_PREFIX}{self.run_id}/unjudged/{iteration}-{stamp}"

    def move_aside(self, iteration: int, sha: str, stamp: str) -> str:
        """Move attempt `iteration`'s ref (at `sha`) to `refs/goalloop/<run-id>/unjudged/<n>-<stamp>`, in one
        transaction, so the attempt number is free to be proposed again; return the new ref."""
        aside = self.aside_ref(iteration, stamp)
        self._run("update-ref", "--stdin", input=f"create {aside} {sha}\ndelete {self.attempt_ref(iteration)} {sha}\n")
        return aside

    def keep(self, sha: str, previous: str) -> None:
        """Move the run's branch to `sha` (only if it still points at `previous`) and clean the worktree."""
        self._fast.write_unwritten()
        self._git.update_refs(f"update refs/heads/{self.branch} {sha} {previous}\n")
        self.reset_to(sha)

    def reset_to(self, sha: str) -> None:
        """Put the worktree exactly at `sha`: tracked files restored, new files removed."""
        self._fast.write_unwritten()
        if self._fast.parent == sha and self._fast.undo(self.head(), self._index_stamp() == self._index_written):
            self._clean_at, self._index_written = sha, self._index_stamp()
            self._set_ignored_baseline(None)
            return
        self._fast.drop()
        committed, self._committed = self._committed, None
        if committed is not None and self._undo_by_paths(committed, sha):
            return
        if not self._git.head_is_detached():  # a proposer checked out a branch: leave that branch alone
            self._detach(sha)
        self._run("reset", "--quiet", "--hard", sha)
        self._run("clean", "-d", "--force", "--force", "--quiet")
        self._set_ignored_baseline(self.ignored_paths())
        self._index_written = self._index_stamp()
        self._clean_at = sha

    def _undo_by_paths(self, committed: _Committed, target: str) -> bool:
        """Put the worktree at `target` (the attempt or its parent) by the paths that differ from it: True
        when done, False when a reset in full must do it: the worktree's state is not the one `committed`
        describes (HEAD moved, the index touched), an ignore file is among the paths (git's verdicts on
        what is ignored would be those of the rules being undone), or a name git's output does not spell
        in UTF-8.

        What the check changed is what `git status` lists: tracked files that differ from the index, by
        git's own stat and racy-timestamp rules (those of `reset --hard`), and new files. New files are
        removed, then those paths and, for the parent, the attempt's own are restored from `target` with
        `git restore`, which also removes what `target` does not hold. Files git ignores stay, as with
        `git clean`; listed beside the status as `commit_attempt` lists them, they become what the next
        attempt's proposer is measured against. An empty folder the check made is not listed, and stays
        until the next reset in full.
        """
        if target not in (committed.head, committed.parent) or not self._left_as_committed(committed):
            return False
        # Listed now, not when the check ended (whatever wrote in between is undone too), side by side.
        listings = [self._git.start(*STATUS_ARGS), self._git.start(*IGNORED_ARGS)]
        try:
            status, ignored = _outputs(listings)
        except GitFailed:
            return False
        new, changed = [], []
        for entry in (e for e in status.split("\0") if e):
            tag, path = entry[:2], entry[3:]
            if tag == "??":
                new.append(path)
            elif tag[0] == " " and tag[1] in "MDT":
                changed.append(path)
            else:  # staged or unmerged: the index is not the one committed
                return False
        restore = set(changed) | (set(committed.paths) if target != committed.head else set())
        touched = restore | {path.rstrip("/") for path in new}
        if any("\ufffd" in path for path in touched) or _holds_ignore_rules(touched):
            return False
        try:
            for path in new:
                remove_path(self.worktree / path)
        except OSError:
            return False
        if any(os.path.lexists(self.worktree / path) for path in new):  # a file that cannot be deleted: `clean` says so
            return False
        if restore:
            try:
                self._run("restore", f"--source={target}", "--staged", "--worktree", "--pathspec-from-file=-",
                          "--pathspec-file-nul", input="".join(f":(literal){path}\0" for path in sorted(restore)))
            except GitFailed:
                return False
        if target != committed.head:
            self._git.update_refs(f"option no-deref\nupdate HEAD {target}\n")
        self._set_ignored_baseline({path for path in _paths(ignored) if not _overlaps(path.rstrip("/"), touched)})
        self._index_written, self._clean_at = self._index_stamp(), target
        return True

    def _set_ignored_baseline(self, paths: set[str] | None) -> None:
        """What git ignores after a reset, the next proposer's ignored files measured against it: the
        listing's paths (None after a fast undo: only a proposer whose files are known runs next) and the
        stamp of what is under them."""
        self._ignored_after_reset = paths
        self._ignored_stamp = None
        if paths is not None and self._watching_ignored:
            self._ignored_stamp = ignored_watch.stamp(self.worktree, paths)
            self._watching_ignored = self._ignored_stamp is not None

    def _left_as_committed(self, committed: _Committed) -> bool:
        """Whether HEAD and the index are as `commit_attempt` left them (the check moved neither)."""
        return self._detached_head() == committed.head and self._index_stamp() == self._index_written

    def _index_stamp(self) -> bytes | None:
        """The worktree's index file, to compare with as it was: its bytes up to INDEX_KEPT_WHOLE (a read
        and a compare, 0.2 ms for 20,000 entries, where hashing them takes 2.6), a hash of them beyond."""
        try:
            data = (self._git.gitdir() / "index").read_bytes()
        except FileNotFoundError:
            return None
        return data if len(data) <= INDEX_KEPT_WHOLE else hashlib.blake2b(data, digest_size=16).digest()

    def ignored_paths(self) -> set[str]:
        """Untracked files and folders that git ignores (folders collapsed to `dir/`)."""
        return _paths(self._run(*IGNORED_ARGS, strip=False))

    def _detach(self, sha: str) -> None:
        """Point the worktree's HEAD at `sha` directly, off any branch a proposer checked out there."""
        self._run("update-ref", "--no-deref", "HEAD", sha)

    def head(self) -> str:
        """The worktree's HEAD commit: read from its HEAD file when detached (always, but for a proposer
        that checked out a branch), else asked of git."""
        return self._detached_head() or self._run("rev-parse", "--verify", "HEAD")

    def _detached_head(self) -> str | None:
        """The commit HEAD holds when it is detached, else None (a branch is checked out)."""
        text = (self._git.gitdir() / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        return text if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text) else None

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


def _outputs(started: list[Running]) -> list[str]:
    """The outputs of commands started side by side, each waited for even when one fails (its GitFailed
    is raised once all have ended)."""
    outputs, failed = [], None
    for running in started:
        try:
            outputs.append(running.output(strip=False))
        except GitFailed as exc:
            failed = failed or exc
    if failed is not None:
        raise failed
    return outputs


def _paths(listing: str) -> set[str]:
    return {p for p in listing.split("\0") if p}


def _holds_ignore_rules(paths: set[str]) -> bool:
    """Whether any of `paths` is a `.gitignore`: git's verdicts on what the check left (ignored or new)
    were then given under rules the undo changes."""
    return any(path.rsplit("/", 1)[-1] == ".gitignore" for path in paths)


def _overlaps(path: str, others: set[str]) -> bool:
    """Whether `path` is one of `others`, inside one, or holds one."""
    return any(path == o or path.startswith(o + "/") or o.startswith(path + "/") for o in others)


def _parse_numstat(output: str) -> list[ChangedFile]:
    changed = []
    fields = [f for f in output.split("\0") if f]
    for item in fields:
        added, deleted, path = item.split("\t", 2)
        changed.append(
            ChangedFile(path=path, added=int(added) if added != "-" else 0, deleted=int(deleted) if deleted != "-" else 0)
        )
    return changed


def remove_stray(worktree: Path, stray: list[str]) -> None:
    """Remove what the proposer made that git ignores (so the attempt's commit would not hold it), before
    the check can read it. One that cannot be removed (immutable, a folder without write permission) stops
    the run, as a `git clean` that fails does: the check would otherwise see a file its commit lacks."""
    for rel in stray:
        try:
            remove_path(worktree / rel)
        except OSError:
            pass
    left = [rel for rel in stray if os.path.lexists(worktree / rel)]
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        raise InfrastructureError(
            f"cannot remove {shown} from the worktree {worktree}: the proposer made or changed it, git ignores it "
            "(so the attempt's commit would not hold it), and the check must not read it",
            fix="make it deletable (`chmod -R u+w`, `chattr -i`) and delete it, then `goalloop resume`")
