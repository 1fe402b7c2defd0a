"""Running a goal: `goalloop run` and `goalloop resume`, under the live view on a terminal or with plain
progress lines elsewhere; then the summary, the CI files, the push, and the run's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import typer
from rich.markup import escape

from goalloop import faults
from goalloop.check import output_excerpt
from goalloop.cleanup import holds_nothing, remove_run
from goalloop.cli.console import Home, err, out
from goalloop.cli.summary import attempt_line, print_summary, progress_printer, write_ci_files
from goalloop.environment import without_secrets
from goalloop.errors import GoalloopError, UsageError
from goalloop.executors import CheckRunner
from goalloop.git_runner import git_environment
from goalloop.goal import Goal, parse_goal, resolve_deadline
from goalloop.ledger import AttemptRecord, Ledger, RunMeta, find_run, list_runs, new_run_id, read_run, utc_now
from goalloop.live import LiveView
from goalloop.loop import Loop, RunOutcome
from goalloop.proposers.base import Proposer, unenforced_budgets
from goalloop.report.data import set_aside_line
from goalloop.resume import reconcile
from goalloop.sandbox import Bubblewrap, RunLayout
from goalloop.tally import save_budget
from goalloop.wiring import _prepare, _require_sandbox, connect_cluster, make_checks, make_proposer
from goalloop.workspace import PathRules, RepoTarget, Workspace, slot_worktrees


@dataclass(frozen=True)
class Presentation:
    """How a run talks to the outside: progress lines, JSON events, CI files, a push."""

    quiet: bool = False
    ci: bool = False
    json_events: bool = False
    push: str | None = None

    @classmethod
    def from_options(cls, quiet: bool, ci: bool, log_format: str, push: str | None) -> Presentation:
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format must be text or json, not '{log_format}'")
        return cls(quiet=quiet, ci=ci or os.environ.get("CI", "").lower() == "true",
                   json_events=log_format == "json", push=push)

    @property
    def progress(self) -> bool:
        return not self.quiet and not self.json_events

    @property
    def live(self) -> bool:
        """A live view instead of plain lines: only on a terminal, never in CI."""
        return self.progress and not self.ci and out.is_terminal


def start_run(goal_file: Path, home: Path, show: Presentation, resume_latest: bool) -> None:
    """A new run of the goal (or, with `resume_latest`, the latest unfinished one continued)."""
    goal, target, rules = _prepare(goal_file)
    proposer = make_proposer(goal, target, rules)
    for warning in unenforced_budgets(goal.budget, proposer):
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    place = Home(home.resolve())
    cluster = connect_cluster(goal)
    if resume_latest:
        mine = [p for p in list_runs(place.runs) if read_run(p).meta.goal_name == goal.run_name]
        if mine:
            _resume(mine[-1], place, show, cluster)
            return
        if show.progress:
            out.print(f"no earlier run of goal '{goal.run_name}' under {place.runs}; starting a new one")
    faults.require_space([place.root, target.root], faults.MIN_FREE_BYTES)
    place.prepare()
    with place.goal_lock(goal.run_name) as lock:
        run_id = new_run_id(goal.run_name, place.runs)
        lock.acquire(run_id)
        worktree = place.workspaces / run_id
        meta = RunMeta(
            run_id=run_id, goal_name=goal.run_name, goal_path=str(goal.source.resolve()), repo=str(target.root),
            base_commit=target.base_commit, branch=f"goalloop/{run_id}", worktree=str(worktree),
            created_at=utc_now(), metric_goal=goal.is_metric_goal, direction=goal.target.direction,
            target=goal.target.value,
        )
        ledger = Ledger.create(place.runs / run_id, meta, goal.source.read_text(encoding="utf-8"),
                               echo=sys.stdout if show.json_events else None)
        save_budget(str(ledger.run_dir), goal.budget)
        try:
            ledger.event("run_started", run_id=run_id, pid=os.getpid(), base_commit=target.base_commit)
            pool = Workspace.create_pool(target, worktree, run_id, ledger.run_dir / "git-exclude", goal.parallel)
            if show.progress:
                slots = f" ({goal.parallel} worktrees, parallel)" if goal.parallel > 1 else ""
                out.print(f"run [bold]{run_id}[/]  branch {pool[0].branch}  worktree {worktree}{slots}")
            if show.progress:
                out.print(f"[dim]tip: `goalloop doctor {goal_file}` proves the check tests the worktree[/]")
            checks = make_checks(goal, cluster, ledger, meta)
            outcome = _watch(_loop(goal, pool, ledger, proposer, rules, [], show, meta, checks), show, run_id)
        except GoalloopError as exc:
            ledger.close()
            if exc.exit_code == 2 and holds_nothing(read_run(place.runs / run_id)):
                remove_run(target.root, worktree, run_id, place.runs / run_id)
            raise
        finally:
            ledger.close()
    _finish(goal, meta, outcome, place.runs / run_id, show)


def resume_run(run_id: str | None, home: Path, show: Presentation) -> None:
    """Continue a run that was interrupted or killed, keeping the budget it already spent."""
    place = Home(home.resolve())
    _resume(find_run(place.runs, run_id), place, show)


def _resume(run_dir: Path, place: Home, show: Presentation, cluster: object | None = None) -> None:
    record = read_run(run_dir)
    meta = record.meta
    if record.finished:
        out.print(f"run {meta.run_id} is finished ({record.state}: {escape(str(record.stop.get('reason', '')))}); nothing to do")
        raise typer.Exit(int(record.stop["exit_code"]))
    goal = parse_goal((run_dir / "goal.yaml").read_text(encoding="utf-8"), Path(meta.goal_path))
    _require_sandbox(goal)
    save_budget(str(run_dir), goal.budget)  # a run from before budget.json gets one: its status then starts fast
    target = RepoTarget(root=Path(meta.repo), base_commit=meta.base_commit)
    rules = PathRules.for_goal(goal, target)
    proposer = make_proposer(goal, target, rules)
    faults.require_space([run_dir, Path(meta.worktree), target.root], faults.MIN_FREE_BYTES, meta.run_id)
    cluster = cluster or connect_cluster(goal)
    with place.goal_lock(goal.run_name) as lock:
        lock.acquire(meta.run_id)
        ledger = Ledger(run_dir, echo=sys.stdout if show.json_events else None)
        try:
            pool = [Workspace(target.root, path, meta.run_id, run_dir / "git-exclude")
                    for path in slot_worktrees(Path(meta.worktree), goal.parallel)]
            set_aside: list[dict] = []
            history = reconcile(pool, ledger, record.attempts, meta.base_commit, on_set_aside=set_aside.append)
            ledger.event("run_resumed", run_id=meta.run_id, pid=os.getpid(), attempts=len(history))
            if show.progress:
                out.print(f"resuming [bold]{meta.run_id}[/] after attempt {history[-1].iteration if history else '-'}")
                for aside in set_aside:
                    out.print(f"[dim]{escape(set_aside_line(aside))}[/]")
                for lost in history[len(record.attempts):]:
                    out.print(attempt_line(lost, goal.is_metric_goal))
            checks = make_checks(goal, cluster, ledger, meta)
            outcome = _watch(_loop(goal, pool, ledger, proposer, rules, history, show, meta, checks), show, meta.run_id)
        finally:
            ledger.close()
    _finish(goal, meta, outcome, run_dir, show)


def _loop(goal: Goal, pool: list[Workspace], ledger: Ledger, proposer: Proposer, rules: PathRules,
          history: list[AttemptRecord], show: Presentation, meta: RunMeta, checks: CheckRunner | None) -> Loop:
    last_output = ""
    if history:
        attempt_dir = ledger.attempt_dir(history[-1].iteration)
        last_output = output_excerpt(attempt_dir / "check.stdout.log", attempt_dir / "check.stderr.log")
    return Loop(goal, pool, ledger, proposer, rules, without_secrets(os.environ, goal.env.pass_), history=history,
                last_output=last_output, on_record=progress_printer(goal, ledger, show.ci) if show.progress else None,
                deadline=_deadline(goal, meta), sandbox=_sandbox(goal, rules, meta, ledger.run_dir), checks=checks)


def _sandbox(goal: Goal, rules: PathRules, meta: RunMeta, run_dir: Path) -> Bubblewrap | None:
    """The goal's sandbox for this run: its run folders, worktrees and checkout hidden."""
    if goal.sandbox is None:
        return None
    target = RepoTarget(root=Path(meta.repo), base_commit=meta.base_commit)
    layout = RunLayout.for_run(target, rules, run_dir.parent, Path(meta.worktree).parent, run_dir)
    return Bubblewrap(goal.sandbox, layout, goal.source.resolve().parent)


def _watch(loop: Loop, show: Presentation, run_id: str) -> RunOutcome:
    """Run the loop under the live view on a terminal, with plain progress lines elsewhere."""
    if not show.live:
        return loop.run()
    with LiveView(loop.goal, run_id, out, loop.history) as view:
        loop.on_record = view.add
        loop.bench.on_phase = view.phase
        return loop.run()


def _deadline(goal: Goal, meta: RunMeta) -> datetime | None:
    """The goal's deadline, counted from when the run started (so a resume keeps the same one)."""
    if goal.budget.deadline is None:
        return None
    started = datetime.fromisoformat(meta.created_at).astimezone().replace(tzinfo=None)
    return resolve_deadline(goal.budget.deadline, started)


def _finish(goal: Goal, meta: RunMeta, outcome: RunOutcome, run_dir: Path, show: Presentation) -> None:
    """The summary, the CI files and the push; then exit with the run's code."""
    if not show.json_events:
        print_summary(goal, meta, outcome, run_dir)
    if show.ci:
        write_ci_files(read_run(run_dir), outcome, warn_holdout=not show.progress)
    if show.push and outcome.exit_code == 0:
        pushed = subprocess.run(["git", "-C", meta.repo, "push", "--quiet", show.push, f"refs/heads/{meta.branch}"],
                                env=git_environment(os.environ), capture_output=True, text=True, errors="replace")
        if pushed.returncode != 0:
            err.print(f"[yellow]warning:[/] could not push {meta.branch} to {show.push}: {escape(pushed.stderr.strip())}")
            raise typer.Exit(3)
        err.print(f"pushed {meta.branch} to {show.push}")
    raise typer.Exit(outcome.exit_code)
