"""What the CLI hands to the outside: CI files, JSON events, quiet output, reports, starter goals, the schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_repo, run_cli, write_goal

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def metric_goal(tmp_path: Path, score_repo: Path) -> Path:
    return write_goal(
        tmp_path / "g.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "target": {"value": 3},
            "budget": {"iterations": 3},
            "proposer": {
                "kind": "scripted",
                "steps": [
                    {"description": "to 2", "files": {"knob.py": "X = 2\n"}},
                    {"description": "to 3", "files": {"knob.py": "X = 3\n"}},
                ],
            },
        },
    )


def test_ci_writes_the_step_summary_and_the_outputs(tmp_path: Path, metric_goal: Path) -> None:
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    summary.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}
    result = run_cli("run", str(metric_goal), "--home", str(tmp_path), "--ci", cwd=tmp_path, env=env)
    assert result.exit_code == 0, result.output
    text = summary.read_text()
    assert text.startswith("earlier step\n"), "the summary is appended, never overwritten"
    assert "target met" in text and "| best |" in text
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values["target_met"] == "true"
    assert float(values["best_metric"]) == 3
    assert values["branch"] == f"goalloop/{values['run_id']}"
    assert (tmp_path / "runs" / values["run_id"]).is_dir()


def test_ci_is_the_default_when_CI_is_true_and_reports_a_spent_budget(tmp_path: Path, score_repo: Path) -> None:
    goal = write_goal(
        tmp_path / "g.yaml",
        {
            "repo": str(score_repo),
            "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
            "target": {"value": 99},
            "budget": {"iterations": 1},
            "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}}]},
        },
    )
    outputs = tmp_path / "outputs.txt"
    result = run_cli("run", str(goal), "--home", str(tmp_path), cwd=tmp_path,
                     env={"CI": "true", "GITHUB_OUTPUT": str(outputs)})
    assert result.exit_code == 1
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values["target_met"] == "false" and values["exit_code"] == "1"


def test_log_format_json_prints_only_events_as_json_lines(tmp_path: Path, metric_goal: Path) -> None:
    result = run_cli("run", str(metric_goal), "--home", str(tmp_path), "--log-format", "json", cwd=tmp_path)
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_stopped"
    assert [e["verdict"] for e in events if e["event"] == "attempt"] == ["baseline", "keep", "keep"]


def test_quiet_prints_only_the_final_summary(tmp_path: Path, metric_goal: Path) -> None:
    result = run_cli("run", str(metric_goal), "--home", str(tmp_path), "-q", cwd=tmp_path)
    assert result.exit_code == 0
    assert "#1" not in result.stdout and "baseline" in result.stdout and "target met" in result.stdout


def test_report_writes_markdown_and_html_for_the_latest_run(tmp_path: Path, metric_goal: Path) -> None:
    assert run_cli("run", str(metric_goal), "--home", str(tmp_path), "-q", cwd=tmp_path).exit_code == 0
    result = run_cli("report", "--home", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in paths] == ["report.md", "report.html"]
    assert all(p.is_file() for p in paths)


def test_unknown_run_id_is_a_usage_error(tmp_path: Path, metric_goal: Path) -> None:
    assert run_cli("run", str(metric_goal), "--home", str(tmp_path), "-q", cwd=tmp_path).exit_code == 0
    result = run_cli("status", "no-such-run", "--home", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 2 and "goalloop runs" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("proposer", ["command", "claude", "search"])
def test_init_writes_a_starter_goal_and_never_overwrites(tmp_path: Path, proposer: str) -> None:
    repo = make_repo(tmp_path / "proj", {"pyproject.toml": "[project]\nname='x'\n", "tests/test_x.py": "def test(): pass\n"})
    first = run_cli("init", "--proposer", proposer, cwd=repo)
    assert first.exit_code == 0, first.output
    goal = repo / "goals" / "proj.yaml"
    text = goal.read_text()
    assert text.startswith("# yaml-language-server: $schema=./goal.schema.json")
    assert f"kind: {proposer}" in text and "python3 -m pytest" in text
    assert (repo / "goals" / "goal.schema.json").is_file()
    if proposer != "search":  # the search starter names a placeholder file the user must fill in
        assert run_cli("validate", str(goal), cwd=repo).exit_code == 0
    again = run_cli("init", "--proposer", proposer, cwd=repo)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert goal.read_text() == text


def test_init_offers_every_starter_proposer() -> None:
    from goalloop.cli import STARTER_PROPOSERS
    from goalloop.starter import PROPOSER_BLOCKS

    assert set(STARTER_PROPOSERS) == set(PROPOSER_BLOCKS), "init --proposer lists the starters there are"


HEAVY = ("git", "anthropic", "optuna", "goalloop.loop", "goalloop.workspace", "goalloop.check", "goalloop.doctor",
         "goalloop.proposers.command", "goalloop.proposers.search", "goalloop.cli.running")


@pytest.mark.parametrize("command", [["status"], ["runs"], ["status", "--json"], ["-h"]])
def test_reading_commands_load_nothing_a_run_needs(tmp_path: Path, metric_goal: Path, command: list[str]) -> None:
    """`status` and `runs` import what they read with, not git, the loop or the proposers, so they start at once."""
    assert run_cli("run", str(metric_goal), "--home", str(tmp_path), "-q", cwd=tmp_path).exit_code == 0
    probe = (
        "import sys\n"
        f"sys.argv = ['goalloop', *{command!r}, *(['--home', {str(tmp_path)!r}] if {command!r} != ['-h'] else [])]\n"
        "import goalloop.cli\n"
        "try:\n    goalloop.cli.main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "LOADED []", result.stdout[-500:]


def test_committed_schema_matches_the_models() -> None:
    """goals/goal.schema.json is what `goalloop schema` prints: regenerate it with
    `goalloop schema > goals/goal.schema.json` after changing goal.py."""
    result = run_cli("schema", cwd=REPO_ROOT)
    assert result.exit_code == 0
    committed = (REPO_ROOT / "goals" / "goal.schema.json").read_text()
    assert json.loads(result.stdout) == json.loads(committed), "goals/goal.schema.json is stale"


FAILING_CHECK = """\
import sys
print("collecting ... 3 items")
print("FAILED tests/test_parse.py::test_header - ValueError: bad header")
print("hint: See above for details.")
sys.exit(1)
"""


def test_run_tips_doctor_and_the_report_gives_the_failing_baselines_reason(tmp_path: Path) -> None:
    """The start of `run` names `goalloop doctor` for this goal; report.md and report.html say why the
    baseline fails (the failing test, not the trailing hint)."""
    repo = make_repo(tmp_path / "proj", {"check.py": FAILING_CHECK, "knob.py": "X = 1\n"})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 check.py"}, "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"description": "try", "files": {"knob.py": "X = 2\n"}}]},
    })
    home = tmp_path / "home"
    run = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)
    assert run.exit_code == 1, run.output
    assert f"tip: `goalloop doctor {goal}` proves the check tests the worktree" in run.stdout, run.stdout

    result = run_cli("report", "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    markdown, html = (Path(line) for line in result.stdout.split())
    reason = "baseline: FAILED tests/test_parse.py::test_header - ValueError: bad header"
    assert "\n- " + reason.replace("_", "\\_") + "\n" in markdown.read_text(encoding="utf-8")  # under Findings
    assert reason in html.read_text(encoding="utf-8")
