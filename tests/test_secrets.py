"""Secrets stay out: the check and a command proposer get no secret-looking variables unless the goal passes
them, and no file goalloop writes (record, worktree, git objects) ever holds the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import git, make_repo, run_cli, write_goal

KEY = "sk-ant-api03-NEVER-WRITE-ME-0123456789"
TOKEN = "ghp_ALSO-NEVER-WRITTEN-9876543210"
SECRET_ENV = {"ANTHROPIC_API_KEY": KEY, "GITHUB_TOKEN": TOKEN, "HARMLESS_SETTING": "visible-value"}


def _goal(tmp_path: Path, repo: Path, passed: list[str] | None = None) -> Path:
    goal = {
        "repo": str(repo),
        "check": {"run": "env > check_env.txt; python3 score.py; env", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": 1},
        "proposer": {
            "kind": "command",
            # The adversary writes its whole environment into the repo (so into an attempt commit) and stdout.
            "run": f"env > proposer_env.txt; env > {tmp_path}/seen_by_proposer.txt; env; echo 'X = 2' > knob.py",
        },
    }
    if passed is not None:
        goal["env"] = {"pass": passed}
    return write_goal(tmp_path / "g.yaml", goal)


def _everything_written(tmp_path: Path, repo: Path) -> str:
    texts = [p.read_text(errors="replace") for p in (tmp_path / "home").rglob("*") if p.is_file()]
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=repo, capture_output=True, text=True).stdout
    return "\n".join(texts) + history


def test_no_key_reaches_the_check_the_proposer_the_record_or_git(tmp_path: Path, score_repo: Path) -> None:
    home = tmp_path / "home"
    result = run_cli("run", str(_goal(tmp_path, score_repo)), "--home", str(home), cwd=tmp_path, env=SECRET_ENV)
    assert result.exit_code == 1, result.output
    written = _everything_written(tmp_path, score_repo) + result.output
    assert "HARMLESS_SETTING=visible-value" in git(score_repo, "log", "-p", "--all"), \
        "the adversary's dump of its environment is committed, and ordinary variables are in it"
    assert KEY not in written and TOKEN not in written
    assert KEY not in (tmp_path / "seen_by_proposer.txt").read_text()


def test_env_pass_lets_a_named_secret_through_to_the_command_proposer(tmp_path: Path, score_repo: Path) -> None:
    result = run_cli("run", str(_goal(tmp_path, score_repo, ["ANTHROPIC_API_KEY"])), "--home",
                     str(tmp_path / "home"), cwd=tmp_path, env=SECRET_ENV)
    assert result.exit_code == 1, result.output
    seen = (tmp_path / "seen_by_proposer.txt").read_text()
    assert f"ANTHROPIC_API_KEY={KEY}" in seen and TOKEN not in seen


def test_an_unknown_env_key_is_a_goal_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    goal = write_goal(tmp_path / "g.yaml", {"repo": str(repo), "check": {"run": "true"}, "env": {"passs": ["X"]},
                                           "proposer": {"kind": "command", "run": "true"}})
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert result.exit_code == 2 and "pass" in result.stderr
