"""The command line follows what people know from git, gh, uv and pytest: -h, flags shown as flags, choices
listed, one error style, exit codes and an example in every help, runs newest first, --json for scripts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from rich.console import Console

from conftest import run_cli, write_goal
from goalloop.goal import parse_goal
from goalloop.ledger import AttemptRecord
from goalloop.live import LiveView

COMMANDS = ["run", "resume", "validate", "status", "runs", "clean", "report", "init", "schema"]


def test_every_command_takes_h_and_its_help_ends_with_exit_codes_and_an_example(tmp_path: Path) -> None:
    for name in COMMANDS:
        result = run_cli(name, "-h", cwd=tmp_path)
        assert result.exit_code == 0, (name, result.output)
        text = result.stdout
        assert "Exit codes: 0 target met" in text and "Example" in text and "goalloop " + name in text, name
        assert "<bool>" not in text, f"{name}: a flag takes no value"
    run_help = run_cli("run", "-h", cwd=tmp_path).stdout
    assert re.search(r"--quiet\s+-q\s+Print only", run_help), run_help
    assert "<text|json>" in run_help
    assert "<claude-code|codex|aider|claude|command|search>" in run_cli("init", "-h", cwd=tmp_path).stdout


def test_usage_and_goal_errors_read_the_same(tmp_path: Path) -> None:
    usage = run_cli("run", str(tmp_path / "g.yaml"), "--log-format", "xml", cwd=tmp_path)
    missing = run_cli("run", cwd=tmp_path)
    goal = run_cli("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    for result in (usage, missing, goal):
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and "\n  fix: " in result.stderr, result.stderr
        assert "╭" not in result.output and "Traceback" not in result.output
    assert "'xml' is not one of 'text', 'json'" in usage.stderr and "Value error" not in usage.stderr


def _finished_run(tmp_path: Path, repo: Path, name: str) -> None:
    goal = write_goal(tmp_path / f"{name}.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"}, "target": {"value": 2},
        "budget": {"iterations": 1}, "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}}]}})
    assert run_cli("run", str(goal), "--home", str(tmp_path), "-q", cwd=tmp_path).exit_code == 0


def test_runs_lists_newest_first_under_a_header_and_as_json(tmp_path: Path, score_repo: Path) -> None:
    _finished_run(tmp_path, score_repo, "older")
    time.sleep(1.1)  # run folders are ordered by when they were created, to the second
    _finished_run(tmp_path, score_repo, "newer")
    text = run_cli("runs", "--home", str(tmp_path), cwd=tmp_path, env={"COLUMNS": "80"}).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["run", "state", "attempts", "best", "time"]
    assert lines[1].startswith("newer-") and lines[2].startswith("older-")
    assert all(len(line) <= 80 for line in lines), "no wrapping at 80 columns"
    rows = json.loads(run_cli("runs", "--home", str(tmp_path), "--json", cwd=tmp_path).stdout)
    assert [r["goal"] for r in rows] == ["newer", "older"] and rows[0]["state"] == "target met"
    summary = run_cli("status", "--home", str(tmp_path), cwd=tmp_path).stdout
    assert "target met: target met" not in summary
    done = run_cli("run", str(tmp_path / "newer.yaml"), "--home", str(tmp_path), cwd=tmp_path).stdout
    assert "target met by attempt 1" in done and "target met: target met" not in done


def test_the_live_view_uses_the_terminals_height(tmp_path: Path) -> None:
    goal = parse_goal("check: {run: 'true'}\nproposer: {kind: command, run: 'true'}\n", tmp_path / "g.yaml")
    history = [AttemptRecord(iteration=n, verdict="discard" if n else "baseline", description=f"try {n}")
               for n in range(60)]
    for height in (20, 40):
        console = Console(width=80, height=height, record=True, force_terminal=True)
        console.print(LiveView(goal, "run-1", console, history))
        shown = [line for line in console.export_text().splitlines() if re.match(r"\s*\d+\s+(discard|baseline)", line)]
        assert height - 9 <= len(shown) <= height - 6, (height, len(shown))
        assert shown[-1].split()[0] == "59", "the latest attempts"
