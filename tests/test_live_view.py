"""On a terminal `goalloop run` shows a live view; off one (a pipe, CI) it prints one plain line per attempt."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import write_goal


def _goal(tmp_path: Path, repo: Path) -> Path:
    return write_goal(tmp_path / "g.yaml", {
        "repo": str(repo),
        "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 3},
        "budget": {"iterations": 4, "usd": 1},
        "proposer": {"kind": "scripted", "steps": [
            {"description": "to 2", "files": {"knob.py": "X = 2\n"}, "cost_usd": 0.1},
            {"description": "to 3", "files": {"knob.py": "X = 3\n"}, "cost_usd": 0.1},
        ]},
    })


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run goalloop with its stdout on a pseudo-terminal, as a person at a terminal would."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    env.update(COLUMNS="120", LINES="40", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", *args], cwd=cwd, stdout=secondary, stderr=secondary,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_the_live_view_shows_budget_best_baseline_target_and_attempts(tmp_path: Path,
                                                                                      score_repo: Path) -> None:
    code, screen = _run_on_a_terminal(["run", str(_goal(tmp_path, score_repo)), "--home", str(tmp_path)], tmp_path)
    assert code == 0, screen
    assert "attempts 2/4" in screen and "$0.20/$1.00" in screen
    assert "best 3 at #2" in screen and "baseline 1" in screen and "target 3 (maximize)" in screen
    assert "to 3" in screen and "\x1b[" in screen, "rich drew it, with terminal control sequences"


def test_off_a_terminal_each_attempt_is_one_plain_line(tmp_path: Path, score_repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "goalloop", "run", str(_goal(tmp_path, score_repo)),
                           "--home", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "CI": ""})
    assert proc.returncode == 0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("#")]
    assert [line.split()[:2] for line in lines] == [["#0", "baseline"], ["#1", "keep"], ["#2", "keep"]]
    assert "\x1b[" not in proc.stdout
