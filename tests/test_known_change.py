"""The fast path for attempts whose changed files the proposer knows (the search proposer's): objects written
in-process, the attempt ref through the kept `update-ref` process, the undo by a listing of what the check
changed. It must record exactly what git's own path records, and undo exactly what a check leaves."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop.git_runner import GitFailed
from goalloop.known_change import KnownChanges
from goalloop.workspace import RepoTarget, Workspace

KNOB = "cfg/sub/knob.py"
SCORE = f"""\
import os, re
text = open({KNOB!r}).read()
dot_g = "." + "g" + "it"  # read HEAD as a file, without the word that turns the fast path off
gitdir = open(dot_g).read().split(":", 1)[1].strip()
print("head:", open(os.path.join(gitdir, "HEAD")).read().strip())
print("score:", re.search(r"^X = (\\S+)$", text, re.M).group(1))
"""
SCORE_WITH_GIT = f"""\
import re, subprocess
print("head:", subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
print("score:", re.search(r"^X = (\\S+)$", open({KNOB!r}).read(), re.M).group(1))
"""


def search_goal(repo: Path, iterations: int, check: str = "score.py") -> dict:
    return {"repo": str(repo), "check": {"run": f"{sys.executable} {check}", "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": iterations},
            "proposer": {"kind": "search", "sampler": "random", "seed": 3,
                         "params": {"x": {"file": KNOB, "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}}}


def tree_listing(repo: Path, commit: str) -> list[bytes]:
    listing = subprocess.run(["git", "ls-tree", "-r", "-z", "--full-tree", commit], cwd=repo, check=True,
                             capture_output=True).stdout
    return [entry for entry in listing.split(b"\0") if entry]


def test_a_search_run_records_every_attempt_exactly_as_git_would(tmp_path: Path) -> None:
    """In a packed repository, with the knob two folders down and a file whose name is not UTF-8 beside it:
    each attempt's commit changes the knob's value and nothing else (every other tree entry byte for byte),
    its diff.patch is git's own diff of it, fsck finds nothing wrong, and the check measured the value the
    attempt records. HEAD stays at the kept commit while the check runs (the fast path's one difference)."""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.5\n", "score.py": SCORE, "tool.sh": "#!/bin/sh\necho tool\n"})
    (repo / "tool.sh").chmod(0o755)
    with open(os.path.join(os.fsencode(repo / "cfg" / "sub"), b"caf\xe9.txt"), "wb") as odd:
        odd.write(b"a name that is not UTF-8\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd name, executable")
    git(repo, "gc", "-q", "--prune=now")
    assert not list((repo / ".git" / "objects").glob("??/*")), "every object is packed"
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", search_goal(repo, 8))), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    run_id = run_dir.name
    fsck = subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0 and not fsck.stdout.strip(), fsck.stdout + fsck.stderr
    rows = {int(r["iteration"]): r for r in results_rows(run_dir)}
    kept_before = git(repo, "rev-parse", rows[0]["commit"])
    for n in range(1, 9):
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_id}/{n}")
        assert sha.startswith(rows[n]["commit"])
        assert git(repo, "rev-parse", f"{sha}^") == kept_before
        assert git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha) == KNOB
        before, after = tree_listing(repo, f"{sha}^"), tree_listing(repo, sha)
        assert [e for e in after if not e.endswith(KNOB.encode())] == [e for e in before if not e.endswith(KNOB.encode())]
        value = rows[n]["description"].removeprefix("x=")
        assert git(repo, "show", f"{sha}:{KNOB}") == f"X = {value}"
        assert float(rows[n]["metric"]) == float(value), "the check measured the attempt's value"
        patch = (run_dir / "attempts" / f"{n:04d}" / "diff.patch").read_text()
        assert patch == subprocess.run(["git", "diff", f"{sha}^", sha], cwd=repo, capture_output=True,
                                       text=True, check=True).stdout
        assert git(repo, "log", "-1", "--format=%an <%ae> | %cn <%ce>", sha) == \
            "goalloop <goalloop@localhost> | goalloop <goalloop@localhost>"
        seen = (run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").read_text()
        assert f"head: {kept_before}" in seen
        if rows[n]["verdict"] == "keep":
            kept_before = sha
    worktree = home / "workspaces" / run_id
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(worktree, "rev-parse", "HEAD") == git(repo, "rev-parse", f"goalloop/{run_id}") == kept_before


def test_a_check_that_mentions_git_sees_each_attempt_as_head(tmp_path: Path) -> None:
    """A check whose script runs git may look at HEAD, the index or a stash: for it the fast path is off,
    and HEAD is the attempt's commit while it runs, as with every other proposer."""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.5\n", "score.py": SCORE_WITH_GIT})
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", search_goal(repo, 4))), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for n in range(1, 5):
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{n}")
        assert f"head: {sha}" in (run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").read_text()


CHECK_THAT_LEAVES_THINGS = f"""\
import os, pathlib, re
n = int(os.environ["GOALLOOP_ITERATION"])
print("stale:", os.path.exists("out/log.txt") or os.path.exists("deep/er/x"))
print("dirty:", "tampered" in open("data.txt").read())
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/log.txt").write_text(str(n))
pathlib.Path("deep/er").mkdir(parents=True, exist_ok=True)
pathlib.Path("deep/er/x").write_text("x")
pathlib.Path("cache").mkdir(exist_ok=True)
pathlib.Path("cache/c.bin").write_text(str(n))
if n % 2:
    with open("data.txt", "a") as data:
        data.write("tampered\\n")
print("score:", re.search(r"^X = (\\S+)$", open({KNOB!r}).read(), re.M).group(1))
"""


def test_what_a_check_leaves_is_undone_and_never_reaches_a_commit(tmp_path: Path) -> None:
    """A check that writes untracked files (in new folders), a file git ignores, and on odd attempts edits
    a tracked file: no commit ever holds the check's edits, every check starts from the kept state (no
    leftover, no edit), and the run ends with a clean worktree; the ignored file stays, as `git clean -d`
    leaves it."""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.5\n", "check.py": CHECK_THAT_LEAVES_THINGS,
                                          "data.txt": "data\n", ".gitignore": "cache/\n"})
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", search_goal(repo, 8, "check.py"))), "--home",
                     str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for n in range(1, 9):
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{n}")
        assert git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha) == KNOB
        seen = (run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").read_text()
        assert "stale: False" in seen and "dirty: False" in seen, f"attempt {n} started from a dirty worktree:\n{seen}"
    worktree = home / "workspaces" / run_dir.name
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert (worktree / "data.txt").read_text() == "data\n"
    assert not (worktree / "out").exists() and not (worktree / "deep").exists()
    assert (worktree / "cache" / "c.bin").exists()


@pytest.fixture
def space(tmp_path: Path) -> tuple[Path, Path, Workspace, str]:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "other.txt": "other\n"})
    base = git(repo, "rev-parse", "HEAD")
    worktree = tmp_path / "wt"
    workspace = Workspace.create(RepoTarget(repo, base), worktree, "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    return repo, worktree, workspace, base


def propose(worktree: Path, workspace: Workspace, base: str, iteration: int, text: str) -> str:
    (worktree / "knob.py").write_text(text)
    commit = workspace.commit_known(iteration, base, f"attempt {iteration}", {"knob.py": text})
    assert commit is not None and commit.sha, "the fast path was taken"
    return commit.sha


@pytest.mark.parametrize("rule_on", [True, False], ids=["rule on", "rule off"])
def test_a_check_that_swaps_the_knob_for_a_symlink_cannot_make_the_undo_write_outside_the_worktree(
        space, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_on: bool) -> None:
    """The check replaces the knob file with a symlink to a file of the user's: putting the knob's old bytes
    back must not write through it. With the rule off (the undo trusts the path), the write lands in the
    user's file: the attack is real."""
    repo, worktree, workspace, base = space
    victim = tmp_path / "users-file.txt"
    victim.write_text("precious\n")
    if not rule_on:
        monkeypatch.setattr(KnownChanges, "_plain_file", lambda self, path, executable: True)
    propose(worktree, workspace, base, 1, "X = 2\n")
    (worktree / "knob.py").unlink()
    (worktree / "knob.py").symlink_to(victim)
    workspace.start_undo()
    workspace.reset_to(base)
    if rule_on:
        assert victim.read_text() == "precious\n"
        assert not (worktree / "knob.py").is_symlink() and (worktree / "knob.py").read_text() == "X = 1\n"
        assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    else:
        assert victim.read_text() == "X = 1\n", "without the rule the undo writes through the symlink"


def test_the_fast_path_is_refused_unless_goalloop_left_the_worktree_clean_at_the_parent(space) -> None:
    """Not after another commit without a reset, not with HEAD moved, not with the index touched, not for
    a file that is a symlink at the parent: the caller then commits through git's own path."""
    repo, worktree, workspace, base = space
    (worktree / "knob.py").write_text("X = 2\n")
    assert workspace.commit_attempt(1, base, "attempt 1").sha
    assert workspace.commit_known(2, base, "attempt 2", {"knob.py": "X = 3\n"}) is None, "not reset since"
    workspace.reset_to(base)
    git(worktree, "update-index", "--assume-unchanged", "other.txt")  # a flag that hides edits from git
    assert workspace.commit_known(2, base, "attempt 2", {"knob.py": "X = 3\n"}) is None, "index touched"
    workspace.reset_to(base)
    link = make_repo(repo.parent / "linked", {"target.txt": "t\n"})
    (link / "knob.py").symlink_to("target.txt")
    git(link, "add", "-A")
    git(link, "commit", "-q", "-m", "a symlink knob")
    linked_base = git(link, "rev-parse", "HEAD")
    linked = Workspace.create(RepoTarget(link, linked_base), repo.parent / "wt-linked", "r2", repo.parent / "ex2")
    linked.reset_to(linked_base)
    assert linked.commit_known(1, linked_base, "attempt 1", {"knob.py": "X = 3\n"}) is None, "a symlink at the parent"


def test_a_check_that_moves_head_or_edits_a_tracked_file_is_undone_in_full(space) -> None:
    repo, worktree, workspace, base = space
    propose(worktree, workspace, base, 1, "X = 2\n")
    git(worktree, "commit", "-q", "-am", "a check that commits")  # moves HEAD and the index
    workspace.start_undo()
    workspace.reset_to(base)
    assert git(worktree, "rev-parse", "HEAD") == base
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    propose(worktree, workspace, base, 2, "X = 3\n")
    (worktree / "other.txt").write_text("edited by the check\n")
    (worktree / "new.txt").write_text("made by the check\n")
    workspace.start_undo()
    workspace.reset_to(base)
    assert (worktree / "other.txt").read_text() == "other\n" and not (worktree / "new.txt").exists()
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert workspace.commit_known(3, base, "attempt 3", {"knob.py": "X = 4\n"}) is not None, "clean again"


def test_a_ref_transaction_git_refuses_raises_and_the_kept_process_recovers(space) -> None:
    repo, worktree, workspace, base = space
    sha = propose(worktree, workspace, base, 1, "X = 2\n")
    workspace.reset_to(base)
    with pytest.raises(GitFailed, match="refs/goalloop/r1/1"):
        workspace._git.update_refs(f"create refs/goalloop/r1/1 {sha}\n")  # exists already
    workspace._git.update_refs(f"create refs/goalloop/r1/7 {sha}\n")
    assert git(repo, "rev-parse", "refs/goalloop/r1/7") == sha
    assert re.fullmatch(r"[0-9a-f]{40}", git(repo, "rev-parse", "refs/goalloop/r1/1"))


def test_an_edit_that_puts_back_size_and_time_is_seen_and_an_empty_folder_stays(space) -> None:
    """An edit of a tracked file that restores its size and mtime still moves its ctime, so it is undone;
    an empty folder the check made is not listed by git, and stays until the next full reset (the limit
    the README states)."""
    repo, worktree, workspace, base = space
    propose(worktree, workspace, base, 1, "X = 2\n")
    other = worktree / "other.txt"
    before = other.stat()
    with open(other, "r+") as stream:
        stream.write("OTHER")
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    workspace.start_undo()
    workspace.reset_to(base)
    assert other.read_text() == "other\n"
    propose(worktree, workspace, base, 2, "X = 3\n")
    (worktree / "empty").mkdir()
    workspace.start_undo()
    workspace.reset_to(base)
    assert (worktree / "empty").is_dir() and (worktree / "knob.py").read_text() == "X = 1\n"
    (worktree / "knob.py").write_text("X = 4\n")
    assert workspace.commit_attempt(3, base, "attempt 3").sha  # git's own path, undone by paths too
    workspace.reset_to(base)
    assert (worktree / "empty").is_dir()
    (worktree / "knob.py").write_text("X = 5\n")
    assert workspace.commit_attempt(4, base, "attempt 4").sha
    git(worktree, "commit", "-q", "--allow-empty", "-m", "a check that commits")
    workspace.reset_to(base)  # HEAD moved: in full
    assert not (worktree / "empty").exists()


SLOW_CHECK = f"""\
import random, re, time
time.sleep(random.random() * 0.15)
print("score:", re.search(r"^X = (\\S+)$", open({KNOB!r}).read(), re.M).group(1))
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_a_search_run_killed_at_random_moments_is_resumed_to_the_end_and_git_agrees(tmp_path: Path, seed: int) -> None:
    """SIGKILLs land in sampling, in the in-process commit, with the ref transaction still in the pipe, in
    the check and in the undo; each resume finishes the run, and then the ledger and git agree: a row an
    attempt, every commit its ref changing only the knob to the row's value, the worktree clean at the
    branch."""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.5\n", "slow.py": SLOW_CHECK})
    goal = write_goal(tmp_path / "g.yaml", search_goal(repo, 12, "slow.py"))
    home = tmp_path / "home"
    rng = random.Random(seed)

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "goalloop", *args, "--home", str(home), "-q"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    proc, kills = start("run", str(goal)), 0
    while True:
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.5) if kills < 6 else 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if proc.returncode in (0, 1):
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        proc = start("resume") if list((home / "runs").glob("*/run.json")) else start("run", str(goal))
        time.sleep(0.01)
    assert kills >= 1
    run_dir = only_run_dir(home)
    rows = results_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(13))
    refs = dict(line.split()[::-1] for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)",
                                                    f"refs/goalloop/{run_dir.name}/").splitlines())
    for row in rows[1:]:
        if not row["commit"]:
            continue
        sha = refs[f"refs/goalloop/{run_dir.name}/{row['iteration']}"]
        assert sha.startswith(row["commit"])
        assert git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha) == KNOB
        if row["description"].startswith("x="):
            assert git(repo, "show", f"{sha}:{KNOB}") == f"X = {row['description'][2:]}"
    assert set(int(name.rsplit("/", 1)[1]) for name in refs if "/unjudged/" not in name) <= set(range(1, 13))
    worktree = home / "workspaces" / run_dir.name
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(worktree, "rev-parse", "HEAD") == git(repo, "rev-parse", f"goalloop/{run_dir.name}")
    fsck = subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_the_attempt_written_while_its_check_runs_is_in_git_however_the_check_ends(space, monkeypatch) -> None:
    """The objects and the ref are written in a thread joined when the judging ends: after a Ctrl-C in the
    check they are there; a failure to write them (a full disk) is raised once the check is over."""
    repo, worktree, workspace, base = space
    sha = propose(worktree, workspace, base, 1, "X = 2\n")
    with pytest.raises(KeyboardInterrupt):
        with workspace.writing_meanwhile():
            raise KeyboardInterrupt
    assert git(repo, "rev-parse", "refs/goalloop/r1/1") == sha
    assert git(repo, "cat-file", "-t", sha) == "commit"
    workspace.reset_to(base)

    def full(self, objects):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("goalloop.git_objects.ObjectWriter.store", full)
    propose(worktree, workspace, base, 2, "X = 3\n")
    ran = []
    with pytest.raises(OSError, match="No space left"):
        with workspace.writing_meanwhile():
            ran.append("the check")
    assert ran == ["the check"]


@pytest.mark.parametrize("setting", ["attributes", "autocrlf"])
def test_a_file_git_would_convert_on_add_is_committed_through_git(tmp_path: Path, setting: str) -> None:
    """A clean filter or an end-of-line conversion makes git store other bytes than the worktree's: the
    fast path, which stores the worktree's, is not taken for such a file (git's own path converts it)."""
    files = {"knob.py": "X = 1\n"}
    if setting == "attributes":
        files[".gitattributes"] = "*.py text eol=crlf\n"
    repo = make_repo(tmp_path / "proj", files)
    if setting == "autocrlf":
        git(repo, "config", "core.autocrlf", "input")
    base = git(repo, "rev-parse", "HEAD")
    worktree = tmp_path / "wt"
    workspace = Workspace.create(RepoTarget(repo, base), worktree, "r1", tmp_path / "exclude")
    workspace.reset_to(base)
    (worktree / "knob.py").write_text("X = 2\r\n")
    assert workspace.commit_known(1, base, "attempt 1", {"knob.py": "X = 2\r\n"}) is None
    commit = workspace.commit_attempt(1, base, "attempt 1")
    stored = subprocess.run(["git", "cat-file", "blob", f"{commit.sha}:knob.py"], cwd=repo, capture_output=True).stdout
    assert stored == b"X = 2\n", "git stored it converted, as the fast path would not have"


def test_the_objects_of_the_parent_are_read_once_for_a_run_of_discards(tmp_path: Path, monkeypatch) -> None:
    """Commits made one after the other on the same parent read its commit, trees and blob from the
    database the first time only, and make the same objects as a writer that reads them every time."""
    from goalloop import git_objects
    from goalloop.git_objects import ObjectWriter
    from goalloop.worktree import COMMIT_IDENTITY

    repo = make_repo(tmp_path / "repo", {"src/knob.py": "X = 1\n", "README.md": "r\n"})
    parent = git(repo, "rev-parse", "HEAD")
    writer = ObjectWriter(repo / ".git", COMMIT_IDENTITY)
    reads: list[bytes] = []
    real_stream = writer._db.stream
    monkeypatch.setattr(writer._db, "stream", lambda sha: (reads.append(sha), real_stream(sha))[1])
    made = [writer.commit_files(parent, {"src/knob.py": f"X = {n}\n".encode()}, "m") for n in range(2, 6)]
    assert len(reads) == len(set(reads)) == 4  # the commit, the root tree, src/, the blob: once each

    monkeypatch.setattr(git_objects, "READ_CACHE_BYTES", 0)
    fresh = ObjectWriter(repo / ".git", COMMIT_IDENTITY)
    again = [fresh.commit_files(parent, {"src/knob.py": f"X = {n}\n".encode()}, "m") for n in range(2, 6)]
    def trees_and_blobs(commits):  # the commits themselves carry the second they were made
        return [[o for o in c.objects if o[0] != b"commit"] for c in commits]

    assert trees_and_blobs(made) == trees_and_blobs(again) and [m.old for m in made] == [a.old for a in again]
