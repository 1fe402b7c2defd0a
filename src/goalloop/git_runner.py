"""Every git command goalloop runs, behind two guarded runners that cannot reach the user's checkout.

`RepoGit` speaks to the repository as a whole (refs, objects, worktree bookkeeping) with `--git-dir`
and no work tree, so it has no checkout to touch; it refuses every command that reads or writes a work
tree or an index. `WorktreeGit` speaks to one of the run's worktrees with `--git-dir=<its own gitdir>
--work-tree=<it>`, after checking, before every command, that the folder still exists and is that linked
worktree (its `.git` file names a gitdir under the repository's `worktrees/`, which names it back). A
worktree that vanished raises `WorktreeMissing`; git is never left to guess a repository from the
current directory (GitPython's `Git(path)` runs in the process's directory when `path` is missing).

Refs are guarded where git is called: `update-ref` and `branch` may only write the run's branch
`refs/heads/goalloop/<run-id>`, its attempt refs `refs/goalloop/<run-id>/...` and, in a worktree, that
worktree's own detached HEAD; `reset` runs only on a detached HEAD, so it can never move a branch a
proposer checked out there. The variables that would redirect git (GIT_DIR, GIT_INDEX_FILE, ...) are
dropped from git's environment.

A git command is never abandoned half-way: on Ctrl-C it is let finish (it runs in its own session, so
the terminal's SIGINT does not reach it either) and the interrupt is raised after, so no lock file or
half-made ref is left behind by an interrupt.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from goalloop import faults
from goalloop.errors import InfrastructureError
from goalloop.interrupts import interrupts_held

BRANCH_PREFIX = "refs/heads/goalloop/"
REF_PREFIX = "refs/goalloop/"
REDIRECTING_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
)
REPO_COMMANDS = frozenset({"rev-parse", "for-each-ref", "ls-tree", "show", "cat-file", "config", "worktree",
                           "branch", "update-ref", "merge-base", "log"})
"""What RepoGit runs: nothing that has a work tree or an index."""
WORKTREE_COMMANDS = REPO_COMMANDS - {"worktree", "branch", "config"} | {
    "reset", "restore", "clean", "add", "update-index", "status", "ls-files", "diff", "diff-files", "diff-index",
    "diff-tree", "write-tree", "commit-tree", "check-attr"}
"""What WorktreeGit runs: never `checkout`, `commit` or `merge`, which could move a branch."""
READ_ONLY_COMMANDS = frozenset({"ls-files", "diff-files", "ls-tree", "cat-file", "rev-parse", "status"})
"""What WorktreeGit.start may leave running while goalloop goes on: commands that write nothing, not even
the index (`status` would refresh it, but for GIT_OPTIONAL_LOCKS=0, which WorktreeGit always sets), so one
an interrupt leaves behind finishes harmlessly by itself."""


class GitFailed(InfrastructureError):
    """A git command exited non-zero."""


class WorktreeMissing(InfrastructureError):
    """A run's worktree vanished (a tmp cleaner, `git clean -fdx`, a tidy person) while the run used it."""


class UnsafeGitCommand(InfrastructureError):
    """goalloop itself asked for a git command that could reach beyond the run's own branch and refs."""


def git_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables that would point git at another repository, index or work tree."""
    return {k: v for k, v in env.items() if k not in REDIRECTING_VARIABLES}


class RepoGit:
    """Git on the repository as a whole, never on a work tree. `run_id` names the refs it may write."""

    def __init__(self, root: Path, run_id: str | None, env: Mapping[str, str] | None = None,
                 common_dir: Path | None = None) -> None:
        """`common_dir`: the repository's git directory, when the caller found it already (RepoTarget)."""
        self.root = Path(root)
        self.run_id = run_id
        self.env = git_environment({**os.environ, **(env or {})})
        self._common_dir: Path | None = common_dir

    @property
    def common_dir(self) -> Path:
        """The repository's git directory (the one its linked worktrees share)."""
        if self._common_dir is None:
            if not self.root.is_dir():
                raise InfrastructureError(f"the repository {self.root} does not exist any more",
                                          fix="restore it (or its path) and resume the run")
            found = _execute(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], self.root,
                             self.env, None, True, f"in {self.root}")
            self._common_dir = Path(found).resolve()
        return self._common_dir

    def owns(self, ref: str) -> bool:
        """Whether `ref` is the run's branch or one of its attempt refs."""
        if self.run_id is None:
            return False
        return ref == f"{BRANCH_PREFIX}{self.run_id}" or ref.startswith(f"{REF_PREFIX}{self.run_id}/")

    def run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        if args[0] not in REPO_COMMANDS:
            raise UnsafeGitCommand(f"refused `git {args[0]}` on the repository {self.root}: it would use a work tree")
        self._guard(args, input, head_allowed=False)
        return _execute(["git", f"--git-dir={self.common_dir}", *args], self.root, self.env, input, strip,
                        f"in {self.root}")

    def _guard(self, args: tuple[str, ...], input: str | None, head_allowed: bool) -> None:
        verb = args[0]
        if verb == "update-ref":
            for ref, no_deref in _update_ref_targets(args, input):
                if not (self.owns(ref) or (ref == "HEAD" and head_allowed and no_deref)):
                    raise UnsafeGitCommand(f"refused to write {ref}: a run writes only its own branch and refs")
        elif verb == "branch":
            rest = [a for a in args[1:] if a != "--quiet"]
            if len(rest) != 2 or rest[0].startswith("-") or not self.owns(f"refs/heads/{rest[0]}"):
                raise UnsafeGitCommand(f"refused `git {' '.join(args)}`: a run only creates its own branch")
        elif verb == "config" and not {"--get", "--get-all", "--list", "-l"} & set(args):
            raise UnsafeGitCommand("refused to change git config: goalloop never changes the user's config")
        elif verb == "worktree" and len(args) > 1 and args[1] not in ("add", "list", "remove"):
            raise UnsafeGitCommand(f"refused `git worktree {args[1]}`: it could touch the user's other worktrees")


RECENT_CHANGE_NS = 2_000_000_000
"""A file changed this recently (nanoseconds) has its text compared too: its change time alone cannot
tell a rewrite a few milliseconds later (the kernel stamps files from a clock that ticks every 1-10 ms)."""


class WorktreeGit:
    """Git in one of the run's linked worktrees, checked to be that worktree before every command."""

    def __init__(self, repo: RepoGit, worktree: Path, env: Mapping[str, str] | None = None) -> None:
        self.repo = repo
        self.worktree = Path(os.path.abspath(worktree))
        self.env = git_environment({**os.environ, **(env or {}), "GIT_OPTIONAL_LOCKS": "0"})
        self._verified: tuple[tuple[object, ...], Path] | None = None
        """(what the last full check rested on, the gitdir it found)."""
        self._worktree_path, self._dotgit_path = str(self.worktree), os.path.join(self.worktree, ".git")
        self._identity_paths: tuple[Path, str, str] | None = None
        self._refs: RefStream | None = None

    def gitdir(self) -> Path:
        """The worktree's own git directory, or WorktreeMissing if the folder is not that worktree any more.

        Checked in full (paths resolved) the first time and whenever anything it rests on changed: the
        folder, its `.git` file and the metadata's `gitdir` file are the same files, unchanged since the
        full check passed (`_identity` says how that is told), or it is made again."""
        if self._verified is not None:
            rests_on, gitdir = self._verified
            try:
                if self._identity(gitdir) == rests_on:
                    return gitdir
            except OSError:
                pass
        gitdir = self._check_gitdir()
        try:
            self._verified = (self._identity(gitdir), gitdir)
        except OSError:
            self._verified = None
        return gitdir

    def _identity(self, gitdir: Path) -> tuple[object, ...]:
        """What `gitdir` rests on: the worktree folder, its `.git` file and the metadata's back-pointer,
        each file by its device, inode, size and change time, and by its text while that change time is
        within `RECENT_CHANGE_NS` of now. Later, a rewrite changes the change time, so the stat tells it
        and the text need not be read; within the same tick of the kernel's coarse clock it might not.
        (Asked before every git command and read of the metadata: the paths are strings made once.)"""
        if self._identity_paths is None or self._identity_paths[0] != gitdir:
            self._identity_paths = (gitdir, str(gitdir), os.path.join(gitdir, "gitdir"))
        _, meta_path, back_path = self._identity_paths
        folder, dotgit, back, meta = (os.stat(self._worktree_path), os.stat(self._dotgit_path), os.stat(back_path),
                                      os.stat(meta_path))
        recent = time.time_ns() - RECENT_CHANGE_NS
        return (folder.st_dev, folder.st_ino, _file_id(dotgit), dotgit.st_ctime_ns, _file_id(back), back.st_ctime_ns,
                meta.st_dev, meta.st_ino, _text_if_recent(self._dotgit_path, dotgit, recent),
                _text_if_recent(back_path, back, recent))

    def _check_gitdir(self) -> Path:
        dotgit = self.worktree / ".git"
        try:
            text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
        except IsADirectoryError:
            text = ""
        except OSError:
            raise self.missing("was deleted during the run") from None
        if not text.startswith("gitdir:"):
            raise self.missing("is not a linked worktree any more (its .git is not a gitdir file)")
        gitdir = (self.worktree / text.removeprefix("gitdir:").strip()).resolve()
        if gitdir.parent != self.repo.common_dir / "worktrees":
            raise self.missing(f"belongs to another repository ({gitdir})")
        try:
            back = (gitdir / "gitdir").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            raise self.missing("lost its git metadata (pruned)") from None
        if (gitdir / back).resolve() != dotgit.resolve():
            raise self.missing(f"is not the worktree git knows as {gitdir.name}")
        return gitdir

    def missing(self, how: str) -> WorktreeMissing:
        run = self.repo.run_id
        return WorktreeMissing(
            f"the worktree {self.worktree} {how}; nothing in your checkout was touched",
            fix=f"run `goalloop resume {run}`, which recreates it at the last kept commit" if run else
            "resume the run, which recreates it at the last kept commit",
        )

    def head_is_detached(self) -> bool:
        return not (self.gitdir() / "HEAD").read_text(encoding="utf-8", errors="replace").startswith("ref:")

    def run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        verb = args[0]
        if verb not in WORKTREE_COMMANDS:
            raise UnsafeGitCommand(f"refused `git {verb}` in the worktree {self.worktree}")
        self.repo._guard(args, input, head_allowed=True)
        gitdir = self.gitdir()
        if verb == "reset" and not self.head_is_detached():
            raise UnsafeGitCommand(f"refused `git reset` in {self.worktree}: its HEAD is on a branch, which a "
                                   "reset would move; detach it first")
        argv = ["git", f"--git-dir={gitdir}", f"--work-tree={self.worktree}", *args]
        try:
            return _execute(argv, self.worktree, self.env, input, strip, f"in {self.worktree}")
        except FileNotFoundError:
            raise self.missing("was deleted during the run") from None

    def start(self, *args: str) -> Running:
        """Start a command that writes nothing (READ_ONLY_COMMANDS) and return at once, so that it runs
        while goalloop does its own work; `Running.output()` waits for it."""
        if args[0] not in READ_ONLY_COMMANDS:
            raise UnsafeGitCommand(f"refused to leave `git {args[0]}` running in {self.worktree}: it writes")
        argv = ["git", f"--git-dir={self.gitdir()}", f"--work-tree={self.worktree}", *args]
        try:
            return Running(argv, self.worktree, self.env, f"in {self.worktree}")
        except FileNotFoundError:
            raise self.missing("was deleted during the run") from None

    def update_refs(self, script: str) -> None:
        """Apply an `update-ref --stdin` script as one transaction, guarded as `run` guards it, in a git
        process kept for the worktree: a process a transaction would cost more than the rest of a cheap
        attempt. The worktree is checked to be the run's first, as before every command."""
        self.repo._guard(("update-ref", "--stdin"), script, head_allowed=True)
        gitdir = self.gitdir()
        if self._refs is None or self._refs.gitdir != gitdir:
            self.close()
            self._refs = RefStream(gitdir, self.env, f"in {self.worktree}")
        self._refs.transaction(script)

    def close(self) -> None:
        """End the kept `update-ref` process, if any (it also ends by itself when goalloop does)."""
        if self._refs is not None:
            self._refs.close()
            self._refs = None


class RefStream:
    """One `git update-ref --stdin` process that applies transaction after transaction (`start` ..
    `commit`), all or nothing each. Between transactions it holds no lock. A failed transaction ends the
    process (git exits on the first error) and raises GitFailed; the next one starts a new process."""

    def __init__(self, gitdir: Path, env: dict[str, str], where: str) -> None:
        self.gitdir, self._env, self._where = gitdir, env, where
        self._proc: subprocess.Popen[bytes] | None = None

    def transaction(self, script: str) -> None:
        with interrupts_held(raise_after=True):
            proc = self._process()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(f"start\n{script.rstrip()}\nprepare\ncommit\n".encode())
                proc.stdin.flush()
                answers = [proc.stdout.readline() for _ in range(3)]
            except BrokenPipeError:  # git exited: its stderr says why
                answers = []
            if answers == [b"start: ok\n", b"prepare: ok\n", b"commit: ok\n"]:
                return
            self._proc = None
            proc.kill()
            _, err = proc.communicate()
        message = err.decode(errors="replace").strip()
        raise faults.from_git(message, str(self.gitdir)) or GitFailed(
            f"git update-ref --stdin failed {self._where}: {message or f'exit code {proc.returncode}'}",
            fix="check the repository with `git status` and `git worktree list`; the run can be resumed",
        )

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(["git", f"--git-dir={self.gitdir}", "update-ref", "--stdin"],
                                          cwd=self.gitdir, env=self._env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return self._proc

    def close(self) -> None:
        if self._proc is not None:
            with interrupts_held(raise_after=True):
                self._proc.communicate()
            self._proc = None


class Running:
    """A git command started by `WorktreeGit.start`, in its own session (a Ctrl-C does not reach it)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], where: str) -> None:
        self._argv, self._cwd, self._where = argv, cwd, where
        with interrupts_held(raise_after=True):
            self._proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True)

    def output(self, strip: bool = True) -> str:
        """Its output, once it exits; GitFailed if it exits non-zero."""
        with interrupts_held(raise_after=True):
            out, err = self._proc.communicate()
        return _result(self._argv, self._proc.returncode, out, err, strip, self._cwd, self._where)


def _text_if_recent(path: str, stat: os.stat_result, recent: int) -> bytes | None:
    if stat.st_ctime_ns < recent and stat.st_mtime_ns < recent:
        return None
    with open(path, "rb") as stream:
        return stream.read(65536)


def _file_id(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _update_ref_targets(args: tuple[str, ...], input: str | None) -> list[tuple[str, bool]]:
    """(ref, no-deref?) for every ref an `update-ref` command line or its --stdin script would write."""
    if "--stdin" in args:
        targets, no_deref = [], False
        for line in (input or "").splitlines():
            words = line.split()
            if not words:
                continue
            if words[:2] == ["option", "no-deref"]:
                no_deref = True
                continue
            if words[0] in ("update", "create", "delete", "verify", "symref-update"):
                targets.append((words[1], no_deref))
            elif words[0] not in ("start", "prepare", "commit", "abort"):
                targets.append((line, False))  # unknown: refused
            no_deref = False
        return targets
    positional = [a for a in args[1:] if not a.startswith("-")]
    if "-m" in args:
        positional.remove(args[args.index("-m") + 1])
    return [(positional[0] if positional else "", "--no-deref" in args)]


def _execute(argv: list[str], cwd: Path, env: dict[str, str], input: str | None, strip: bool, where: str) -> str:
    """Run git to the end, even through a Ctrl-C (delivered once git is done); GitFailed if it exits non-zero.

    A Ctrl-C is held back rather than caught and retried: a retried `communicate` no longer writes the input
    it had not yet sent, and git would wait for it forever."""
    with interrupts_held(raise_after=True):
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                start_new_session=True)
        out, err = proc.communicate(input.encode() if input is not None else None)
    return _result(argv, proc.returncode, out, err, strip, cwd, where)


def _result(argv: list[str], code: int, out: bytes, err: bytes, strip: bool, cwd: Path, where: str) -> str:
    if code != 0:
        message = err.decode(errors="replace").strip()
        raise faults.from_git(message, str(cwd)) or GitFailed(
            f"git {' '.join(a for a in argv[1:] if not a.startswith('--git-dir') and not a.startswith('--work-tree'))[:120]}"
            f" failed {where}: {message or f'exit code {code}'}",
            fix="check the repository with `git status` and `git worktree list`; the run can be resumed",
        )
    text = out.decode(errors="replace")
    return text.rstrip("\n") if strip else text
