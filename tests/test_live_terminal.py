"""The live view in a real terminal (tmux, 80 columns by 30 rows) with a check that waits: the attempt in
progress is on screen while its check runs, long text ends in an ellipsis, and closing the terminal
(SIGHUP) stops the run cleanly and resumably, so `goalloop resume` finishes it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import make_repo, results_rows, run_cli, write_goal

WAITING_CHECK = """\
import os, pathlib, time
import knob
release = pathlib.Path(os.environ["RELEASE_FILE"])
while knob.X == 2 and not release.exists():   # attempt 1's check waits until the test lets it go
    time.sleep(0.1)
print(f"score: {knob.X}")
"""
LONG = "raise the knob to two, " * 8


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30).stdout


def _until(what: str, done, timeout: float = 90):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = done()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_attempt_in_progress_is_on_screen_and_sighup_leaves_a_resumable_run(tmp_path: Path) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (Debian package tmux; .ci/run installs it)")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": WAITING_CHECK})
    release = tmp_path / "release"
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo),
        "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)", "timeout": "5m"},
        "target": {"value": 3},
        "budget": {"iterations": 5},
        "env": {"pass": ["RELEASE_FILE"]},
        "proposer": {"kind": "scripted", "steps": [
            {"description": LONG, "files": {"knob.py": "X = 2\n"}},
            {"description": "to 3", "files": {"knob.py": "X = 3\n"}},
        ]},
    })
    socket = f"goalloop-test-{uuid.uuid4().hex[:8]}"
    command = " ".join(shlex.quote(part) for part in [
        "env", f"RELEASE_FILE={release}", "CI=", "COLUMNS=", "LINES=",
        sys.executable, "-m", "goalloop", "run", str(goal), "--home", str(tmp_path)])
    _tmux(socket, "new-session", "-d", "-s", "run", "-x", "80", "-y", "30", "-c", str(tmp_path), command)
    try:
        screen = _until("attempt 1 on screen while its check runs",
                        lambda: (s := _tmux(socket, "capture-pane", "-p", "-t", "run")) and
                        "attempt 1: checking" in s and s)
        assert "▶ attempt 1: checking" in screen, screen
        assert "best 1 at #0" in screen and "baseline 1" in screen and "attempts 0/5" in screen, screen
        assert all(len(line) <= 80 for line in screen.splitlines())
        run_dir = next((tmp_path / "runs").glob("g-*"))
        status = run_cli("status", "--home", str(tmp_path), "--json", cwd=tmp_path)
        standing = json.loads(status.stdout)
        assert standing["state"] == "running", status.output
        assert standing["in_progress"][0]["iteration"] == 1 and standing["in_progress"][0]["phase"] == "checking"
        assert standing["budget"]["attempts"] == {"used": 0, "limit": 5, "left": 5}
        text = run_cli("status", "--home", str(tmp_path), cwd=tmp_path).stdout
        assert "now        attempt 1: checking" in text and "0 of 5 attempts, 5 left" in text, text
        _tmux(socket, "kill-server")  # the terminal goes away: SIGHUP
        stopped = _until("the run to stop", lambda: [
            e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
            if e["event"] == "run_stopped"])
    finally:
        _tmux(socket, "kill-server")
    assert stopped[-1]["exit_code"] == 130 and stopped[-1]["state"] == "interrupted"
    after = run_cli("status", "--home", str(tmp_path), cwd=tmp_path).stdout
    assert "interrupted" in after and f"goalloop resume {run_dir.name}" in after, after
    release.write_text("go")
    resumed = run_cli("resume", "--home", str(tmp_path), cwd=tmp_path, timeout=120,
                      env={"RELEASE_FILE": str(release)})
    assert resumed.exit_code == 0, resumed.output
    assert results_rows(run_dir)[-1]["metric"] == "3"


def test_long_descriptions_end_in_an_ellipsis_at_80_columns(tmp_path: Path) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (Debian package tmux; .ci/run installs it)")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 2}, "budget": {"iterations": 2},
        "proposer": {"kind": "scripted", "steps": [{"description": LONG, "files": {"knob.py": "X = 2\n"}}]},
    })
    socket = f"goalloop-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "done"
    command = (f"env CI= {shlex.quote(sys.executable)} -m goalloop run {shlex.quote(str(goal))} --home "
               f"{shlex.quote(str(tmp_path))}; echo $? > {shlex.quote(str(log))}; sleep 60")
    _tmux(socket, "new-session", "-d", "-s", "run", "-x", "80", "-y", "30", "-c", str(tmp_path), command)
    try:
        _until("the run to end", lambda: log.exists() and log.read_text().strip())
        screen = _tmux(socket, "capture-pane", "-p", "-t", "run")
    finally:
        _tmux(socket, "kill-server")
    assert log.read_text().strip() == "0", screen
    row = next(line for line in screen.splitlines() if "raise the knob" in line)
    assert row.rstrip().endswith("…"), screen
    assert "raise the knob to two, raise" in row, "cut at the end of the line, not wrapped"
