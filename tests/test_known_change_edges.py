"""The search fast path where repositories and runs are unusual: a `git gc` mid-run, a clean filter that keeps
a secret out of the repository, lines git does not split where Python would, a Ctrl-C or a kill -9 while the
attempt's ref is in git's hands or its check runs, parallel rounds with a tree strategy, repeats and a
holdout, the sandbox, SHA-256 object names, and the repository settings git converts files under. In each,
the record must be what git's own path would make, and every check must measure its own attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop.git_runner import GitFailed
from goalloop.workspace import RepoTarget, Workspace

KNOB = "knob.py"


def goal(repo: Path, iterations: int, check: str, **extra) -> dict:
    g = {"repo": str(repo), "check": {"run": f"{sys.executable} {check}", "metric": r"^score: (\S+)"},
         "target": {"direction": "maximize"}, "budget": {"iterations": iterations},
         "proposer": {"kind": "search", "sampler": "random", "seed": 3,
                      "params": {"x": {"file": KNOB, "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}}}
    g.update(extra)
    return g


GC_CHECK = """\
import os, re, subprocess
if os.environ["GOALLOOP_ITERATION"] == "3":
    subprocess.run(["g" + "it", "gc", "-q"], check=True)  # spelt so: a check naming the tool gets no fast path
gitdir = open("." + "g" + "it").read().split(":", 1)[1].strip()
print("head:", open(os.path.join(gitdir, "HEAD")).read().strip())
print("score:", re.search(r"^X = (\\S+)$", open("knob.py").read(), re.M).group(1))
"""


def test_a_git_gc_during_the_run_does_not_stop_it(tmp_path: Path) -> None:
    """The check packs the repository at attempt 3 (as `git maintenance` or an auto gc would): the objects
    the fast path read are then in a new pack, and are found there. (HEAD stays at the parent in each
    check: the fast path was taken.)"""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.5\n", "check.py": GC_CHECK})
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal(repo, 8, "check.py"))), "--home", str(home),
                     cwd=tmp_path)
    run_dir = only_run_dir(home)
    rows = results_rows(run_dir)
    assert result.exit_code == 1 and len(rows) == 9, result.output
    for row in rows[1:]:
        assert float(row["metric"]) == float(row["description"].removeprefix("x=")), row
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{row['iteration']}")
        seen = (run_dir / "attempts" / f"{int(row['iteration']):04d}" / "check.stdout.log").read_text()
        assert "head: " in seen and f"head: {sha}" not in seen, "the fast path was taken"


SECRET_CHECK = """\
import re
text = open("knob.py").read()
print("secret seen:", "hunter2" in text)
print("score:", re.search(r"^X = (\\S+)$", text, re.M).group(1) if "hunter2" in text else "0")
"""


@pytest.mark.parametrize("start", ["0.5", "0.99"])
def test_a_clean_filter_that_keeps_a_secret_out_of_the_repository_keeps_it_out_of_every_attempt(
        tmp_path: Path, start: str) -> None:
    """The worktree holds `hunter2`, the repository `REDACTED` (a clean and a smudge filter): no attempt's
    commit and not the branch may hold the secret, and every check sees the worktree's text."""
    repo = make_repo(tmp_path / "proj", {KNOB: f'X = {start}\nTOKEN = "REDACTED"\n', "check.py": SECRET_CHECK,
                                          ".gitattributes": "knob.py filter=secret\n"})
    git(repo, "config", "filter.secret.clean", "sed s/hunter2/REDACTED/")
    git(repo, "config", "filter.secret.smudge", "sed s/REDACTED/hunter2/")
    git(repo, "config", "filter.secret.required", "true")
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal(repo, 6, "check.py"))), "--home", str(home),
                     cwd=tmp_path)
    assert result.exit_code in (0, 1), result.output
    run_dir = only_run_dir(home)
    leaked = []
    for n in range(1, 7):
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{n}")
        blob = git(repo, "show", f"{sha}:{KNOB}")
        seen = (run_dir / "attempts" / f"{n:04d}" / "check.stdout.log").read_text()
        assert "secret seen: True" in seen, f"attempt {n}'s check did not see the worktree's text"
        if "hunter2" in blob:
            leaked.append(n)
    assert not leaked, f"the secret is in the commits of attempts {leaked}"
    assert "hunter2" not in git(repo, "show", f"goalloop/{run_dir.name}:{KNOB}")



@pytest.mark.parametrize("body", ["a\x0cb\nX = 1\nc\n", "s = 'x\u2028y'\nX = 1\n", "p\rq\nX = 1\n"],
                         ids=["formfeed", "u2028", "lone-cr"])
def test_the_patch_and_line_counts_are_gits_for_characters_python_splits_lines_at(tmp_path: Path, body: str) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": body})
    base = git(repo, "rev-parse", "HEAD")
    ws = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    ws.reset_to(base)
    new = body.replace("X = 1", "X = 2")
    (tmp_path / "wt" / "knob.py").write_text(new, newline="")
    commit = ws.commit_known(1, base, "attempt 1", {"knob.py": new})
    assert commit is not None and commit.sha
    ws.start_undo()
    gits = subprocess.run(["git", "diff", base, commit.sha], cwd=repo, capture_output=True).stdout.decode()
    num = git(repo, "diff", "--numstat", base, commit.sha)
    assert [(c.added, c.deleted) for c in commit.changed] == [tuple(map(int, num.split("\t")[:2]))]
    assert commit.patch == gits


def attempt_with_a_slow_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float):
    """A fast-path attempt committed, not yet written, in a repository whose `update-ref --stdin` starts
    `delay` seconds late (a slow disk): (repo, workspace, base, commit)."""
    import goalloop.git_runner as gr
    real_popen = gr.subprocess.Popen

    def slow_popen(argv, *a, **k):
        if argv[-2:] == ["update-ref", "--stdin"]:
            argv = ["sh", "-c", f'sleep {delay}; exec "$@"', "sh", *argv]
        return real_popen(argv, *a, **k)
    monkeypatch.setattr(gr.subprocess, "Popen", slow_popen)
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    ws = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    ws.reset_to(base)
    (tmp_path / "wt" / "knob.py").write_text("X = 2\n")
    commit = ws.commit_known(1, base, "attempt 1", {"knob.py": "X = 2\n"})
    assert commit is not None and commit.sha
    return repo, ws, base, commit


def test_a_ctrl_c_while_the_ref_is_in_gits_hands_leaves_the_attempt_committed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C lands while the attempt ref's transaction is still in git's hands (a slow disk: here git
    starts 0.3 s late): the ref is made before anything asks for it, and saving the interrupted attempt
    finds it instead of committing the worktree a second time."""
    repo, ws, base, commit = attempt_with_a_slow_ref(tmp_path, monkeypatch, 0.3)
    with pytest.raises(KeyboardInterrupt):
        with ws.writing_meanwhile():
            raise KeyboardInterrupt  # the check is interrupted at once
    assert ws.save_unrecorded(1, base, "interrupted while proposing") is None  # what loop._save_interrupted does
    assert git(repo, "rev-parse", "refs/goalloop/r1/1") == commit.sha


def test_a_ctrl_c_while_the_attempt_is_being_written_waits_for_the_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is over and the Ctrl-C lands while the thread is still writing the attempt's ref (git
    starts 0.5 s late): the KeyboardInterrupt comes once the ref is there, so saving the interrupted
    attempt cannot race the thread. (An interrupted `Thread.join` let it through at once on CPython 3.11.)"""
    repo, ws, base, commit = attempt_with_a_slow_ref(tmp_path, monkeypatch, 0.5)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with ws.writing_meanwhile():
                pass  # the check ended at once
        refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname)", "refs/goalloop/r1/"], cwd=repo,
                              capture_output=True, text=True).stdout.split()
        assert refs == [commit.sha], "the Ctrl-C was raised before the attempt's ref was written"
    finally:
        signal.signal(signal.SIGINT, previous)


HANG_CHECK = """\
import os, pathlib, re, time
n = os.environ["GOALLOOP_ITERATION"]
if n == "3" and not pathlib.Path(os.environ["MARK"]).exists():
    pathlib.Path(os.environ["MARK"]).write_text("in check 3")
    time.sleep(60)
print("score:", re.search(r"^X = (\\S+)$", open("knob.py").read(), re.M).group(1))
"""


def killed_in_the_check_of_attempt_3(tmp_path: Path, iterations: int) -> tuple[Path, Path]:
    """A search run killed with SIGKILL while attempt 3's check runs: (repo, home)."""
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.99\n", "check.py": HANG_CHECK})
    home, mark = tmp_path / "home", tmp_path / "mark"
    g = write_goal(tmp_path / "g.yaml", goal(repo, iterations, "check.py"))
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(g), "--home", str(home), "-q"],
                            cwd=tmp_path, env={**os.environ, "MARK": str(mark)})
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the check of attempt 3 never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return repo, home


def resume_to_the_end(tmp_path: Path, home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "goalloop", "resume", "--home", str(home)], cwd=tmp_path,
                          env={**os.environ, "MARK": str(tmp_path / "mark")}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr


def test_a_resume_removes_the_temporary_object_files_a_kill_9_left_and_nothing_younger(tmp_path: Path) -> None:
    """A kill -9 while gitdb stores an object leaves its temporary file (`objects/obj` + 8 characters),
    which git's gc never prunes. After a real kill -9 mid-run, the leftovers are put there as gitdb names
    them: the resume removes the one an hour old, not a younger one (another program's write may be under
    way) nor git's own temporary file (git prunes those itself)."""
    repo, home = killed_in_the_check_of_attempt_3(tmp_path, 4)
    objects = repo / ".git" / "objects"
    made = [tempfile.mkstemp(prefix="obj", dir=objects) for _ in range(2)]  # named as gitdb names them
    for fd, _ in made:
        os.close(fd)
    stale, young = (Path(name) for _, name in made)
    gits = objects / "tmp_obj_Ab12Cd"
    for path in (stale, young, gits):
        path.write_bytes(b"x\x9c half an object")
    hours_ago = time.time() - 7200
    for path in (stale, gits):
        os.utime(path, (hours_ago, hours_ago))
    resume_to_the_end(tmp_path, home)
    assert not stale.exists() and young.exists() and gits.exists()
    events = (only_run_dir(home) / "events.jsonl").read_text()
    assert '"stale_temp_object_removed"' in events and str(stale) in events and str(young) not in events


def test_a_kill_9_during_a_search_check_sets_aside_that_attempt_alone(tmp_path: Path) -> None:
    """kill -9 while attempt 3's check runs (its ref written, HEAD at its parent, its files in the
    worktree): the resume sets attempt 3 aside to be proposed again, and nothing else."""
    _, home = killed_in_the_check_of_attempt_3(tmp_path, 5)
    run_dir = only_run_dir(home)
    resume_to_the_end(tmp_path, home)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    asides = [e for e in events if "aside" in e["event"] and e.get("how")]
    assert [e["iteration"] for e in asides] == [3], asides
    assert [int(r["iteration"]) for r in results_rows(run_dir)] == list(range(6))


VALUE_CHECK = """\
import re, pathlib
v = re.search(r"^X = (\\S+)$", open("knob.py").read(), re.M).group(1)
pathlib.Path("out.txt").write_text(v)   # an untracked file every check leaves
print("score:", v)
"""
HOLDOUT = """\
import re
print("hold:", re.search(r"^X = (\\S+)$", open("knob.py").read(), re.M).group(1))
"""


@pytest.mark.parametrize("strategy", ["greedy", "top-k"])
def test_parallel_rounds_with_a_tree_repeats_and_a_holdout_measure_each_attempt(tmp_path: Path, strategy: str) -> None:
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.1\n", "check.py": VALUE_CHECK, "hold.py": HOLDOUT})
    home = tmp_path / "home"
    g = goal(repo, 12, "check.py", parallel=3, search={"strategy": strategy, "seed": 1},
             keep={"repeats": 2}, holdout={"run": f"{sys.executable} hold.py", "metric": r"^hold: (\S+)"})
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", g)), "--home", str(home), cwd=tmp_path, timeout=300)
    assert result.exit_code in (0, 1), result.output
    run_dir = only_run_dir(home)
    rows = results_rows(run_dir)
    for r in rows[1:]:
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{r['iteration']}")
        val = r["description"].removeprefix("x=")
        assert git(repo, "show", f"{sha}:{KNOB}") == f"X = {val}"
        assert r["metric"] == "" or float(r["metric"]) == float(val), r
        if r.get("holdout"):
            assert float(r["holdout"]) == float(val), r
        assert git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha) == KNOB
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    for wt in (home / "workspaces" / run_dir.name).iterdir():
        if (wt / ".git").exists():
            assert git(wt, "status", "--porcelain", "--untracked-files=all") == "", wt


def test_under_the_sandbox_each_check_measures_its_attempt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.1\n", "check.py": VALUE_CHECK})
    home = tmp_path / "home"
    g = goal(repo, 6, "check.py", sandbox=True)
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", g)), "--home", str(home), cwd=tmp_path)
    if "bubblewrap" in result.output and result.exit_code == 2:
        pytest.skip(f"the sandbox cannot run here: {result.output[-300:]}")
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for r in results_rows(run_dir)[1:]:
        assert float(r["metric"]) == float(r["description"].removeprefix("x=")), r
    wt = home / "workspaces" / run_dir.name
    assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_ref_git_refuses_is_raised_when_the_check_ends_before_any_verdict(tmp_path: Path) -> None:
    """The attempt ref is written while the check runs; git's refusal (a full disk, a lock; here the ref
    exists already) is raised as the judging ends, before a row could name a commit nothing keeps."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n"})
    base = git(repo, "rev-parse", "HEAD")
    ws = Workspace.create(RepoTarget(repo, base), tmp_path / "wt", "r1", tmp_path / "exclude")
    ws.reset_to(base)
    git(repo, "update-ref", "refs/goalloop/r1/1", base)
    (tmp_path / "wt" / "knob.py").write_text("X = 2\n")
    assert ws.commit_known(1, base, "attempt 1", {"knob.py": "X = 2\n"})
    with pytest.raises(GitFailed, match="refs/goalloop/r1/1"):
        with ws.writing_meanwhile():
            time.sleep(0.1)  # the check


def test_a_sha256_repository_is_committed_through_git(tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "--object-format=sha256", "-b", "main"], cwd=repo, check=True)
    (repo / KNOB).write_text("X = 0.1\n"); (repo / "check.py").write_text(VALUE_CHECK)
    git(repo, "add", "-A"); git(repo, "commit", "-qm", "i")
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal(repo, 4, "check.py"))), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    for r in results_rows(only_run_dir(home))[1:]:
        assert float(r["metric"]) == float(r["description"].removeprefix("x=")), r
    assert subprocess.run(["git", "fsck", "--strict"], cwd=repo).returncode == 0


@pytest.mark.parametrize("setup", ["filemode", "autocrlf", "submodule", "eolcrlf"])
def test_repository_settings_git_converts_files_under_keep_every_record_exact(tmp_path: Path, setup: str) -> None:
    repo = make_repo(tmp_path / "proj", {KNOB: "X = 0.1\nY = 2\n", "check.py": VALUE_CHECK})
    if setup == "filemode":
        git(repo, "config", "core.fileMode", "false")
    if setup == "autocrlf":
        git(repo, "config", "core.autocrlf", "true")
    if setup == "eolcrlf":
        (repo / ".gitattributes").write_text("*.py text eol=crlf\n")
        git(repo, "add", "-A"); git(repo, "commit", "-qm", "attrs")
    if setup == "submodule":
        sub = make_repo(tmp_path / "sub", {"s.txt": "s\n"})
        subprocess.run(["git", "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor/sub"],
                       cwd=repo, check=True)
        git(repo, "commit", "-qm", "sub")
    home = tmp_path / "home"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", goal(repo, 6, "check.py"))), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for r in results_rows(run_dir)[1:]:
        assert float(r["metric"]) == float(r["description"].removeprefix("x=")), r
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{r['iteration']}")
        assert git(repo, "diff-tree", "-r", "--numstat", "--no-commit-id", f"{sha}^", sha) == f"1\t1\t{KNOB}"
    assert subprocess.run(["git", "fsck", "--strict"], cwd=repo).returncode == 0
    wt = home / "workspaces" / run_dir.name
    assert git(wt, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_knob_in_a_file_with_crlf_line_ends_changes_its_value_alone(tmp_path: Path) -> None:
    """The knob's file keeps its CRLF line ends: an attempt changes one line, as a person's edit would,
    not every line of the file."""
    repo = make_repo(tmp_path / "proj", {"check.py": VALUE_CHECK})
    (repo / KNOB).write_bytes(b"# settings\r\nX = 0.1\r\nY = 2\r\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "crlf")
    home = tmp_path / "home"
    g = goal(repo, 3, "check.py")
    g["proposer"]["params"]["x"]["pattern"] = r"^X = ([0-9.]+)"
    result = run_cli("run", str(write_goal(tmp_path / "g.yaml", g)), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(home)
    for row in results_rows(run_dir)[1:]:
        sha = git(repo, "rev-parse", f"refs/goalloop/{run_dir.name}/{row['iteration']}")
        assert git(repo, "diff-tree", "-r", "--numstat", "--no-commit-id", f"{sha}^", sha) == f"1\t1\t{KNOB}"
        blob = subprocess.run(["git", "cat-file", "blob", f"{sha}:{KNOB}"], cwd=repo, capture_output=True).stdout
        assert blob.count(b"\r\n") == 3
