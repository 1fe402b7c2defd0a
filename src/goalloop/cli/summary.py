"""What a run prints as it goes and when it ends: one line an attempt (in CI, a collapsible group holding
the check's last lines), the end-of-run summary, and the files a CI job reads (report, pull request body,
step summary, outputs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.markup import escape
from rich.text import Text

from goalloop.cli.console import out
from goalloop.goal import format_duration
from goalloop.live import VERDICT_STYLE

if TYPE_CHECKING:
    from goalloop.goal import Goal
    from goalloop.ledger import AttemptRecord, Ledger, RunMeta, RunRecord
    from goalloop.loop import RunOutcome


def attempt_line(record: AttemptRecord, metric_goal: bool) -> str:
    """`#3    keep          2.5     1.2s  $0.012  raise X` in rich markup, the reason and any warning after."""
    style = VERDICT_STYLE.get(record.verdict, "")
    cost = f"${record.cost_usd:.3f}" if record.cost_usd else ""
    why = f" [dim]({escape(record.reason)})[/]" if record.reason and record.verdict != "discard" else ""
    if record.warning:
        why += f" [bold yellow]warning: {escape(record.warning)}[/]"
    return (
        f"#{record.iteration:<4} [{style}]{record.verdict:8}[/] {record.result_text(metric_goal):>10}  "
        f"{record.seconds:6.1f}s {cost:>7}  {escape(record.description[:100])}{why}"
    )


def progress_printer(goal: Goal, ledger: Ledger, in_ci: bool) -> Callable[[AttemptRecord], None]:
    """One line an attempt; in CI each is a collapsible group holding its reason and the check's last lines."""
    from goalloop.check import output_excerpt
    from goalloop.report import ci

    def show(record: AttemptRecord) -> None:
        line = attempt_line(record, goal.is_metric_goal)
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


def print_summary(goal: Goal, meta: RunMeta, outcome: RunOutcome, run_dir: Path) -> None:
    """The end of a run: why it stopped, the best against the baseline, what it spent, where to look."""
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


def write_ci_files(record: RunRecord, outcome: RunOutcome, warn_holdout: bool) -> None:
    """The report and a pull request body in the run folder, `::warning::` lines for what needs a look (the
    holdout's only if `warn_holdout`: the progress lines said them already otherwise), the compact summary
    appended to $GITHUB_STEP_SUMMARY and the run's outputs to $GITHUB_OUTPUT."""
    from goalloop.report import ci, write_report

    paths = write_report(record.run_dir)
    body = record.run_dir / "pr-body.md"
    body.write_text(ci.pr_body(record, ci.job_url()), encoding="utf-8")
    for line in ci.warnings(record, holdout=warn_holdout):
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
