"""The command line: the typer app, its commands and options, and the one place errors become messages
and exit codes. Each command's work is in a module of its own, imported when the command runs, so that
`goalloop status`, `runs` and `validate` start without loading what a run needs:

    running.py   run and resume: the loop under the live view or progress lines, the summary, the CI files
    summary.py   the line an attempt prints, the end-of-run summary, the files a CI job reads
    records.py   status, runs, clean, report: the commands that read run records
    goals.py     validate, doctor, init, schema: the commands about a goal file
    console.py   where output goes (rich consoles) and the home folder (runs/, workspaces/)

Only this package picks concrete classes, prints with rich and sets exit codes.
Exit codes of `run`: 0 target met; 1 budget spent; 2 invalid goal file or usage; 3 the run could not go on;
130 interrupted (resumable).
"""

from __future__ import annotations

import functools
import io
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer
from rich.markup import escape

from goalloop import __version__
from goalloop.cli.console import err, markup, out
from goalloop.errors import GoalloopError, shown

if TYPE_CHECKING:
    from goalloop.cli.running import Presentation

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

HomeOption = Annotated[
    Path, typer.Option("--home", metavar="DIR", help="Folder holding runs/ and workspaces/ (default: the current directory).")
]


def main() -> None:
    """Entry point: turn GoalloopErrors into messages and exit codes, and anything else into a short report."""
    try:
        _main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first, or an error, was being reported
        _exiting()
        sys.exit(130)


def _exiting() -> None:
    """Once the exit is decided, a further Ctrl-C (an impatient second press) must not change its code."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _main() -> None:
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
        from goalloop import faults

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
    _exiting()
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, fix: str | None, exit_code: int) -> None:
    """The one way an error is shown: `error: what` and, when there is one, `  fix: how`; then the exit."""
    _exiting()
    err.print("\n".join(markup(line) for line in shown(message, fix)))
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
    from goalloop.quick import in_ci

    return in_ci(sys.argv[1:])


_AT_LINE = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+): ", re.M)


def _annotate_error(exc: GoalloopError) -> None:
    """`::error file=,line=::` for GitHub, one a mistake, so each is marked on its line of the goal file."""
    from goalloop.report import ci

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


def _presentation(quiet: bool, ci: bool, log_format: str, push: str | None) -> Presentation:
    from goalloop.cli.running import Presentation

    return Presentation.from_options(quiet, ci, log_format, push)


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
    show = _presentation(quiet, ci, log_format, push)
    from goalloop.cli.running import start_run

    start_run(goal_file, home, show, resume_latest)


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
    show = _presentation(quiet, ci, log_format, push)
    from goalloop.cli.running import resume_run

    resume_run(run_id, home, show)


@command(epilog=_help("goalloop validate goals/fix-tests.yaml"))
def validate(goal_file: GoalArgument) -> None:
    """Check a goal file and print what a run would do, without running anything."""
    from goalloop.cli.goals import validate_goal

    validate_goal(goal_file)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text, for scripts.")]


@command(epilog=_help("goalloop status --json | jq .budget"))
def status(
    run_id: RunIdArgument = None,
    home: HomeOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Where a run stands: state, the attempt in progress, budget used and left, best against baseline."""
    from goalloop.cli.records import show_status

    show_status(home, run_id, as_json)


@command(epilog=_help("goalloop runs --json"))
def runs(home: HomeOption = Path("."), as_json: JsonOption = False) -> None:
    """The runs under runs/, newest first, one line each."""
    from goalloop.cli.records import show_runs

    show_runs(home, as_json)


@command(epilog=_help("goalloop clean --dry-run"))
def clean(
    home: HomeOption = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
) -> None:
    """Remove the worktrees of finished runs. Never a live or resumable run, never a branch, ref or record."""
    from goalloop.cli.records import clean_runs

    clean_runs(home, dry_run)


@command(epilog=_help("goalloop report --png"))
def report(
    run_id: RunIdArgument = None,
    home: HomeOption = Path("."),
    png: Annotated[bool, typer.Option("--png", help="Also write the chart as a PNG.")] = False,
) -> None:
    """Write report.md and a self-contained report.html (chart, every attempt, its diff) for a run."""
    from goalloop.cli.records import write_reports

    write_reports(home, run_id, png)


STARTER_PROPOSERS = ("claude-code", "codex", "aider", "claude", "command", "search")
"""The proposers `init` writes a starter block for (starter.PROPOSER_BLOCKS, named here so help lists them
without importing the starter)."""


@command(epilog=_help("goalloop init --proposer search"))
def init(
    proposer: Annotated[
        Literal[STARTER_PROPOSERS],  # type: ignore[valid-type]
        typer.Option("--proposer", help="What proposes the changes.", case_sensitive=False),
    ] = "claude-code",
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Goal name (default: the repository's folder name).")] = None,
    repo: Annotated[Path, typer.Option("--repo", metavar="DIR", help="The repository the goal works on.")] = Path("."),
) -> None:
    """Write a commented starter goal file into goals/ for the repository at hand (never overwrites)."""
    from goalloop.cli.goals import write_starter

    write_starter(proposer, name, repo)


@command(epilog=_help("goalloop doctor goals/fix-tests.yaml"))
def doctor(goal_file: GoalArgument) -> None:
    """Prove the check tests the worktree: run it on base, then on deliberately broken sources, in a scratch
    worktree. Exit 0: nothing wrong found; 1: a finding needs fixing. Your checkout is not touched."""
    from goalloop.cli.goals import run_doctor

    raise typer.Exit(run_doctor(goal_file))


@command(epilog=_help("goalloop schema > goals/goal.schema.json"))
def schema() -> None:
    """Print the JSON Schema of goal files (editors use it to complete and check keys)."""
    from goalloop.cli.goals import schema_text

    sys.stdout.write(schema_text())


@app.callback(invoke_without_command=True)
def _version(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"goalloop {__version__}")
        raise typer.Exit(0)


if __name__ == "__main__":
    main()
