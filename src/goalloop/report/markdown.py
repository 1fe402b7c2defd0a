"""report.md, and `markdown_summary()`: the short part of it that a CI job appends to `$GITHUB_STEP_SUMMARY`.

Everything a proposer or a goal file wrote goes through `_md` (or `_md_code`): no formatting, no HTML, one line.
"""

from __future__ import annotations

import re

from goalloop.goal import format_duration
from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.data import (
    NOT_TRACKED,
    Totals,
    _attempts,
    _best_line,
    _has_holdout,
    _holdout_cell,
    _look_commands,
    _reason,
    findings,
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text: str) -> str:
    """Text safe in a markdown table cell: no formatting, no HTML, no cell break, one line.

    Only `<` and `&` become entities (no tag, no entity can form); `->` stays readable in the raw file."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_code(text: str) -> str:
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def markdown_summary(record: RunRecord, *, heading: bool = True, kept_shown: int = 20) -> str:
    """A short markdown summary of a run: the headline, the totals, what was kept and how to see it.

    The top of report.md (without its heading there) and of the CI step summary and pull request body.
    Attempts are named "attempt 3", never "#3", which GitHub would link to issue 3.
    """
    meta, totals = record.meta, Totals.of(record)
    lines = [f"## goalloop: {_md(meta.goal_name)} ({_md(record.state)})", ""] if heading else []
    lines += [
        _md(_reason(record)),
        "",
        "| | |",
        "| --- | --- |",
        f"| best | {_md(_best_line(record, totals))} |",
        f"| attempts | {totals.attempts}: {_md(totals.verdicts())} |",
        f"| keep rate | {totals.keep_rate} |",
        f"| cost | {NOT_TRACKED if totals.none_reported else _md(totals.spent())} |",
        f"| time | {format_duration(totals.elapsed)} |",
        f"| run | {_md_code(meta.run_id)} |",
        f"| branch | {_md_code(meta.branch)} in {_md_code(meta.repo)} |",
        f"| base | {_md_code(meta.base_commit[:12])} |",
    ]
    kept = [a for a in _attempts(record) if a.verdict == "keep"]
    if kept:
        lines += ["", "Kept, in order:", ""]
        lines += [f"- attempt {a.iteration}: {_md(a.description)} → {a.result_text(meta.metric_goal)}"
                  for a in kept[:kept_shown]]
        if len(kept) > kept_shown:
            lines.append(f"- and {len(kept) - kept_shown} more, listed in report.md")
    noticed = findings(record)
    if noticed:
        lines += ["", "Findings:", ""] + [f"- {_md(line)}" for line in noticed]
    lines += ["", "See the change:", "", "```sh", _look_commands(record)[0][1], "```", ""]
    return "\n".join(lines)


ATTEMPTS_HEADER = ["| # | verdict | result | description |", "| ---: | --- | ---: | --- |"]
"""The attempts table: four columns, narrow enough for GitHub's content column on a PR page or a phone."""
DESCRIPTION_SHOWN = 200
"""Characters of a description a table row shows (results.tsv holds 300, the proposal's log all of it)."""


def attempt_row(attempt: AttemptRecord, metric_goal: bool) -> str:
    """One row of the attempts table: number, verdict, result (and holdout), the description with the reason
    for a rejection or a crash in italics and ⚠ before a warning."""
    description = _md(attempt.description[:DESCRIPTION_SHOWN])
    if attempt.reason and attempt.verdict not in ("keep", "discard"):
        description += f" _({_md(attempt.reason)})_"
    if attempt.warning:
        description += f" ⚠ {_md(attempt.warning)}"
    result = attempt.result_text(metric_goal)
    if attempt.holdout is not None:
        result += f", holdout {_holdout_cell(attempt)}" + (" ⚠" if attempt.warning else "")
    return f"| {attempt.iteration} | {attempt.verdict} | {result} | {description} |"


def render_markdown(record: RunRecord) -> str:
    """report.md: the summary, then one compact row per attempt; the rest of each row is in report.html."""
    metric_goal = record.meta.metric_goal
    result = "the metric" if metric_goal else "whether the check passed"
    lines = [
        f"# goalloop report: {_md(record.meta.goal_name)} ({_md(record.state)})",
        "",
        f"Run {_md_code(record.meta.run_id)}.",
        "",
        markdown_summary(record, heading=False, kept_shown=10**9),
        "## Attempts",
        "",
        f"The result is {result} (- where the check did not run)"
        + (", then the holdout check's on the baseline and each kept state (⚠: a keep that made it worse)"
           if _has_holdout(record) else "")
        + "; the description is the proposer's, with the reason for a rejection or a crash in italics. "
        "Each attempt's time, cost, added lines, every measurement and its diff (with its commit) are in "
        "report.html; the raw rows in results.tsv."
        "",
        *ATTEMPTS_HEADER,
        *(attempt_row(attempt, metric_goal) for attempt in _attempts(record)),
        "",
    ]
    return "\n".join(lines)
