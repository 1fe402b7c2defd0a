"""The commands about a goal file, before any run: `validate` (what a run would do), `doctor` (does the
check test the worktree), `init` (a starter goal file) and `schema` (the JSON Schema of goal files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.markup import escape

from goalloop.cli.console import out


def validate_goal(goal_file: Path) -> None:
    """Check a goal file and print what a run would do, without running anything."""
    from goalloop.environment import without_secrets
    from goalloop.goal import format_duration
    from goalloop.preflight import goal_warnings
    from goalloop.prompt import describe_check
    from goalloop.proposers.base import unenforced_budgets
    from goalloop.wiring import _prepare, make_proposer

    goal, target, rules = _prepare(goal_file)
    proposer = make_proposer(goal, target)
    budget = goal.budget
    limits = [
        f"{budget.iterations} attempts" if budget.iterations else "",
        f"{format_duration(budget.time)}" if budget.time else "",
        f"{budget.tokens:,} tokens" if budget.tokens else "",
        f"${budget.usd:.2f}" if budget.usd is not None else "",
    ]
    out.print(f"[green]ok[/] {goal_file}: goal [bold]{goal.run_name}[/]")
    out.print(f"  repo       {target.root} at {goal.base} ({target.base_commit[:12]})")
    out.print(f"  check      {escape(describe_check(goal))}")
    if goal.is_metric_goal and goal.target.value is None:
        out.print("  target     none: improve until the budget is spent")
    out.print(f"  budget     {', '.join(x for x in limits if x) or 'none'}")
    out.print(f"  proposer   {goal.proposer.kind}"
              + (f", {goal.parallel} candidates at once a round (parallel)" if goal.parallel > 1 else ""))
    if goal.executor.kind == "ray":
        config = goal.executor
        asks = ", ".join([f"{config.num_cpus:g} CPU"] + [f"{config.num_gpus:g} GPU"] * bool(config.num_gpus)
                         + [f"{amount:g} {name}" for name, amount in config.resources.items()])
        out.print(f"  checks     on the Ray cluster at {escape(config.address)}, each asking for {escape(asks)}")
    out.print(f"  protected  {escape(', '.join(p.lstrip('/') for p in rules.protected_patterns))}")
    if goal.sandbox is not None:
        out.print(f"  sandbox    {escape(goal.sandbox.summary())}")
    out.print(f"  editable   {escape(', '.join(goal.editable) or 'everything not protected')}")
    out.print(f"  a run creates branch goalloop/{goal.run_name}-<time> and a worktree under workspaces/")
    for warning in goal_warnings(goal, target, without_secrets(os.environ, goal.env.pass_)):
        out.print(f"  [yellow]warning[/]    {escape(warning)}")
    for warning in unenforced_budgets(goal.budget, proposer):
        out.print(f"  [yellow]warning[/]    {escape(warning)}")
    out.print(f"  next: `goalloop doctor {goal_file}` proves the check tests the worktree (runs it twice)")


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
