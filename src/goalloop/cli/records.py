"""The commands that read run records: `status` (where one run stands), `runs` (every run, newest first),
`clean` (the worktrees of finished runs) and `report` (report.md and report.html).

Each reads the ledger alone, so it answers from another terminal while a run goes on, and on a run that was
killed; and each imports only what it needs, so it starts at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from rich.markup import escape

from goalloop.cli.console import Home, err, out
from goalloop.ledger import find_run, list_runs, read_run

if TYPE_CHECKING:
    from goalloop.goal import Budget
    from goalloop.ledger import RunRecord


def show_status(home: Path, run_id: str | None, as_json: bool) -> None:
    from goalloop.cli.summary import attempt_line
    from goalloop.report.standing import Standing

    record = read_run(find_run(Home(home.resolve()).runs, run_id))
    meta = record.meta
    standing = Standing.of(record, run_state(record), _budget_of(record))
    if as_json:
        out.print_json(json.dumps(standing.as_json(record.attempts[-5:], meta.metric_goal)))
        return
    out.print(f"run [bold]{meta.run_id}[/]  goal {escape(meta.goal_name)}  [bold]{escape(standing.state)}[/]")
    if standing.reason:
        out.print(f"  stopped    {escape(standing.reason)}")
    if standing.resumable and "goalloop resume" not in standing.reason:
        out.print(f"  resume     goalloop resume {meta.run_id}")
    for now in standing.in_progress:
        out.print(f"  now        {escape(now.text())}" + (f" (worktree {now.slot})" if now.slot else ""))
    counts = ", ".join(f"{n} {v}" for v, n in standing.verdicts.items()) or "none yet"
    out.print(f"  attempts   {record.iterations} ({counts})")
    if standing.best_attempt is not None:
        out.print(f"  best       {standing.best} at attempt {standing.best_attempt} (baseline {standing.baseline})")
    for use in standing.budget:
        out.print(f"  {'budget' if use is standing.budget[0] else '':10} {escape(use.text())}")
    out.print(f"  spent      {escape(standing.spent)}")
    for line in standing.findings:
        out.print(f"  [yellow]{escape(line)}[/]")
    out.print(f"  branch     {meta.branch}  (in {meta.repo})")
    out.print(f"  record     {record.run_dir}")
    for attempt in record.attempts[-5:]:
        out.print("  " + attempt_line(attempt, meta.metric_goal))


def _budget_of(record: RunRecord) -> Budget | SimpleNamespace | None:
    """The run's budget as it started with it (budget.json), else as its goal.yaml says, or None if that no
    longer reads."""
    from goalloop.errors import GoalloopError
    from goalloop.goal import parse_goal
    from goalloop.tally import saved_budget

    figures = saved_budget(str(record.run_dir))
    if figures is not None:
        return SimpleNamespace(**figures)
    try:
        return parse_goal((record.run_dir / "goal.yaml").read_text(encoding="utf-8"), Path(record.meta.goal_path)).budget
    except (GoalloopError, OSError):
        return None


def show_runs(home: Path, as_json: bool) -> None:
    from goalloop.errors import GoalloopError
    from goalloop.goal import format_duration

    rows = []
    for folder in reversed(list_runs(Home(home.resolve()).runs)):
        try:
            record = read_run(folder)
        except GoalloopError as exc:
            rows.append({"run_id": folder.name, "state": "unreadable", "error": exc.message})
            continue
        best = record.kept
        rows.append({"run_id": record.meta.run_id, "goal": record.meta.goal_name, "state": run_state(record),
                     "attempts": record.iterations, "best": best.result_text(record.meta.metric_goal) if best else None,
                     "time": record.elapsed, "started": record.meta.created_at})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no runs yet; start one with `goalloop run goals/<goal>.yaml`")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    table.add_column("run", overflow="ellipsis", no_wrap=True, min_width=12)
    table.add_column("state", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("best", justify="right", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("time", justify="right", no_wrap=True)
    for row in rows:
        spent = format_duration(row["time"]) if "time" in row else ""
        table.add_row(row["run_id"], row["state"], str(row.get("attempts", "")), row.get("best") or "-", spent)
    width = out.width if out.is_terminal else max(out.width, 200)
    out.print(table, width=width, crop=True)


def clean_runs(home: Path, dry_run: bool) -> None:
    from goalloop.cleanup import holds_nothing, remove_run
    from goalloop.git_runner import GitFailed
    from goalloop.workspace import remove_worktrees

    place = Home(home.resolve())
    for run_dir in list_runs(place.runs):
        record = read_run(run_dir)
        worktree = Path(record.meta.worktree)
        if holds_nothing(record) and run_state(record) != "running":
            if dry_run:
                out.print(f"would remove {record.meta.run_id}: it never recorded a baseline (worktree, branch, record)")
            else:
                remove_run(Path(record.meta.repo), worktree, record.meta.run_id, run_dir)
                out.print(f"removed {record.meta.run_id}: it never recorded a baseline")
            continue
        if not record.finished or run_state(record) == "running" or not worktree.exists():
            continue
        if dry_run:
            out.print(f"would remove {worktree} ({record.meta.run_id}, {record.state})")
            continue
        try:
            removed = remove_worktrees(Path(record.meta.repo), worktree)
        except GitFailed as exc:
            err.print(f"[yellow]warning:[/] could not remove {worktree}: {escape(exc.message.strip())}")
            continue
        out.print(f"removed {len(removed)} worktree(s) of {record.meta.run_id}; branch {record.meta.branch} kept")


def write_reports(home: Path, run_id: str | None, png: bool) -> None:
    from goalloop.report import write_report

    paths = write_report(find_run(Home(home.resolve()).runs, run_id), png=png)
    for path in (paths.markdown, paths.html, paths.png):
        if path is not None:
            out.print(str(path))



def run_state(record: RunRecord) -> str:
    """The run's state as it stopped, or `running` while the process holding its lock lives."""
    if record.stop is not None:
        return record.state
    lock = Path(record.run_dir).parent / ".locks" / f"{record.meta.goal_name}.owner"
    owner = lock.read_text(encoding="utf-8").strip() if lock.exists() else ""
    if owner and record.meta.run_id in owner and _pid_alive(owner):
        return "running"
    return "stopped (killed?)"


def _pid_alive(owner: str) -> bool:
    try:
        pid = int(owner.split()[1])
        os.kill(pid, 0)
        return True
    except (IndexError, ValueError, ProcessLookupError, PermissionError):
        return False
