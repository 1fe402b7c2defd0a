"""The commands about a goal file, before any run: `validate` (what a run would do), `doctor` (does the
check test the worktree), `init` (a starter goal file) and `schema` (the JSON Schema of goal files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.markup import escape

from goalloop.cli.console import markup, out


def validate_goal(goal_file: Path) -> None:
    """Check a goal file and print what a run would do, without running anything."""
    from goalloop.validation import validation_lines

    for line in validation_lines(goal_file):
        out.print(markup(line))


def write_starter(proposer: str, name: str | None, repo: Path) -> None:
    """A commented starter goal file in goals/ (and goal.schema.json beside it); never overwrites."""
    import git

    from goalloop.errors import UsageError
    from goalloop.starter import PROPOSER_BLOCKS, starter_goal

    if proposer not in PROPOSER_BLOCKS:
        raise UsageError(f"--proposer must be one of {', '.join(PROPOSER_BLOCKS)}, not '{proposer}'")
    try:
        root = Path(git.Repo(repo, search_parent_directories=True).working_tree_dir or repo)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(f"{repo.resolve()} is not inside a git repository", fix="run `git init` first, or pass --repo") from None
    goals_dir = root / "goals"
    goal_path = goals_dir / f"{name or root.name}.yaml"
    if goal_path.exists():
        raise UsageError(f"{goal_path} already exists; not overwriting it", fix="pass --name for another file name")
    goals_dir.mkdir(exist_ok=True)
    goal_path.write_text(starter_goal(proposer, root, goal_path), encoding="utf-8")
    schema_path = goals_dir / "goal.schema.json"
    if not schema_path.exists():
        schema_path.write_text(schema_text(), encoding="utf-8")
    out.print(f"wrote {goal_path}\nnext: edit it, then `goalloop validate {goal_path}` and `goalloop run {goal_path}`")


def run_doctor(goal_file: Path) -> int:
    """Print the doctor's findings; return the exit code (1 when a finding needs fixing)."""
    from goalloop.doctor import diagnose
    from goalloop.environment import without_secrets
    from goalloop.wiring import _prepare

    goal, target, rules = _prepare(goal_file)
    out.print(f"doctor {goal_file}: the check in a scratch worktree at {target.base_commit[:12]}")
    diagnosis = diagnose(goal, target, rules, without_secrets(os.environ, goal.env.pass_))
    style = {"ok": "[green]ok[/]     ", "note": "[cyan]note[/]   ", "problem": "[bold red]problem[/]"}
    for finding in diagnosis.findings:
        out.print(f"  {style[finding.level]} {escape(finding.text)}")
        if finding.fix:
            out.print(f"           fix: {escape(finding.fix)}")
    return 1 if diagnosis.problems else 0


def schema_text() -> str:
    from goalloop.goal import goal_json_schema

    return json.dumps(goal_json_schema(), indent=2) + "\n"
