"""When the ledger's lines reach the disk (line_file.py): at once in the file, fsynced within half a second
in batches, and always before the branch moves past a row. The fsyncs are watched by wrapping os.fsync
and noting how much of each file it covered."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import git, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop import line_file
from goalloop.line_file import LineFile, Sync


class FsyncSpy:
    """Replaces os.fsync; remembers, for each file, the size the last fsync of it covered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls = 0
        self.covered: dict[int, int] = {}
        self.fail = fail
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls += 1
            if self.fail:
                raise OSError(errno.EIO, "Input/output error")
            size = os.fstat(fd).st_size
            real(fd)
            self.covered[fd] = size

        monkeypatch.setattr(os, "fsync", fsync)


def test_lines_are_in_the_file_at_once_and_on_disk_in_one_batch(tmp_path: Path, monkeypatch) -> None:
    spy = FsyncSpy(monkeypatch)
    monkeypatch.setattr(line_file, "SOON_SECONDS", 5.0)
    lines = LineFile(tmp_path / "rows.tsv")
    for n in range(50):
        lines.append(f"row {n}\n", Sync.SOON)
    assert (tmp_path / "rows.tsv").read_text().splitlines()[-1] == "row 49"  # a kill -9 now loses nothing
    assert spy.calls == 0 and lines.unsynced  # the batch waits for more lines
    lines.sync()
    assert spy.calls == 1 and spy.covered[lines.fd] == lines.size() and not lines.unsynced
    lines.append("now\n", Sync.NOW)
    assert spy.calls == 2 and spy.covered[lines.fd] == lines.size()
    lines.close()


def test_a_soon_line_reaches_the_disk_without_anyone_waiting(tmp_path: Path, monkeypatch) -> None:
    spy = FsyncSpy(monkeypatch)
    monkeypatch.setattr(line_file, "SOON_SECONDS", 0.05)
    lines = LineFile(tmp_path / "rows.tsv")
    lines.append("row\n", Sync.SOON)
    for _ in range(200):
        if not lines.unsynced:
            break
        time.sleep(0.01)
    assert not lines.unsynced and spy.covered[lines.fd] == lines.size()
    lines.close()


def test_an_fsync_that_fails_in_the_background_is_raised_by_the_next_write(tmp_path: Path, monkeypatch) -> None:
    FsyncSpy(monkeypatch, fail=True)
    lines = LineFile(tmp_path / "rows.tsv")
    lines.append("row 1\n", Sync.SOON)
    with pytest.raises(OSError, match="Input/output") as failed:
        lines.sync()
    assert failed.value.filename == str(tmp_path / "rows.tsv")  # so the run's fault can name the file
    with pytest.raises(OSError, match="Input/output"):
        lines.append("row 2\n", Sync.SOON)
    assert (tmp_path / "rows.tsv").read_text() == "row 1\n"
    lines.close()


SPY_RUN = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from goalloop import line_file, workspace
    from goalloop.ledger import Ledger
    rule, home, goal = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    line_file.SOON_SECONDS = 60.0  # nothing reaches the disk by the timer: only what the loop asks for
    covered, unsynced_at_keep = {}, []
    real_fsync = os.fsync
    def fsync(fd):
        size = os.fstat(fd).st_size
        real_fsync(fd)
        covered[os.readlink(f"/proc/self/fd/{fd}")] = size
    os.fsync = fsync
    if rule == "rule-off":
        Ledger.sync = lambda self: None
    real_keep = workspace.Workspace.keep
    def keep(self, sha, previous):
        run_dir = next(p for p in (home / "runs").iterdir() if (p / "run.json").exists())
        for name in ("results.tsv", "events.jsonl"):
            path = os.path.realpath(run_dir / name)
            if covered.get(path, -1) != os.path.getsize(path):
                unsynced_at_keep.append(name)
        real_keep(self, sha, previous)
    workspace.Workspace.keep = keep
    from goalloop.quick import main
    sys.argv = ["goalloop", "run", goal, "--home", str(home)]
    try:
        main()
    finally:
        (home / "keeps.json").write_text(json.dumps(unsynced_at_keep))
""")


def knob_goal(tmp_path: Path, score: str, iterations: int, seed: int) -> Path:
    """A search goal over `X` in knob.py, whose check prints `score: <score>` (a Python expression of X)."""
    repo = make_repo(tmp_path / "repo", {"knob.py": "X = 0.5\n", "score.py": f"import knob\nX = knob.X\nprint(f'score: {{{score}}}')\n"})
    return write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score: (\S+)"},
        "target": {"direction": "maximize"}, "budget": {"iterations": iterations},
        "proposer": {"kind": "search", "sampler": "random", "seed": seed,
                     "params": {"x": {"file": "knob.py", "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}}})


@pytest.mark.parametrize("rule", ["on", "rule-off"])
def test_the_branch_never_moves_past_a_row_that_is_not_on_disk(tmp_path: Path, rule: str) -> None:
    """Every keep of a search run finds results.tsv and events.jsonl fsynced to their last byte; with the
    loop's sync before the branch moves taken out, the rows of a keep would still be waiting for the
    batch (the rule shown to matter)."""
    goal = knob_goal(tmp_path, "X", iterations=12, seed=3)
    home = tmp_path / "home"
    script = tmp_path / "spy_run.py"
    script.write_text(SPY_RUN)
    done = subprocess.run([sys.executable, str(script), rule, str(home), str(goal)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]  # the budget spent
    unsynced = json.loads((home / "keeps.json").read_text())
    rows = (only_run_dir(home) / "results.tsv").read_text().splitlines()
    keeps = [row for row in rows[1:] if row.split("\t")[3] == "keep"]
    assert keeps, "the run kept nothing: the test shows nothing"
    if rule == "on":
        assert unsynced == []
    else:
        assert "results.tsv" in unsynced and "events.jsonl" in unsynced


def test_the_readme_says_how_much_a_power_cut_can_take_back() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert line_file.SOON_SECONDS == 0.5 and "take back the last half second of rows" in readme


def test_attempts_whose_rows_a_power_cut_took_back_are_set_aside_and_proposed_again(tmp_path: Path) -> None:
    """A power cut took the last two rows (their commits and refs survived, and nothing after them did):
    resume sets both attempts aside, proposes them again, and the ledger holds every attempt once."""
    goal = knob_goal(tmp_path, "0.5 - abs(X - 0.5)", iterations=6, seed=1)  # never beats the baseline
    repo = tmp_path / "repo"
    home = tmp_path / "home"
    first = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)
    assert first.exit_code == 1, first.output
    run_dir = only_run_dir(home)
    events = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    cut = next(n for n, line in enumerate(events) if '"event": "attempt"' in line and '"iteration": 5,' in line)
    (run_dir / "events.jsonl").write_text("".join(events[:cut]), encoding="utf-8")
    rows = (run_dir / "results.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (run_dir / "results.tsv").write_text("".join(rows[:-2]), encoding="utf-8")
    (run_dir / "standing.json").unlink(missing_ok=True)

    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    assert resumed.exit_code == 1, resumed.output
    assert [r["iteration"] for r in results_rows(run_dir)] == [str(n) for n in range(7)]
    aside = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/unjudged/")
    assert sorted(ref.rsplit("/", 1)[1].split("-")[0] for ref in aside.splitlines()) == ["5", "6"], aside


def test_an_input_output_error_of_the_disk_is_a_named_fault_that_says_resume(tmp_path: Path, monkeypatch) -> None:
    """An fsync the disk fails (EIO) in the sync thread ends the run as a fault of the machine naming the
    file (exit 3, resumable), not as an internal error."""
    from goalloop import faults

    FsyncSpy(monkeypatch, fail=True)
    lines = LineFile(tmp_path / "rows.tsv")
    lines.append("row 1\n", Sync.SOON)
    with pytest.raises(OSError) as failed:
        lines.sync()
    fault = faults.named(failed.value, "r-1")
    assert isinstance(fault, faults.MachineFault) and fault.exit_code == 3
    assert str(tmp_path / "rows.tsv") in fault.message and "goalloop resume r-1" in (fault.fix or "")
    lines.close()
