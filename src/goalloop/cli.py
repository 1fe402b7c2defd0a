"""The command line. The only module that picks concrete classes, prints, and sets exit codes.

Exit codes of `run`: 0 target met; 1 budget spent; 2 invalid goal file or usage; 3 the run could not go on;
130 interrupted (resumable).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from datetime import datetime
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import git
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from goalloop import __version__, faults
from goalloop.environment import without_secrets
from goalloop.errors import GoalloopError, UsageError
from goalloop.executors import CheckRunner
from goalloop.check import output_excerpt
from goalloop.cleanup import holds_nothing, remove_run
from goalloop.doctor import diagnose
from goalloop.preflight import goal_warnings
from goalloop.goal import Goal, format_duration, goal_json_schema, parse_goal, resolve_deadline
from goalloop.ledger import AttemptRecord, Ledger, RunMeta, RunRecord, find_run, list_runs, new_run_id, read_run, utc_now
from goalloop.loop import Loop, RunOutcome
from goalloop.live import VERDICT_STYLE, LiveView
from goalloop.prompt import describe_check
from goalloop.report import ci, write_report
from goalloop.report.standing import Standing
from goalloop.resume import reconcile
from goalloop.sandbox import Bubblewrap, RunLayout
from goalloop.starter import PROPOSER_BLOCKS, starter_goal
from goalloop.proposers.base import Proposer, unenforced_budgets
from goalloop.git_runner import GitFailed
from goalloop.workspace import (
    PathRules, RepoTarget, RunLock, Workspace, remove_worktrees, slot_worktrees,
)
from goalloop.wiring import _prepare, _require_sandbox, connect_cluster, make_checks, make_proposer

EXIT_CODES = (
    "Exit codes: 0 target met; 1 a budget spent without meeting it; 2 invalid goal file or usage;"
    " 3 the run could not go on (resumable); 130 interrupted by Ctrl-C, SIGTERM or SIGHUP (resumable)."
)


def _flags_as_flags(params: list) -> list:  # noqa: ANN001
    """Help shows a flag as a flag (`-q, --quiet`), not as an option taking a `<bool>`."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx):  # noqa: ANN001, ANN201
        return _flags_as_flags(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx):  # noqa: ANN001, ANN201
        return _flags_as_flags(super().get_params(ctx))


app = typer.Typer(
    name="goalloop",
    help="Loop a proposer against an objective check until a goal is met or the budget is spent.",
    epilog=f"{EXIT_CODES}\n\nExample: goalloop init && goalloop run goals/<name>.yaml, then goalloop status",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
command = functools.partial(app.command, cls=_Command)


def _help(example: str) -> str:
    """The end of a command's help: the exit codes and an example."""
    return f"{EXIT_CODES}\n\nExample: {example}"
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

HomeOption = Annotated[
    Path, typer.Option("--home", metavar="DIR", help="Folder holding runs/ and workspaces/ (default: the current directory).")
]


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def workspaces(self) -> Path:
        return self.root / "workspaces"

    def prepare(self) -> None:
        """Create runs/ and workspaces/, each ignoring itself so they never show in `git status`."""
        for folder in (self.runs, self.workspaces):
            if not folder.exists():
                folder.mkdir(parents=True)
                (folder / ".gitignore").write_text("*\n", encoding="utf-8")

    def goal_lock(self, goal_name: str) -> RunLock:
        return RunLock(self.runs / ".locks" / f"{goal_name}.lock", f"goal '{goal_name}'")


def main() -> None:
    """Entry point: turn GoalloopErrors into messages and exit codes, and anything else into a short report."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hang_up)
    for stream in (sys.stdout, sys.stderr):  # a goal file's lone surrogate is shown escaped, never a crash
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = app(standalone_mode=False)
    except typer.core._click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.core._click.exceptions.ClickException as exc:  # usage: the same style as every other error
        where = getattr(getattr(exc, "ctx", None), "command_path", "goalloop")
        _error(exc.format_message().replace("Value error, ", ""), f"see `{where} -h`", getattr(exc, "exit_code", 2))
    except typer.Abort:
        _error("aborted", None, 130)
    except GoalloopError as exc:
        if _in_ci():
            _annotate_error(exc)
        _error(exc.message, exc.fix, exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted", None, 130)
    except Exception as exc:  # a fault of the machine, named; else a bug: the traceback in a file, one paragraph
        fault = faults.named(exc) if isinstance(exc, OSError) else None
        if fault is not None:
            _error(fault.message, fault.fix, fault.exit_code)
        report = Path(os.environ.get("TMPDIR", "/tmp")) / f"goalloop-crash-{os.getpid()}.txt"
        report.write_text(traceback.format_exc(), encoding="utf-8")
        err.print(
            f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            f"The details are in {report}. The run (if one started) can be resumed."
        )
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, fix: str | None, exit_code: int) -> None:
    """The one way an error is shown: `error: what` and, when there is one, `  fix: how`; then the exit."""
    err.print(f"[bold red]error:[/] {escape(message)}" + (f"\n  [bold]fix:[/] {escape(fix)}" if fix else ""))
    sys.exit(exit_code)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: stop as Ctrl-C does, cleanly and resumably."""
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: object) -> None:
    """SIGHUP (the terminal closed): stop as Ctrl-C does; there is no terminal left to print to."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                os.dup2(devnull, fd)
        except OSError:
            os.dup2(devnull, fd)
    os.close(devnull)
    raise KeyboardInterrupt


def _in_ci() -> bool:
    return (os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("CI", "").lower() == "true"
            or "--ci" in sys.argv[1:])


_AT_LINE = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+): ", re.M)


def _annotate_error(exc: GoalloopError) -> None:
    """`::error file=,line=::` for GitHub, one a mistake, so each is marked on its line of the goal file."""
    starts = list(_AT_LINE.finditer(exc.message))
    if not starts:
        out.print(ci.command("error", str(exc), title="goalloop"), markup=False)
        return
    for found, after in zip(starts, starts[1:] + [None]):
        text = exc.message[found.end():after.start() if after else None].strip()
        if after is None and exc.fix:
            text += f"\n  fix: {exc.fix}"
        path = Path(found["file"])
        try:
            path = path.resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        out.print(ci.command("error", text, title="goal file", file=str(path), line=found["line"]), markup=False)


# -- commands ---------------------------------------------------------------------------------------------
GoalArgument = Annotated[Path, typer.Argument(metavar="GOAL.yaml", help="The goal file (YAML).")]
RunIdArgument = Annotated[
    Optional[str], typer.Argument(metavar="[RUN_ID]", help="Run id or a unique prefix (default: the latest run).")
]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="Print only the final summary.")]
CiOption = Annotated[
    bool,
    typer.Option("--ci", help="Plain output, summary to $GITHUB_STEP_SUMMARY, outputs to $GITHUB_OUTPUT (default when CI=true)."),
]
LogFormatOption = Annotated[
    Literal["text", "json"],
    typer.Option("--log-format", help="text: progress lines; json: the run's events as JSON lines on stdout."),
]
PushOption = Annotated[
    Optional[str], typer.Option("--push", metavar="REMOTE", help="Push the run's branch to REMOTE when the target is met.")
]


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


@command(epilog=f"{EXIT_CODES}\n\nExamples:\n\n    goalloop run goals/fix-tests.yaml\n\n"
         "    nohup goalloop run goals/fix-tests.yaml -q > run.log 2>&1 &    # overnight")
def run(
    goal_file: GoalArgument,
    home: HomeOption = Path("."),
    quiet: QuietOption = False,
    resume_latest: Annotated[
        bool, typer.Option("--resume", help="Continue the latest unfinished run of this goal instead of starting anew.")
    ] = False,
    ci: CiOption = False,
    log_format: LogFormatOption = "text",
    push: PushOption = None,
) -> None:
    """Run a goal: baseline, then propose / check / keep-or-revert until the target or the budget."""
    show = Presentation.from_options(quiet, ci, log_format, push)
    goal, target, rules = _prepare(goal_file)
    proposer = make_proposer(goal, target)
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


@command(epilog=f"{EXIT_CODES}\n\nExample: goalloop resume    # the latest run, where it stopped")
def resume(
    run_id: RunIdArgument = None,
    home: HomeOption = Path("."),
    quiet: QuietOption = False,
    ci: CiOption = False,
    log_format: LogFormatOption = "text",
    push: PushOption = None,
) -> None:
    """Continue a run that was interrupted or killed, keeping the budget it already spent."""
    show = Presentation.from_options(quiet, ci, log_format, push)
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
    target = RepoTarget(root=Path(meta.repo), base_commit=meta.base_commit)
    rules = PathRules.for_goal(goal, target)
    proposer = make_proposer(goal, target)
    faults.require_space([run_dir, Path(meta.worktree), target.root], faults.MIN_FREE_BYTES, meta.run_id)
    cluster = cluster or connect_cluster(goal)
    with place.goal_lock(goal.run_name) as lock:
        lock.acquire(meta.run_id)
        ledger = Ledger(run_dir, echo=sys.stdout if show.json_events else None)
        try:
            pool = [Workspace(target.root, path, meta.run_id, run_dir / "git-exclude")
                    for path in slot_worktrees(Path(meta.worktree), goal.parallel)]
            history = reconcile(pool, ledger, record.attempts, meta.base_commit)
            ledger.event("run_resumed", run_id=meta.run_id, pid=os.getpid(), attempts=len(history))
            if show.progress:
                out.print(f"resuming [bold]{meta.run_id}[/] after attempt {history[-1].iteration if history else '-'}")
                for lost in history[len(record.attempts):]:
                    out.print(_attempt_line(lost, goal.is_metric_goal))
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
                last_output=last_output, on_record=_progress_printer(goal, ledger, show.ci) if show.progress else None,
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
        _print_summary(goal, meta, outcome, run_dir)
    if show.ci:
        _write_ci_files(read_run(run_dir), outcome, show)
    if show.push and outcome.exit_code == 0:
        try:
            git.Git(meta.repo).execute(["git", "push", "--quiet", show.push, f"refs/heads/{meta.branch}"])
        except git.GitCommandError as exc:
            err.print(f"[yellow]warning:[/] could not push {meta.branch} to {show.push}: {escape(str(exc.stderr).strip())}")
            raise typer.Exit(3) from None
        err.print(f"pushed {meta.branch} to {show.push}")
    raise typer.Exit(outcome.exit_code)


def _write_ci_files(record: RunRecord, outcome: RunOutcome, show: Presentation) -> None:
    """The report and a pull request body in the run folder, `::warning::` lines for what needs a look, the
    compact summary appended to $GITHUB_STEP_SUMMARY and the run's outputs to $GITHUB_OUTPUT."""
    paths = write_report(record.run_dir)
    body = record.run_dir / "pr-body.md"
    body.write_text(ci.pr_body(record, ci.job_url()), encoding="utf-8")
    for line in ci.warnings(record, holdout=not show.progress):  # the progress lines had them already
        out.print(line, markup=False)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as stream:
            stream.write(ci.step_summary(record) + "\n")
    output_path = os.environ.get("GITHUB_OUTPUT")
    if output_path:
        best = outcome.best.metric if outcome.best and outcome.best.metric is not None else ""
        best = outcome.confirmed if outcome.confirmed is not None else best
        with open(output_path, "a", encoding="utf-8") as stream:
            stream.write(
                f"target_met={'true' if outcome.exit_code == 0 else 'false'}\n"
                f"best_metric={best}\nbranch={record.meta.branch}\nrun_id={record.meta.run_id}\n"
                f"report={paths.markdown}\npr_body={body}\nexit_code={outcome.exit_code}\n"
            )


@command(epilog=_help("goalloop validate goals/fix-tests.yaml"))
def validate(goal_file: GoalArgument) -> None:
    """Check a goal file and print what a run would do, without running anything."""
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


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text, for scripts.")]


@command(epilog=_help("goalloop status --json | jq .budget"))
def status(
    run_id: RunIdArgument = None,
    home: HomeOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Where a run stands: state, the attempt in progress, budget used and left, best against baseline."""
    record = read_run(find_run(Home(home.resolve()).runs, run_id))
    meta = record.meta
    standing = Standing.of(record, _state(record), _budget_of(record))
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
    out.print(f"  attempts   {record.iterations} ({_verdict_counts(record.attempts)})")
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
        out.print("  " + _attempt_line(attempt, meta.metric_goal))


def _budget_of(record: RunRecord):  # noqa: ANN202
    """The run's budget as its goal.yaml says, or None if that no longer reads."""
    try:
        return parse_goal((record.run_dir / "goal.yaml").read_text(encoding="utf-8"), Path(record.meta.goal_path)).budget
    except (GoalloopError, OSError):
        return None


@command(epilog=_help("goalloop runs --json"))
def runs(home: HomeOption = Path("."), as_json: JsonOption = False) -> None:
    """The runs under runs/, newest first, one line each."""
    rows = []
    for folder in reversed(list_runs(Home(home.resolve()).runs)):
        try:
            record = read_run(folder)
        except GoalloopError as exc:
            rows.append({"run_id": folder.name, "state": "unreadable", "error": exc.message})
            continue
        best = record.kept
        rows.append({"run_id": record.meta.run_id, "goal": record.meta.goal_name, "state": _state(record),
                     "attempts": record.iterations, "best": best.result_text(record.meta.metric_goal) if best else None,
                     "time": record.elapsed, "started": record.meta.created_at})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no runs yet; start one with `goalloop run goals/<goal>.yaml`")
        return
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


@command(epilog=_help("goalloop clean --dry-run"))
def clean(
    home: HomeOption = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
) -> None:
    """Remove the worktrees of finished runs. Never a live or resumable run, never a branch, ref or record."""
    place = Home(home.resolve())
    for run_dir in list_runs(place.runs):
        record = read_run(run_dir)
        worktree = Path(record.meta.worktree)
        if holds_nothing(record) and _state(record) != "running":
            if dry_run:
                out.print(f"would remove {record.meta.run_id}: it never recorded a baseline (worktree, branch, record)")
            else:
                remove_run(Path(record.meta.repo), worktree, record.meta.run_id, run_dir)
                out.print(f"removed {record.meta.run_id}: it never recorded a baseline")
            continue
        if not record.finished or _state(record) == "running" or not worktree.exists():
            continue
        if dry_run:
            out.print(f"would remove {worktree} ({record.meta.run_id}, {record.state})")
            continue
        try:
            removed = remove_worktrees(Path(record.meta.repo), worktree)
        except (git.GitCommandError, GitFailed) as exc:
            why = exc.message if isinstance(exc, GitFailed) else str(exc.stderr)
            err.print(f"[yellow]warning:[/] could not remove {worktree}: {escape(why.strip())}")
            continue
        out.print(f"removed {len(removed)} worktree(s) of {record.meta.run_id}; branch {record.meta.branch} kept")


@command(epilog=_help("goalloop report --png"))
def report(
    run_id: RunIdArgument = None,
    home: HomeOption = Path("."),
    png: Annotated[bool, typer.Option("--png", help="Also write the chart as a PNG.")] = False,
) -> None:
    """Write report.md and a self-contained report.html (chart, every attempt, its diff) for a run."""
    paths = write_report(find_run(Home(home.resolve()).runs, run_id), png=png)
    for path in (paths.markdown, paths.html, paths.png):
        if path is not None:
            out.print(str(path))


@command(epilog=_help("goalloop init --proposer search"))
def init(
    proposer: Annotated[
        Literal[tuple(PROPOSER_BLOCKS)],  # type: ignore[valid-type]
        typer.Option("--proposer", help="What proposes the changes.", case_sensitive=False),
    ] = "command",
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Goal name (default: the repository's folder name).")] = None,
    repo: Annotated[Path, typer.Option("--repo", metavar="DIR", help="The repository the goal works on.")] = Path("."),
) -> None:
    """Write a commented starter goal file into goals/ for the repository at hand (never overwrites)."""
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


@command(epilog=_help("goalloop doctor goals/fix-tests.yaml"))
def doctor(goal_file: GoalArgument) -> None:
    """Prove the check tests the worktree: run it on base, then on deliberately broken sources, in a scratch
    worktree. Exit 0: nothing wrong found; 1: a finding needs fixing. Your checkout is not touched."""
    goal, target, rules = _prepare(goal_file)
    out.print(f"doctor {goal_file}: the check in a scratch worktree at {target.base_commit[:12]}")
    diagnosis = diagnose(goal, target, rules, without_secrets(os.environ, goal.env.pass_))
    style = {"ok": "[green]ok[/]     ", "note": "[cyan]note[/]   ", "problem": "[bold red]problem[/]"}
    for finding in diagnosis.findings:
        out.print(f"  {style[finding.level]} {escape(finding.text)}")
        if finding.fix:
            out.print(f"           fix: {escape(finding.fix)}")
    raise typer.Exit(1 if diagnosis.problems else 0)


@command(epilog=_help("goalloop schema > goals/goal.schema.json"))
def schema() -> None:
    """Print the JSON Schema of goal files (editors use it to complete and check keys)."""
    sys.stdout.write(schema_text())


def schema_text() -> str:
    return json.dumps(goal_json_schema(), indent=2) + "\n"


@app.callback(invoke_without_command=True)
def _version(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"goalloop {__version__}")
        raise typer.Exit(0)


# -- wiring -----------------------------------------------------------------------------------------------
def _attempt_line(record: AttemptRecord, metric_goal: bool) -> str:
    style = VERDICT_STYLE.get(record.verdict, "")
    cost = f"${record.cost_usd:.3f}" if record.cost_usd else ""
    why = f" [dim]({escape(record.reason)})[/]" if record.reason and record.verdict != "discard" else ""
    if record.warning:
        why += f" [bold yellow]warning: {escape(record.warning)}[/]"
    return (
        f"#{record.iteration:<4} [{style}]{record.verdict:8}[/] {record.result_text(metric_goal):>10}  "
        f"{record.seconds:6.1f}s {cost:>7}  {escape(record.description[:100])}{why}"
    )


def _progress_printer(goal: Goal, ledger: Ledger, in_ci: bool):  # noqa: ANN202
    """One line an attempt; in CI each is a collapsible group holding its reason and the check's last lines."""

    def show(record: AttemptRecord) -> None:
        line = _attempt_line(record, goal.is_metric_goal)
        if not in_ci:
            out.print(line)
            return
        out.print(f"::group::{Text.from_markup(line).plain}", markup=False)
        folder = ledger.attempt_dir(record.iteration)
        if record.reason:
            out.print(f"reason: {record.reason}", markup=False)
        excerpt = output_excerpt(folder / "check.stdout.log", folder / "check.stderr.log")
        if excerpt.strip():
            out.print("\n".join(excerpt.strip().splitlines()[-20:]), markup=False)
        out.print(f"record: {folder}", markup=False)
        out.print("::endgroup::", markup=False)
        if record.warning:
            out.print(ci.command("warning", f"attempt {record.iteration}: {record.warning}",
                                 title="holdout got worse"), markup=False)

    return show


def _verdict_counts(attempts: list[AttemptRecord]) -> str:
    counts: dict[str, int] = {}
    for a in attempts:
        if a.iteration > 0:
            counts[a.verdict] = counts.get(a.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items()) or "none yet"


def _state(record: RunRecord) -> str:
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


def _print_summary(goal: Goal, meta: RunMeta, outcome: RunOutcome, run_dir: Path) -> None:
    best, baseline = outcome.best, outcome.baseline
    headline = {0: ("target met", "bold green"), 1: ("budget spent", "bold yellow"), 130: ("interrupted", "bold")}
    word, style = headline.get(outcome.exit_code, ("stopped", "bold"))
    reason = outcome.reason
    said = reason if word in reason else f"{word}: {reason}" if reason else word
    out.print(f"\n[{style}]{escape(said)}[/]")
    if best and baseline:
        out.print(f"best {best.result_text(goal.is_metric_goal)} (baseline {baseline.result_text(goal.is_metric_goal)})"
                  + (f", kept at attempt {best.iteration}" if best.iteration else ", nothing kept"))
    for note in outcome.notes:
        out.print(escape(note))
    spend = outcome.spend
    out.print(f"spent {spend.iterations} attempts, {format_duration(spend.seconds)}, {spend.usd_text}, {spend.tokens_text}")
    out.print(f"branch {meta.branch} in {meta.repo}")
    if best and best.iteration:
        out.print(f"  see it:  git -C {meta.repo} diff {meta.base_commit[:12]} {meta.branch}")
    out.print(f"record {run_dir / 'results.tsv'}   (goalloop report {meta.run_id} for the full report)")


if __name__ == "__main__":
    main()
