"""Putting the worktree back after the check of an attempt git's own path committed: by the paths one
`git status` lists, not by `reset --hard` and `clean`. Whatever the check did, the worktree must end
exactly at the target commit (the attempt when kept, its parent when not), and anything that makes the
listing untrustworthy (HEAD moved, the index touched) must send it to the reset in full."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, run_cli, write_goal

from goalloop import workspace as workspace_module
from goalloop.git_runner import GitFailed
from goalloop import worktree as worktree_module
from goalloop.workspace import RepoTarget, Workspace

FILES = {"knob.py": "X = 1\n", "other.txt": "other\n", "pkg/mod.py": "M = 1\n", "pkg/deep/leaf.txt": "leaf\n",
         "star*[ab]:name.txt": "odd\n", ".gitignore": "cache/\n*.log\n"}


class Spied(Workspace):
    """The real Workspace, recording the git verbs it runs."""

    verbs: list[str]

    def _run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        self.verbs.append(args[0])
        return super()._run(*args, input=input, strip=strip)


@pytest.fixture
def space(tmp_path: Path) -> tuple[Path, Spied, str]:
    repo = make_repo(tmp_path / "proj", FILES)
    base = git(repo, "rev-parse", "HEAD")
    Spied.verbs = []
    workspace = Spied.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    return workspace.worktree, workspace, base


def attempt(worktree: Path, workspace: Spied, base: str, iteration: int = 1) -> str:
    """A proposal that edits the knob, adds a file in a new folder and deletes one, committed by git's path."""
    (worktree / "knob.py").write_text(f"X = {iteration + 1}\n")
    (worktree / "added" / "sub").mkdir(parents=True, exist_ok=True)
    (worktree / "added" / "sub" / "new.py").write_text("NEW = 1\n")
    (worktree / "star*[ab]:name.txt").unlink()
    commit = workspace.commit_attempt(iteration, base, f"attempt {iteration}")
    assert commit.sha
    return commit.sha


def edit_tracked(wt: Path) -> None:
    (wt / "other.txt").write_text("edited by the check\n")


def delete_tracked(wt: Path) -> None:
    (wt / "pkg" / "mod.py").unlink()


def file_becomes_folder(wt: Path) -> None:
    (wt / "other.txt").unlink()
    (wt / "other.txt").mkdir()
    (wt / "other.txt" / "inside").write_text("x\n")


def folder_becomes_file(wt: Path) -> None:
    (wt / "pkg" / "deep" / "leaf.txt").unlink()
    (wt / "pkg" / "deep").rmdir()
    (wt / "pkg" / "deep").write_text("a file now\n")


def made_executable(wt: Path) -> None:
    (wt / "other.txt").chmod(0o755)


def new_files(wt: Path) -> None:
    (wt / "out" / "a" / "b").mkdir(parents=True)
    (wt / "out" / "a" / "b" / "result.json").write_text("{}\n")
    (wt / "pkg" / "stray.py").write_text("S = 1\n")
    (wt / "[ab].txt").write_text("a glob's name\n")


def same_size_and_time(wt: Path) -> None:
    other = wt / "other.txt"
    before = other.stat()
    with open(other, "r+") as stream:
        stream.write("OTHER")
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))


def edits_the_attempts_own_file(wt: Path) -> None:
    (wt / "knob.py").write_text("X = 99\n")
    (wt / "added" / "sub" / "new.py").unlink()


CHECKS: dict[str, Callable[[Path], None]] = {f.__name__: f for f in (
    edit_tracked, delete_tracked, file_becomes_folder, folder_becomes_file, made_executable, new_files,
    same_size_and_time, edits_the_attempts_own_file)}


def assert_exactly_at(workspace: Workspace, sha: str) -> None:
    worktree = workspace.worktree
    assert git(worktree, "rev-parse", "HEAD") == sha
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert workspace.holds_exactly(sha)
    for entry in git(worktree, "ls-tree", "-r", "-z", sha).split("\0"):
        if entry:
            mode, path = entry.split(" ", 1)[0], entry.split("\t", 1)[1]
            actual = os.lstat(worktree / path)
            assert stat.S_ISREG(actual.st_mode) and bool(actual.st_mode & stat.S_IXUSR) == (mode == "100755"), path


@pytest.mark.parametrize("kept", [False, True], ids=["discarded", "kept"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_whatever_the_check_did_the_worktree_ends_exactly_at_the_target_without_a_full_reset(
        space, check: str, kept: bool) -> None:
    worktree, workspace, base = space
    sha = attempt(worktree, workspace, base)
    CHECKS[check](worktree)
    Spied.verbs.clear()
    if kept:
        workspace.keep(sha, base)
    else:
        workspace.start_undo()
        workspace.reset_to(base)
    assert "reset" not in Spied.verbs and "clean" not in Spied.verbs, Spied.verbs
    assert_exactly_at(workspace, sha if kept else base)
    assert not (worktree / "added").exists() or kept


def test_a_symlink_the_check_puts_in_place_of_a_file_is_not_written_through(space, tmp_path: Path) -> None:
    worktree, workspace, base = space
    victim = tmp_path / "users-file.txt"
    victim.write_text("precious\n")
    attempt(worktree, workspace, base)
    (worktree / "knob.py").unlink()
    (worktree / "knob.py").symlink_to(victim)
    (worktree / "pkg" / "mod.py").unlink()
    (worktree / "pkg" / "mod.py").symlink_to(victim)
    workspace.reset_to(base)
    assert victim.read_text() == "precious\n"
    assert_exactly_at(workspace, base)


@pytest.mark.parametrize("rule_on", [True, False], ids=["rule on", "rule off"])
def test_what_the_check_changed_is_found_by_status_and_never_reaches_the_next_commit(
        space, monkeypatch: pytest.MonkeyPatch, rule_on: bool) -> None:
    """With the rule off (the undo restores only the attempt's own paths, without asking git what the check
    changed), the check's edit and its new file survive and are committed as part of the next attempt."""
    worktree, workspace, base = space
    if not rule_on:  # a listing of nothing in place of the status
        monkeypatch.setattr(workspace_module, "STATUS_ARGS", ("ls-files", "-z", "--", "no-such-path"))
    attempt(worktree, workspace, base, 1)
    edit_tracked(worktree)
    new_files(worktree)
    workspace.reset_to(base)
    second = attempt(worktree, workspace, base, 2)
    touched = set(git(worktree, "diff-tree", "-r", "--name-only", "--no-commit-id", base, second).splitlines())
    if rule_on:
        assert touched == {"knob.py", "added/sub/new.py", "star*[ab]:name.txt"}
    else:
        assert {"other.txt", "out/a/b/result.json", "pkg/stray.py"} <= touched, "the attack lands when the rule is off"


def test_an_empty_folder_the_check_made_stays_until_a_reset_in_full(space) -> None:
    """The limit the README states: git lists no empty folder, so the undo by paths leaves it."""
    worktree, workspace, base = space
    attempt(worktree, workspace, base, 1)
    (worktree / "empty" / "er").mkdir(parents=True)
    workspace.reset_to(base)
    assert (worktree / "empty" / "er").is_dir()
    attempt(worktree, workspace, base, 2)
    git(worktree, "add", "other.txt")  # touches the index: the next undo is in full
    workspace.reset_to(base)
    assert not (worktree / "empty").exists()


@pytest.mark.parametrize("how", ["stages a file", "commits", "checks out a branch", "sets a flag in the index"])
def test_a_check_that_moves_head_or_touches_the_index_is_undone_in_full(space, how: str) -> None:
    worktree, workspace, base = space
    sha = attempt(worktree, workspace, base)
    edit_tracked(worktree)
    if how == "stages a file":
        git(worktree, "add", "other.txt")
    elif how == "commits":
        git(worktree, "commit", "-q", "-am", "a check that commits")
    elif how == "checks out a branch":
        git(worktree, "checkout", "-q", "-b", "the-checks-branch")
    else:
        git(worktree, "update-index", "--assume-unchanged", "other.txt")
    Spied.verbs.clear()
    workspace.reset_to(base)
    assert "reset" in Spied.verbs
    assert git(worktree, "rev-parse", "HEAD") == base
    assert (worktree / "other.txt").read_text() == "other\n"
    if how == "checks out a branch":
        assert git(worktree, "rev-parse", "the-checks-branch") == sha, "the check's branch is left where it was"


@pytest.mark.parametrize("rule_on", [True, False], ids=["rule on", "rule off"])
@pytest.mark.parametrize("who", ["the attempt", "the check"])
def test_a_changed_ignore_rule_sends_the_undo_to_the_reset_in_full(
        space, monkeypatch: pytest.MonkeyPatch, who: str, rule_on: bool) -> None:
    """The attempt adds an ignore rule and its check writes a file it matches; or the check itself adds
    the rule. Status, run under that rule, calls the file ignored; once the rule is undone it is a plain
    new file, which the next attempt would commit. With the rule off, it does."""
    worktree, workspace, base = space
    if not rule_on:
        monkeypatch.setattr(workspace_module, "_holds_ignore_rules", lambda paths: False)
    rules = FILES[".gitignore"] + "*.tmp\n"
    if who == "the attempt":
        (worktree / ".gitignore").write_text(rules)
    attempt(worktree, workspace, base, 1)
    if who == "the check":
        (worktree / ".gitignore").write_text(rules)
    (worktree / "planted.tmp").write_text("written by the check\n")
    workspace.reset_to(base)
    second = attempt(worktree, workspace, base, 2)
    committed = set(git(worktree, "diff-tree", "-r", "--name-only", "--no-commit-id", base, second).splitlines())
    if rule_on:
        assert "planted.tmp" not in committed and not (worktree / "planted.tmp").exists()
    else:
        assert "planted.tmp" in committed, "the attack lands when the rule is off"


@pytest.mark.parametrize("rule_on", [True, False], ids=["rule on", "rule off"])
def test_core_ignorestat_in_the_users_config_does_not_hide_the_checks_edit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_on: bool) -> None:
    """With `core.ignoreStat`, git marks what it writes as unchanged and no longer sees edits to it:
    goalloop's own git turns it off (worktree.OWN_GIT_SETTINGS), else the proposal and the check's edit
    are both missed."""
    if not rule_on:
        monkeypatch.setattr(worktree_module, "OWN_GIT_SETTINGS", {})
    repo = make_repo(tmp_path / "proj", FILES)
    git(repo, "config", "core.ignoreStat", "true")
    base = git(repo, "rev-parse", "HEAD")
    workspace = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    worktree = workspace.worktree
    (worktree / "knob.py").write_text("X = 2\n")
    commit = workspace.commit_attempt(1, base, "attempt 1")
    (worktree / "other.txt").write_text("edited by the check\n")
    workspace.reset_to(base)
    if rule_on:
        assert commit.sha and [c.path for c in commit.changed] == ["knob.py"]
        assert (worktree / "other.txt").read_text() == "other\n" and (worktree / "knob.py").read_text() == "X = 1\n"
    else:
        assert commit.sha is None, "without the setting the proposal itself goes unseen"


def test_the_checks_ignored_files_in_a_new_folder_stay_and_are_not_blamed_on_the_next_proposer(space) -> None:
    worktree, workspace, base = space
    attempt(worktree, workspace, base, 1)
    (worktree / "logs" / "sub").mkdir(parents=True)
    (worktree / "logs" / "a.log").write_text("the check's log\n")
    (worktree / "logs" / "sub" / "b.log").write_text("another\n")
    workspace.reset_to(base)
    commit = workspace.commit_attempt(2, base, "attempt 2")
    assert commit.removed_ignored == []
    assert (worktree / "logs" / "a.log").exists() and (worktree / "logs" / "sub" / "b.log").exists()


def test_what_is_written_between_the_end_of_the_check_and_the_undo_is_undone_too(space) -> None:
    """A process that outlived the check (or anything else) writes while the ledger row is written: the
    undo lists the worktree when it runs, so those writes go too."""
    worktree, workspace, base = space
    attempt(worktree, workspace, base, 1)
    workspace.start_undo()
    (worktree / "late.txt").write_text("written after the check\n")
    edit_tracked(worktree)
    workspace.reset_to(base)
    assert_exactly_at(workspace, base)
    second = attempt(worktree, workspace, base, 2)
    committed = set(git(worktree, "diff-tree", "-r", "--name-only", "--no-commit-id", base, second).splitlines())
    assert committed == {"knob.py", "added/sub/new.py", "star*[ab]:name.txt"}


def test_a_new_file_that_cannot_be_deleted_stops_the_run_as_the_reset_in_full_does(space) -> None:
    """A folder the check made with a file that cannot be removed (immutable here; a 0555 folder for a user
    who is not root): the undo does not carry on as if it were gone; `git clean` fails and says so."""
    worktree, workspace, base = space
    attempt(worktree, workspace, base, 1)
    stuck = worktree / "out" / "ro" / "f.txt"
    stuck.parent.mkdir(parents=True)
    stuck.write_text("cannot be deleted\n")
    made = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {made.stderr.strip() or 'chattr is missing'}")
    try:
        with pytest.raises(GitFailed, match="out/ro/f.txt"):
            workspace.reset_to(base)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)


def test_a_user_setting_that_hides_untracked_files_from_status_does_not_hide_them_from_the_undo(
        space, tmp_path: Path) -> None:
    worktree, workspace, base = space
    git(tmp_path / "proj", "config", "status.showUntrackedFiles", "no")
    attempt(worktree, workspace, base)
    new_files(worktree)
    workspace.reset_to(base)
    assert not (worktree / "out").exists() and not (worktree / "pkg" / "stray.py").exists()
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""


def test_the_checks_ignored_files_stay_and_the_proposers_are_still_removed_before_the_next_check(space) -> None:
    """After an undo by paths, what the check left that git ignores (a cache) stays, as `git clean` leaves
    it; an ignored file the next proposer makes is removed before its check, as after a reset in full."""
    worktree, workspace, base = space
    attempt(worktree, workspace, base, 1)
    (worktree / "cache").mkdir()
    (worktree / "cache" / "c.bin").write_text("cached\n")
    (worktree / "pkg" / "run.log").write_text("log\n")
    (worktree / "scratch").mkdir()
    (worktree / "scratch" / "keep.txt").write_text("untracked\n")
    (worktree / "scratch" / "inside.log").write_text("ignored, in a folder that goes\n")
    Spied.verbs.clear()
    workspace.reset_to(base)
    assert "reset" not in Spied.verbs
    assert (worktree / "cache" / "c.bin").exists() and (worktree / "pkg" / "run.log").exists()
    assert not (worktree / "scratch").exists()
    (worktree / "knob.py").write_text("X = 5\n")
    (worktree / "answer.log").write_text("what the check would read\n")
    commit = workspace.commit_attempt(2, base, "attempt 2")
    assert "answer.log" in commit.removed_ignored and not (worktree / "answer.log").exists()
    assert (worktree / "cache" / "c.bin").exists() and (worktree / "pkg" / "run.log").exists()


COMMAND_PROPOSER = """\
import os, pathlib
n = int(os.environ["GOALLOOP_ITERATION"])
pathlib.Path("knob.py").write_text(f"X = {n + 1}\\n")
"""
CHECK_THAT_LEAVES_THINGS = """\
import os, pathlib
n = int(os.environ["GOALLOOP_ITERATION"])
print("stale:", os.path.exists("out/log.txt") or os.path.exists("pkg/left.py"))
print("dirty:", open("other.txt").read() != "other\\n" or not os.path.exists("pkg/mod.py"))
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/log.txt").write_text(str(n))
pathlib.Path("pkg/left.py").write_text("L = 1\\n")
pathlib.Path("cache").mkdir(exist_ok=True)
pathlib.Path("cache/c.bin").write_text(str(n))
if n % 2:
    pathlib.Path("other.txt").write_text("tampered\\n")
    os.remove("pkg/mod.py")
print("score:", n % 3)
"""


def test_a_command_run_whose_check_leaves_things_starts_every_check_clean_and_commits_only_the_proposal(
        tmp_path: Path) -> None:
    """Through the CLI: every attempt's commit holds the proposer's edit alone, every check starts from the
    kept state, and the run ends with the kept commit exactly in the worktree (the cache git ignores aside)."""
    repo = make_repo(tmp_path / "proj", {**FILES, "propose.py": COMMAND_PROPOSER, "check.py": CHECK_THAT_LEAVES_THINGS})
    goal = {"repo": str(repo), "check": {"run": f"{sys.executable} check.py", "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": 6},
            "proposer": {"kind": "command", "run": f"{sys.executable} propose.py"}}
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal)), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for n in range(1, 7):
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{n}")
        assert git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha) == "knob.py"
        seen = (run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").read_text()
        assert "stale: False" in seen and "dirty: False" in seen, f"attempt {n} started from a dirty worktree:\n{seen}"
    worktree = home / "workspaces" / run_dir.name
    kept = git(repo, "rev-parse", f"goalloop/{run_dir.name}")
    assert git(worktree, "rev-parse", "HEAD") == kept
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert (worktree / "cache" / "c.bin").exists()
