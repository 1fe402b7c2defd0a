"""What `goalloop validate` says about a goal file: everything is checked that can be without running
anything, then what a run would do is said in lines, each a list of chunks, plain text or (text, style).

cli/goals.py prints the lines with rich; quick.py, the entry point, prints them itself when it is sure to
print them as rich would, so that `validate` starts without the typer app. One text, two printers.
"""

from __future__ import annotations

import os
from pathlib import Path

Chunk = str | tuple[str, str]
Line = list[Chunk]


def validation_lines(goal_file: Path) -> list[Line]:
    """Check `goal_file` as a run would before it starts (a GoalError names what is wrong), and say what a run
    of it would do."""
    from goalloop.environment import without_secrets
    from goalloop.goal import format_duration
    from goalloop.preflight import goal_warnings
    from goalloop.prompt import describe_check
    from goalloop.proposers.base import unenforced_budgets
    from goalloop.wiring import _prepare, make_proposer

    goal, target, rules = _prepare(goal_file)
    proposer = make_proposer(goal, target, rules)
    budget = goal.budget
    limits = [
        f"{budget.iterations} attempts" if budget.iterations else "",
        f"{format_duration(budget.time)}" if budget.time else "",
        f"{budget.tokens:,} tokens" if budget.tokens else "",
        f"${budget.usd:.2f}" if budget.usd is not None else "",
    ]
    lines: list[Line] = [
        [("ok", "green"), f" {goal_file}: goal ", (goal.run_name, "bold")],
        [f"  repo       {target.root} at {goal.base} ({target.base_commit[:12]})"],
        [f"  check      {describe_check(goal)}"],
    ]
    if goal.is_metric_goal and goal.target.value is None:
        lines.append(["  target     none: improve until the budget is spent"])
    lines.append([f"  budget     {', '.join(x for x in limits if x) or 'none'}"])
    lines.append([f"  proposer   {goal.proposer.kind}"
                  + (f", {goal.parallel} candidates at once a round (parallel)" if goal.parallel > 1 else "")])
    if goal.executor.kind == "ray":
        config = goal.executor
        asks = ", ".join([f"{config.num_cpus:g} CPU"] + [f"{config.num_gpus:g} GPU"] * bool(config.num_gpus)
                         + [f"{amount:g} {name}" for name, amount in config.resources.items()])
        lines.append([f"  checks     on the Ray cluster at {config.address}, each asking for {asks}"])
    lines.append([f"  protected  {', '.join(p.lstrip('/') for p in rules.protected_patterns)}"])
    if goal.sandbox is not None:
        lines.append([f"  sandbox    {goal.sandbox.summary()}"])
    lines.append([f"  editable   {', '.join(goal.editable) or 'everything not protected'}"])
    lines.append([f"  a run creates branch goalloop/{goal.run_name}-<time> and a worktree under workspaces/"])
    warnings = goal_warnings(goal, target, without_secrets(os.environ, goal.env.pass_))
    warnings += unenforced_budgets(goal.budget, proposer)
    lines += [["  ", ("warning", "yellow"), f"    {warning}"] for warning in warnings]
    lines.append([f"  next: `goalloop doctor {goal_file}` proves the check tests the worktree (runs it twice)"])
    return lines
