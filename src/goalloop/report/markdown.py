"""report.md, and `markdown_summary()`: the short part of it that a CI job appends to `$GITHUB_STEP_SUMMARY`.

Everything a proposer or a goal file wrote goes through `_md` (or `_md_code`): no formatting, no HTML, one line.
"""

from __future__ import annotations

import re

from goalloop.goal import format_duration
from goalloop.ledger import RunRecord
from goalloop.report.data import (
    NOT_TRACKED,
    Totals,
    _attempts,
    _best_line,
    _has_holdout,
    _has_samples,
    _holdout_cell,
    _look_commands,
    _measured,
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


def render_markdown(record: RunRecord) -> str:
    """report.md: the summary, then one row per attempt with the values of its results.tsv row."""
    metric_goal, holdout, samples = record.meta.metric_goal, _has_holdout(record), _has_samples(record)
    extra = [("check", "---")] if not metric_goal else []
    extra += [("measured", "---:")] if samples else []
    extra += [("holdout", "---:")] if holdout else []
    notes = [] if metric_goal else ["check says whether the check passed (- where it did not run)"]
    if samples:
        notes.append("measured is the median of every measurement, how many and their range")
    if holdout:
        notes.append("holdout is the holdout check's metric on the baseline and each kept state, and ⚠ marks a "
                     "keep that made it worse")
    lines = [
        f"# goalloop report: {_md(record.meta.goal_name)} ({_md(record.state)})",
        "",
        f"Run {_md_code(record.meta.run_id)}.",
        "",
        markdown_summary(record, heading=False, kept_shown=10**9),
        "## Attempts",
        "",
        "From iteration to cost_usd the columns are those of results.tsv; the description is its row's, with "
        "the reason for a rejection or a crash in italics" + "".join(f"; {note}" for note in notes) + ".",
        "",
        "| iteration | commit | metric | verdict | seconds | cost_usd | description | added lines"
        + "".join(f" | {name}" for name, _ in extra) + " |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- | ---:" + "".join(f" | {align}" for _, align in extra) + " |",
    ]
    for attempt in _attempts(record):
        cells = attempt.tsv_row()
        if attempt.reason and attempt.verdict not in ("keep", "discard"):
            cells[-1] = f"{_md(cells[-1])} _({_md(attempt.reason)})_"
        else:
            cells[-1] = _md(cells[-1])
        if attempt.warning:
            cells[-1] += f" ⚠ {_md(attempt.warning)}"
        cells.append(str(attempt.added_lines))
        if not metric_goal:
            cells.append(attempt.result_text(record.meta.metric_goal))
        if samples:
            cells.append(_md(_measured(attempt, metric_goal)))
        if holdout:
            cells.append(_holdout_cell(attempt) + (" ⚠" if attempt.warning else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The chart and every diff: report.html in this folder. The raw rows: results.tsv.", ""]
    return "\n".join(lines)
