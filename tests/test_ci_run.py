"""`goalloop run --ci` as a GitHub Actions job sees it: the workflow commands in the log, the report and the
pull request body written where the workflow reads them, and a step summary within GitHub's limits even
for a run of 1,000 attempts."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import yaml

from conftest import make_repo, only_run_dir, run_cli, write_goal
from goalloop.ledger import AttemptRecord

PR_BODY_LIMIT, STEP_SUMMARY_LIMIT = 65_536, 1_048_576


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_run_ci_groups_attempts_warns_of_an_overfit_and_writes_report_and_pr_body(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\nY = 5\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n",
                                         "holdout.py": "import knob\nprint(f'held: {knob.Y}')\n"})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "holdout": {"run": "python3 holdout.py", "metric": r"^held:\s*(\S+)"},
        "target": {"value": 3}, "budget": {"iterations": 3},
        "proposer": {"kind": "scripted", "steps": [
            {"description": "overfit", "files": {"knob.py": "X = 2\nY = 4\n"}},
            {"description": "honest", "files": {"knob.py": "X = 3\nY = 6\n"}}]},
    })
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs), "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42"}
    result = run_cli("run", str(goal), "--home", str(tmp_path), "--ci", cwd=tmp_path, env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    groups = [line for line in lines if line.startswith("::group::")]
    assert [g.split()[0] for g in groups] == ["::group::#0", "::group::#1", "::group::#2"]
    assert lines.count("::endgroup::") == 3
    assert "::warning title=holdout got worse::attempt 1: holdout got worse" in result.stdout, result.stdout
    values = _outputs(outputs)
    run_dir = only_run_dir(tmp_path)
    assert values["report"] == str(run_dir / "report.md") and (run_dir / "report.html").is_file()
    body = Path(values["pr_body"]).read_text()
    assert "https://github.com/o/r/actions/runs/42" in body and "attempt 2: honest" in body
    assert "#1" not in body and "#2" not in body, "GitHub would link #N to issue N"
    text = summary.read_text()
    assert "<details>" in text and "| 2 | keep | 3, holdout 6 | honest |" in text


def test_a_goal_error_in_ci_is_annotated_on_its_file_and_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    goal = tmp_path / "g.yaml"
    goal.write_text(f"repo: {repo}\ncheck:\n  run: 'true'\nbudget:\n  iterations: many\n")
    result = run_cli("run", str(goal), "--home", str(tmp_path), "--ci", cwd=tmp_path)
    assert result.exit_code == 2
    assert "::error title=goal file,file=g.yaml,line=5::budget.iterations: " in result.stdout, result.output
    assert "::error title=goal file,file=g.yaml,line=1::proposer: " in result.stdout, "one annotation a mistake"
    assert "error: " in result.stderr and "Traceback" not in result.output



def test_a_goal_error_naming_a_lone_surrogate_is_annotated_in_ci_not_a_crash(tmp_path: Path) -> None:
    """GitHub's log is stdout, which (unlike stderr) refuses a lone surrogate unless goalloop escapes it."""
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    goal = tmp_path / "g.yaml"
    goal.write_text(f"repo: {repo}\ncheck:\n  run: 'true'\n\"bad\\uD83Dkey\": 1\n")
    result = run_cli("validate", str(goal), cwd=tmp_path, env={"CI": "true"})
    assert result.exit_code == 2, result.output
    assert "::error title=goal file,file=g.yaml,line=4::" in result.stdout and "surrogate" in result.stdout
    assert "Traceback" not in result.output

def _synthetic_history(run_dir: Path, base: str, attempts: int) -> None:
    """Turn a real run into an interrupted run of `attempts` attempts (descriptions of ~100 characters)."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kept = [e for e in events if e["event"] in ("run_started",)] + [
        e for e in events if e["event"] == "attempt" and e["iteration"] == 0]
    metric = 1.0
    for n in range(1, attempts + 1):
        verdict = "keep" if n % 25 == 0 else ("crash" if n % 7 == 0 else "discard")
        metric = metric + 0.01 if verdict == "keep" else metric
        record = AttemptRecord(iteration=n, verdict=verdict, description=f"try number {n}: " + "tune the knob " * 7,
                               metric=None if verdict == "crash" else metric - (0 if verdict == "keep" else 0.5),
                               seconds=1.5, cost_usd=None, kept_commit=base, elapsed=n * 2.0,
                               reason="check exited with code 1: boom" if verdict == "crash" else "",
                               warning="holdout got worse (1 -> 0.9): overfitting the visible check?" if n == 50 else "")
        kept.append({"event": "attempt", **asdict(record), "ts": "2026-12-01T00:00:00Z"})
    kept.append({"event": "stall", "line": "check exited with code #: boom", "times": 3})
    kept.append({"event": "run_stopped", "exit_code": 130, "state": "interrupted", "reason": "interrupted"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))


def test_the_step_summary_and_pr_body_of_1000_attempts_stay_within_githubs_limits(tmp_path: Path,
                                                                                   score_repo: Path) -> None:
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(score_repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 0\n"}}]},
    })
    assert run_cli("run", str(goal), "--home", str(tmp_path), "-q", cwd=tmp_path).exit_code == 1
    run_dir = only_run_dir(tmp_path)
    base = json.loads((run_dir / "run.json").read_text())["base_commit"]
    _synthetic_history(run_dir, base, 999)
    copy = yaml.safe_load((run_dir / "goal.yaml").read_text())
    copy["budget"]["iterations"] = 1000
    (run_dir / "goal.yaml").write_text(yaml.safe_dump(copy))
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    result = run_cli("resume", "--home", str(tmp_path), "--ci", cwd=tmp_path,
                     env={"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)})
    assert result.exit_code == 1, result.output
    assert "::group::#1000" in result.stdout
    assert "::warning title=goalloop stalled::stalled: check exited with code #: boom" in result.stdout
    text = summary.read_text()
    assert len(text.encode()) < STEP_SUMMARY_LIMIT // 2, "room left for the job's other steps"
    compact = text[:text.index("<details>")]
    assert len(compact) < 8_000, "the part shown open is a screenful"
    assert "| 1000 | crash |" in text and "- and 19 more, listed in report.md" in compact
    assert "not tracked" in compact and "0 tokens" not in compact, "unreported costs are not $0.00"
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    table = report[report.index("| # | verdict | result | description |"):].splitlines()
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 1001 and {line.count(" | ") for line in rows} == {3}, "four columns, one row an attempt"
    body = Path(_outputs(outputs)["pr_body"]).read_text()
    assert len(body) < PR_BODY_LIMIT
    assert "attempt 975:" in body or "attempt 25:" in body


def _pushing_goal(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 2}, "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"description": "two", "files": {"knob.py": "X = 2\n"}}]},
    })
    return repo, goal


def test_push_sends_the_run_branch_to_the_remote_even_when_started_from_a_git_hook(tmp_path: Path) -> None:
    repo, goal = _pushing_goal(tmp_path)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", str(remote)], check=True)
    decoy = make_repo(tmp_path / "decoy", {"d.txt": "d\n"})
    hook = {"GIT_DIR": str(decoy / ".git"), "GIT_WORK_TREE": str(decoy)}  # as a git hook has them
    result = run_cli("run", str(goal), "--home", str(tmp_path), "--push", "origin", cwd=tmp_path, env=hook)
    assert result.exit_code == 0, result.output
    branch = json.loads((only_run_dir(tmp_path) / "run.json").read_text())["branch"]
    assert f"pushed {branch} to origin" in result.stderr
    pushed = subprocess.run(["git", "-C", str(remote), "show", f"{branch}:knob.py"], capture_output=True, text=True)
    assert pushed.stdout == "X = 2\n", pushed.stderr


def test_a_push_that_fails_says_why_and_exits_3_with_the_branch_kept(tmp_path: Path) -> None:
    repo, goal = _pushing_goal(tmp_path)
    result = run_cli("run", str(goal), "--home", str(tmp_path), "--push", "nowhere", cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert "could not push" in result.stderr and "nowhere" in result.stderr, result.stderr
    branch = json.loads((only_run_dir(tmp_path) / "run.json").read_text())["branch"]
    kept = subprocess.run(["git", "-C", str(repo), "show", f"{branch}:knob.py"], capture_output=True, text=True)
    assert kept.stdout == "X = 2\n"
