"""Shared fixtures: real git repositories in tmp dirs, and the real CLI run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# The suite runs as a user's shell would, outside CI, wherever it is run: CI itself sets CI=true (and a
# GitHub runner its GITHUB_* files), which would turn on the annotations and job summary that
# tests/test_ci_outputs.py asks for explicitly. Removed at import, before any fixture copies os.environ.
for _ci_variable in [name for name in os.environ if name == "CI" or name.startswith(("GITHUB_", "RUNNER_"))]:
    del os.environ[_ci_variable]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A git repository at `path` with `files` committed on branch main."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(content), encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
    """Run `goalloop ARGS` as a user would, in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "goalloop", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_goal(path: Path, goal: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(goal, sort_keys=False), encoding="utf-8")
    return path


def results_rows(run_dir: Path) -> list[dict[str, str]]:
    lines = (run_dir / "results.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def only_run_dir(home: Path) -> Path:
    runs = [p for p in (home / "runs").iterdir() if (p / "run.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


def assert_ledger_and_git_agree(repo: Path, home: Path, run_dir: Path, iterations: int, slots: int) -> None:
    """After a run that was killed and resumed: one row an attempt, every ref a row and every row with a
    commit its ref, the kept rows are the branch in order, and every slot's worktree is clean at its head."""
    run_id = run_dir.name
    rows = results_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(0, iterations + 1))
    listing = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/goalloop/{run_id}/")
    named = [line.split() for line in listing.splitlines()]
    refs = {int(name.rsplit("/", 1)[1]): sha for name, sha in named if name.rsplit("/", 1)[1].isdigit()}
    aside = [name for name, _ in named if f"/{run_id}/unjudged/" in name]
    assert all(int(name.rsplit("/", 1)[1].split("-")[0]) in {int(r["iteration"]) for r in rows} for name in aside), \
        "an attempt set aside was proposed again and has its row"
    for row in rows[1:]:
        if row["commit"]:
            assert refs[int(row["iteration"])].startswith(row["commit"]), f"row {row['iteration']} has its ref"
    assert set(refs) <= {int(r["iteration"]) for r in rows}, "every ref has a ledger row"
    kept_rows = [r for r in rows[1:] if r["verdict"] == "keep"]
    on_branch = git(repo, "rev-list", "--reverse", f"{rows[0]['commit']}..goalloop/{run_id}").splitlines()
    assert [c[:12] for c in on_branch] == [r["commit"] for r in kept_rows], "kept rows are the branch, in order"
    head = git(repo, "rev-parse", f"goalloop/{run_id}")
    for slot in range(slots):
        worktree = home / "workspaces" / run_id / str(slot)
        assert git(worktree, "rev-parse", "HEAD") == head, f"slot {slot} is at the kept commit"
        assert git(worktree, "status", "--porcelain") == ""


SCORE_PY = """\
import knob
print(f"score: {knob.X}")
"""


@pytest.fixture
def score_repo(tmp_path: Path) -> Path:
    """A repo whose check `python3 score.py` prints `score: X` with X read from knob.py."""
    return make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
