"""Every mutating git operation goalloop has, run with the run's worktree removed, from the user's checkout.

The process's current directory is the user's repository (as when `goalloop run` is started from its
root), their checkout is dirty, and the run's worktree has just been deleted. None of the operations may
reach the user's files, index, HEAD or branches: each raises WorktreeMissing. The first test shows the
attack is real: GitPython's `Git(missing_dir)`, which goalloop used to call, runs git in the current
directory, so `add --all` there stages the user's untracked file.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import git as gitpython
import pytest
from conftest import git, make_repo, run_cli, write_goal

from goalloop.git_runner import GitFailed, RepoGit, UnsafeGitCommand, WorktreeGit, WorktreeMissing, _execute
from goalloop.workspace import RepoTarget, Workspace


def user_state(repo: Path) -> dict:
    files = {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts and "workspaces" not in p.parts}
    return {
        "files": files,
        "index": (repo / ".git" / "index").read_bytes(),
        "HEAD": (repo / ".git" / "HEAD").read_text(),
        "branches": git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main",
                        "refs/heads/feature"),
        "reflog": (repo / ".git" / "logs" / "HEAD").read_text(),
    }


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "README.md": "readme\n"})
    git(repo, "branch", "feature")
    (repo / "README.md").write_text("edited, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "notes.txt").write_text("untracked\n")
    base = git(repo, "rev-parse", "HEAD")
    worktree = repo / "workspaces" / "r1"
    space = Workspace.create(RepoTarget(repo, base), worktree, "r1", tmp_path / "exclude")
    (worktree / "knob.py").write_text("X = 2\n")
    first = space.commit_attempt(1, base, "attempt 1")
    assert first.sha
    space.reset_to(base)
    monkeypatch.chdir(repo)  # where git lands when it is not told where to go
    return repo, worktree, space, base, first.sha


def test_the_old_unguarded_runner_reaches_the_user_checkout(setup) -> None:
    repo, worktree, _, _, _ = setup
    shutil.rmtree(worktree)
    before = user_state(repo)
    gitpython.Git(str(worktree)).execute(["git", "add", "--all"])
    assert user_state(repo)["index"] != before["index"], "GitPython ran `add --all` in the user's checkout"
    assert "A  notes.txt" in git(repo, "status", "--porcelain")


MUTATIONS = {
    "commit an attempt": lambda space, base, sha: space.commit_attempt(2, base, "attempt 2"),
    "save an unrecorded proposal": lambda space, base, sha: space.save_unrecorded(3, base, "interrupted"),
    "keep": lambda space, base, sha: space.keep(sha, base),
    "reset to the kept commit": lambda space, base, sha: space.reset_to(base),
    "detach HEAD": lambda space, base, sha: space._detach(sha),
    "raw reset --hard": lambda space, base, sha: space._run("reset", "--quiet", "--hard", sha),
    "raw reset --mixed": lambda space, base, sha: space._run("reset", "--quiet", "--mixed", sha),
    "raw add --all": lambda space, base, sha: space._run("add", "--all"),
    "raw clean": lambda space, base, sha: space._run("clean", "-d", "--force", "--force", "--quiet"),
    "raw update-ref HEAD": lambda space, base, sha: space._run("update-ref", "--stdin",
                                                                input=f"option no-deref\nupdate HEAD {sha}\n"),
    "raw update-index": lambda space, base, sha: space._run("update-index", "--no-skip-worktree", "--", "knob.py"),
    "raw write-tree": lambda space, base, sha: space._run("write-tree"),
    "commit a known change": lambda space, base, sha: space.commit_known(2, base, "attempt 2", {"knob.py": "X = 3\n"}),
    "kept update-ref process": lambda space, base, sha: space._git.update_refs(f"option no-deref\nupdate HEAD {sha}\n"),
    "start a listing": lambda space, base, sha: space._git.start("ls-files", "--modified", "--others"),
}


@pytest.mark.parametrize("operation", sorted(MUTATIONS))
def test_no_mutating_operation_reaches_the_user_repo_once_the_worktree_is_gone(setup, operation: str) -> None:
    repo, worktree, space, base, sha = setup
    shutil.rmtree(worktree)
    before = user_state(repo)
    with pytest.raises(WorktreeMissing, match="was deleted during the run; nothing in your checkout was touched"):
        MUTATIONS[operation](space, base, sha)
    assert user_state(repo) == before
    assert not (repo / ".git" / "ORIG_HEAD").exists()


def test_a_worktree_replaced_by_another_checkout_is_refused(setup, tmp_path: Path) -> None:
    """A folder at the worktree's path that is not that worktree (here: a clone) is never written."""
    repo, worktree, space, base, sha = setup
    shutil.rmtree(worktree)
    git(repo.parent, "clone", "-q", str(repo), str(worktree))
    (worktree / "mine.txt").write_text("someone's work\n")
    with pytest.raises(WorktreeMissing, match="not a linked worktree"):
        space.reset_to(base)
    assert (worktree / "mine.txt").exists()


def test_a_worktree_checked_once_is_checked_again_when_its_git_file_is_rewritten_in_place(setup) -> None:
    """The worktree was checked by the commands before; its `.git` file, rewritten in place (the same file)
    to name the user's own git directory, is noticed at once: git never runs on the user's repository."""
    repo, worktree, space, base, sha = setup
    space.require()
    dotgit = worktree / ".git"
    inode = dotgit.stat().st_ino
    with open(dotgit, "r+", encoding="utf-8") as stream:
        stream.truncate(0)
        stream.write(f"gitdir: {repo / '.git'}\n")
    assert dotgit.stat().st_ino == inode
    before = user_state(repo)
    with pytest.raises(WorktreeMissing, match="belongs to another repository"):
        space.reset_to(base)
    assert user_state(repo) == before


def _rewrite_keeping_size_and_mtime(path: Path, text: str) -> None:
    """Rewrite `path` in place with `text` (padded to its size) and put its modification time back."""
    old = path.stat()
    padded = text.ljust(old.st_size - 1) + "\n"
    assert len(padded) == old.st_size
    with open(path, "r+", encoding="utf-8") as stream:
        stream.write(padded)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)


@pytest.mark.parametrize("text_read", [True, False], ids=["just-changed", "changed-long-ago"])
def test_a_git_file_rewritten_to_the_same_size_and_time_is_noticed(setup, monkeypatch, text_read: bool) -> None:
    """A `.git` file rewritten in place to the same size, its modification time put back, naming another
    git directory: noticed by its text while it changed recently, else by its change time, which no
    program can put back. With neither compared (the attack shown working first), it goes unnoticed."""
    import goalloop.git_runner as git_runner

    repo, worktree, space, base, sha = setup
    dotgit = worktree / ".git"
    original = dotgit.read_text()
    other = original.strip()[:-1] + "X"  # another worktree's metadata, a name of the same length
    runner = space._git
    real_identity = WorktreeGit._identity

    def blind(self, gitdir: Path) -> tuple:
        return tuple(git_runner._file_id(os.stat(p)) for p in (self.worktree, self.worktree / ".git", gitdir / "gitdir"))

    monkeypatch.setattr(WorktreeGit, "_identity", blind)
    runner._verified = None
    checked = runner.gitdir()
    _rewrite_keeping_size_and_mtime(dotgit, other)
    assert runner.gitdir() == checked  # unnoticed: git would be told the old directory for a foreign .git

    _rewrite_keeping_size_and_mtime(dotgit, original.strip())
    monkeypatch.setattr(WorktreeGit, "_identity", real_identity)
    if not text_read:
        monkeypatch.setattr(git_runner, "RECENT_CHANGE_NS", -10**12)  # as if every file changed long ago
    runner._verified = None
    runner.gitdir()
    if not text_read:
        time.sleep(0.05)  # long ago to the kernel's clock, which stamps change times every 1-10 ms
    _rewrite_keeping_size_and_mtime(dotgit, other)
    with pytest.raises(WorktreeMissing):
        runner.gitdir()


def test_refs_other_than_the_runs_are_refused_where_git_is_called(setup) -> None:
    repo, worktree, space, base, sha = setup
    before = user_state(repo)
    repo_git = RepoGit(repo, "r1")
    refused = [
        lambda: repo_git.run("update-ref", "refs/heads/main", sha),
        lambda: repo_git.run("update-ref", "-m", "x", "refs/heads/feature", sha),
        lambda: repo_git.run("update-ref", "HEAD", sha),
        lambda: repo_git.run("update-ref", "--no-deref", "HEAD", sha),
        lambda: repo_git.run("update-ref", "--stdin", input=f"update refs/heads/main {sha}\n"),
        lambda: repo_git.run("update-ref", "--stdin", input=f"create refs/goalloop/r1/9 {sha}\ndelete refs/heads/feature\n"),
        lambda: repo_git.run("update-ref", "refs/goalloop/r10/1", sha),
        lambda: repo_git.run("branch", "-f", "main", sha),
        lambda: repo_git.run("branch", "main2", sha),
        lambda: repo_git.run("reset", "--hard", sha),
        lambda: repo_git.run("clean", "-fd"),
        lambda: repo_git.run("add", "--all"),
        lambda: repo_git.run("checkout", "feature"),
        lambda: repo_git.run("config", "user.name", "x"),
        lambda: repo_git.run("worktree", "prune"),
        lambda: space._run("update-ref", "refs/heads/main", sha),
        lambda: space._run("update-ref", "HEAD", sha),  # without no-deref: would follow HEAD to a branch
        lambda: space._run("checkout", "feature"),
        lambda: space._run("commit", "-m", "x"),
        lambda: space._git.update_refs(f"update refs/heads/main {sha}\n"),
        lambda: space._git.update_refs(f"option no-deref\nupdate HEAD {sha}\nupdate refs/heads/feature {sha}\n"),
        lambda: space._git.update_refs(f"update HEAD {sha}\n"),
        lambda: space._git.start("reset", "--hard", sha),
    ]
    for attempt in refused:
        with pytest.raises(UnsafeGitCommand):
            attempt()
    assert user_state(repo) == before
    repo_git.run("update-ref", "refs/goalloop/r1/9", sha)  # the run's own refs are fine
    assert git(repo, "rev-parse", "refs/goalloop/r1/9") == sha


def test_a_branch_a_proposer_checked_out_in_the_worktree_is_never_moved(setup) -> None:
    """A proposer that runs `git checkout -b` (or switches to the user's branch) in its worktree: the reset
    that reverts the attempt detaches HEAD instead of moving that branch."""
    repo, worktree, space, base, sha = setup
    git(worktree, "checkout", "-q", "feature")
    (worktree / "knob.py").write_text("X = 7\n")
    with pytest.raises(UnsafeGitCommand):
        WorktreeGit(RepoGit(repo, "r1"), worktree).run("reset", "--hard", sha)
    space.reset_to(sha)
    assert git(repo, "rev-parse", "refs/heads/feature") == base
    assert git(worktree, "rev-parse", "HEAD") == sha
    git(worktree, "checkout", "-q", "feature")
    (worktree / "knob.py").write_text("X = 8\n")
    git(worktree, "commit", "-qam", "the proposer's own commit, on feature")
    moved = git(repo, "rev-parse", "refs/heads/feature")
    commit = space.commit_attempt(4, base, "attempt 4")
    assert commit.sha and git(repo, "rev-parse", "refs/heads/feature") == moved, "goalloop moved it no further"


def test_git_redirecting_variables_are_ignored(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIT_INDEX_FILE / GIT_DIR / GIT_WORK_TREE in goalloop's environment (run from a git hook, say) would
    point the worktree's `add --all` at the user's index."""
    repo, worktree, space, base, sha = setup
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    before = user_state(repo)
    fresh = Workspace(repo, worktree, "r1", space._exclude_file)
    (worktree / "knob.py").write_text("X = 9\n")
    assert fresh.commit_attempt(5, base, "attempt 5").sha
    fresh.reset_to(base)
    assert user_state(repo) == before


def test_a_failing_git_command_says_where_and_what(setup) -> None:
    _, worktree, space, _, _ = setup
    with pytest.raises(GitFailed, match=f"git reset --quiet --hard nosuchcommit failed in {worktree}"):
        space._run("reset", "--quiet", "--hard", "nosuchcommit")


SLOW_READER = """\
import sys, threading, time
time.sleep(0.5)  # the Ctrl-C lands while goalloop is still writing the input
got = []
reader = threading.Thread(target=lambda: got.append(len(sys.stdin.buffer.read())), daemon=True)
reader.start()
reader.join(10)
open(sys.argv[1], "w").write(str(got[0]) if got else "stdin never closed")
"""


def test_a_ctrl_c_while_git_reads_its_input_is_delivered_after_git_got_all_of_it(tmp_path: Path) -> None:
    """A `git update-ref --stdin` must get its whole script even when Ctrl-C lands mid-write: a retried
    `communicate` stops writing, and git then either waits forever or commits half a transaction."""
    report = tmp_path / "read.txt"
    script = "x" * 4_000_000  # far more than a pipe holds, so the write is under way for the whole sleep
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        _execute([sys.executable, "-c", SLOW_READER, str(report)], tmp_path, dict(os.environ), script, True, "here")
    assert report.read_text() == str(len(script))


def test_a_run_removed_for_a_bad_check_leaves_the_users_unmounted_worktree_known_to_git(tmp_path: Path) -> None:
    """A check that cannot run is exit 2 and its empty run is removed whole. The user's own worktree on a
    drive that is not mounted right now must stay registered: `git worktree prune` would forget it."""
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    away = tmp_path / "usb" / "feature"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(away))
    shutil.rmtree(tmp_path / "usb")  # the drive is unplugged
    goal = write_goal(tmp_path / "g.yaml", {"repo": str(repo), "check": {"run": "no-such-checker-xyz"},
                                            "proposer": {"kind": "command", "run": "true"}})
    result = run_cli("run", str(goal), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert not list((tmp_path / "home" / "runs").glob("g-*")), "the empty run is removed"
    assert git(repo, "for-each-ref", "refs/goalloop/", "refs/heads/goalloop/") == "", "its branch and refs too"
    listed = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {away}" in listed, "the user's worktree was pruned"
    assert "goalloop" not in listed.replace(str(tmp_path), ""), listed


def test_a_check_started_from_a_git_hook_cannot_reach_the_users_index(tmp_path: Path) -> None:
    """Started from a hook, goalloop inherits GIT_DIR and GIT_INDEX_FILE pointing at the user's repository:
    the check's own `git rm --cached` would then empty the user's index. The check never sees them."""
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n", "b.py": "y = 2\n"})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "git rm -q --cached b.py; echo score: 1", "metric": r"score: (\S+)"},
        "budget": {"iterations": 1}, "proposer": {"kind": "command", "run": "echo 'x = 2' > a.py"}})
    hook_env = {"GIT_DIR": str(repo / ".git"), "GIT_INDEX_FILE": str(repo / ".git" / "index"),
                "GIT_WORK_TREE": str(repo)}
    result = run_cli("run", str(goal), "--home", str(tmp_path / "home"), cwd=tmp_path, env=hook_env)
    assert result.exit_code in (0, 1), result.output
    assert git(repo, "status", "--porcelain") == "", "the check changed the user's index"



def test_the_report_and_init_started_from_a_git_hook_read_the_runs_repository(tmp_path: Path, monkeypatch) -> None:
    """A hook of another repository runs goalloop with GIT_DIR set: the report's net diff is still the run's
    and `init` still reads the layout of the repository it is given (with the variable, `git diff` looked
    for the run's commits in the hook's repository and found none, and `ls-files` listed the hook's files)."""
    from goalloop.ledger import read_run
    from goalloop.report.data import net_diff
    from goalloop.starter import read_layout

    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n",
                                         "tests/test_knob.py": "def test_x():\n    pass\n", "pyproject.toml": ""})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 2}, "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"description": "two", "files": {"knob.py": "X = 2\n"}}]}})
    home = tmp_path / "home"
    assert run_cli("run", str(goal), "--home", str(home), cwd=tmp_path).exit_code == 0
    (run_json,) = home.glob("runs/*/run.json")
    layout = read_layout(repo)
    decoy = make_repo(tmp_path / "decoy", {"d.txt": "d\n"})
    monkeypatch.setenv("GIT_DIR", str(decoy / ".git"))
    diff = net_diff(read_run(run_json.parent))
    assert diff is not None and "+X = 2" in diff[1]
    assert read_layout(repo) == layout

