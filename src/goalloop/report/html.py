"""report.html: one self-contained page with the chart, the totals, how to look at the branch, and every attempt
with its diff behind a click.

Everything in the page that a proposer or a goal file wrote (descriptions, reasons, diffs, paths) is
escaped, and the page carries a Content-Security-Policy that allows no script and no network at all, so
an attempt described as `<script>...` is text, twice over. It loads nothing: no font, no CDN, no script.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from html import escape

from goalloop.goal import format_duration, format_seconds
from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.chart import render_chart_svg
from goalloop.report.tree import render_tree_svg
from goalloop.report.data import (
    NOT_TRACKED,
    Totals,
    _attempts,
    _cost,
    _gain,
    _has_holdout,
    _has_samples,
    _holdout_cell,
    _look_commands,
    _measured,
    _reason,
    findings,
    net_diff,
)

NARROW_CHART_WIDTH = 400
"""The chart drawn for a phone: its text stays readable at a 390 px screen."""
DIFF_CAP = 200_000
"""Bytes of one attempt's diff.patch shown in the page; the rest is cut with a note."""
DIFFS_TOTAL_CAP = 20_000_000
"""Bytes of diffs in the whole page; later diffs are named, not shown, so the page still opens."""


CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --soft: #f6f7f9; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink); line-height: 1.5;
  font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 28px 56px; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 13px; }
.eyebrow { color: var(--muted); font-size: 13px; letter-spacing: .06em; text-transform: uppercase; }
h1 { font-size: 28px; margin: 2px 0 4px; font-weight: 650; }
h2 { font-size: 17px; margin: 36px 0 12px; font-weight: 650; }
.sub { color: var(--muted); margin: 0; overflow-wrap: anywhere; }
.state { display: inline-block; vertical-align: middle; font-size: 13px; font-weight: 600; padding: 2px 10px;
  border-radius: 999px; margin-left: 8px; background: #eef2ff; color: #3730a3; }
.state.met { background: #dcfce7; color: #166534; } .state.spent { background: #fef3c7; color: #92400e; }
.state.other { background: #fee2e2; color: #991b1b; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-top: 22px; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.card .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .d { color: var(--muted); font-size: 13px; }
.figure { border: 1px solid var(--line); border-radius: 10px; padding: 8px; overflow: hidden; }
.figure svg { display: block; width: 100%; height: auto; }
.figure.narrow { display: none; }
.kept li { margin: 2px 0; } .kept .m { font-variant-numeric: tabular-nums; font-weight: 600; }
.attempts { max-height: 75vh; overflow: auto; border: 1px solid var(--line); border-radius: 10px; }
.attempts thead th { position: sticky; top: 0; background: #fff; z-index: 1; }
pre.net { max-height: 24em; }
.figure a:hover > * { opacity: .6; }
dl.git { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px; margin: 0; }
dl.git dt { color: var(--muted); } dl.git dd { margin: 0; overflow-wrap: anywhere; }
dl.git code { background: var(--soft); padding: 2px 6px; border-radius: 5px; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; font-size: 14px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; border-bottom: 1px solid var(--line); padding: 8px 8px; }
td { border-bottom: 1px solid var(--line); padding: 8px 8px; vertical-align: top; overflow-wrap: anywhere; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:target td { background: #fffbeb; }
.pill { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 999px; }
.pill.keep { background: #dcfce7; color: #166534; } .pill.discard { background: #f1f2f4; color: #4b5563; }
.pill.crash { background: #fee2e2; color: #991b1b; } .pill.rejected { background: #fef3c7; color: #92400e; }
.pill.baseline { background: #dbeafe; color: #1e40af; }
.why { color: var(--muted); font-size: 13px; }
.warning { color: #92400e; background: #fef3c7; border-radius: 4px; padding: 2px 6px; font-size: 13px;
  display: inline-block; margin-top: 4px; }
.findings li { margin: 2px 0; }
.samples { color: var(--muted); font-size: 12px; }
td.holdout { color: #6d28d9; }
.badge { color: #b45309; font-weight: 700; }
tr.warned td:first-child { box-shadow: inset 3px 0 0 #d97706; }
details { margin-top: 4px; } summary { cursor: pointer; color: var(--accent); font-size: 13px; }
pre.diff { margin: 6px 0 0; padding: 10px 12px; background: var(--soft); border-radius: 8px; overflow: auto;
  max-height: 32em; line-height: 1.4; white-space: pre; }
.diff .add { color: #166534; background: #ecfdf3; display: inline-block; min-width: 100%; }
.diff .del { color: #991b1b; background: #fef2f2; display: inline-block; min-width: 100%; }
.diff .hunk { color: #6d28d9; } .diff .file { color: var(--ink); font-weight: 600; }
.note { color: #92400e; font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; overflow-wrap: anywhere; }
@media (max-width: 700px) {
  main { padding: 16px 14px 40px; }
  h1 { font-size: 23px; }
  .figure.wide { display: none; } .figure.narrow { display: block; }
  .cards { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  dl.git { grid-template-columns: 1fr; } dl.git dd { margin-bottom: 8px; }
  .attempts table, .attempts tbody, .attempts tr, .attempts td { display: block; width: auto; }
  .attempts colgroup, .attempts thead { display: none; }
  .attempts tr { padding: 10px 12px; border-bottom: 1px solid var(--line); }
  .attempts td { border: 0; padding: 1px 0; text-align: left; white-space: normal; }
  .attempts td[data-k] { display: inline-block; margin-right: 14px; }
  .attempts td[data-k]::before { content: attr(data-k) " "; color: var(--muted); font-size: 12px; }
  .attempts td.desc { display: block; margin-top: 4px; }
}
"""


def render_html(record: RunRecord) -> str:
    """report.html: one self-contained page (no script, no network) with the chart, totals and every attempt."""
    meta, totals = record.meta, Totals.of(record)
    state = record.state
    state_class = {"target met": "met", "budget spent": "spent"}.get(state, "other")
    gain = _gain(record, totals)
    best, base = totals.best, totals.baseline
    against = (f"baseline {base.result_text(meta.metric_goal)}" if base else "no baseline yet") + (
        f" · {gain}" if gain else ""
    )
    cards = [
        ("best", best.result_text(meta.metric_goal) if best else "-", against),
        ("attempts", str(totals.attempts), totals.verdicts(" · ")),
        ("keep rate", totals.keep_rate, f"{totals.counts['keep']} of {totals.attempts} kept"),
        ("cost", NOT_TRACKED, "no attempt reported its cost or tokens") if totals.none_reported
        else ("cost", totals.spent().split(", ")[0], totals.spent().partition(", ")[2] or "by the proposers"),
        ("time", format_duration(totals.elapsed), f"started {meta.created_at[:16].replace('T', ' ')} UTC"),
    ]
    target = "" if meta.target is None else f", target {meta.target:.6g} ({meta.direction})"
    chart_title = "Metric over attempts" if meta.metric_goal else "Check over attempts"
    git_rows = [("branch", f"<code>{escape(meta.branch)}</code> in <code>{escape(meta.repo)}</code>"),
                ("base", f"<code>{escape(meta.base_commit)}</code>")]
    git_rows += [(what, f"<code>{escape(command)}</code>") for what, command in _look_commands(record)]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>goalloop: {escape(meta.goal_name)} ({escape(state)})</title>",
        f"<style>{CSS}</style></head><body><main>",
        '<div class="eyebrow">goalloop report</div>',
        f'<h1>{escape(meta.goal_name)}<span class="state {state_class}">{escape(state)}</span></h1>',
        f'<p class="sub">{escape(_reason(record))}</p>',
        f'<p class="sub mono">{escape(meta.run_id)}{escape(target)}</p>',
        '<section class="cards">',
        *(f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
          f'<div class="d">{escape(d)}</div></div>' for k, v, d in cards),
        "</section>",
        *_findings_html(record),
        f"<h2>{chart_title}</h2>",
        *_figures(record),
        *_tree_html(record),
        *_kept_html(record),
        "<h2>The result</h2>",
        '<dl class="git">',
        *(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in git_rows),
        "</dl>",
        *_net_diff_html(record),
        "<h2>Every attempt</h2>",
        _attempts_table(record),
        f"<footer>Written {escape(datetime.now(timezone.utc).isoformat(timespec='seconds'))} from "
        f"<code>{escape(str(record.run_dir))}</code>. The raw rows are in results.tsv; each attempt's prompt, "
        "check output and diff are under attempts/NNNN/.</footer>",
        "</main></body></html>",
        "",
    ]
    return "\n".join(parts)


def _figures(record: RunRecord) -> list[str]:
    """The chart drawn for a wide screen and, for a metric goal, again for a phone (CSS shows one)."""
    wide = f'<div class="figure wide">{render_chart_svg(record)}</div>'
    if not record.meta.metric_goal:
        return [wide.replace("figure wide", "figure")]
    return [wide, f'<div class="figure narrow">{render_chart_svg(record, NARROW_CHART_WIDTH, primary=False)}</div>']


def _tree_html(record: RunRecord) -> list[str]:
    """The search tree, for a run with a tree strategy: kept states joined to their parents, the best path thick."""
    svg = render_tree_svg(record)
    if svg is None:
        return []
    return ["<h2>Search tree</h2>", '<p class="sub">One dot per attempt, one row per generation; kept states are '
            "joined to the state they were proposed from, and the path to the best is drawn thick.</p>",
            f'<div class="figure">{svg}</div>']


def _kept_html(record: RunRecord) -> list[str]:
    kept = [a for a in _attempts(record) if a.verdict == "keep"]
    if not kept:
        return []
    metric_goal = record.meta.metric_goal
    return [f"<h2>Kept changes ({len(kept)})</h2>", '<ol class="kept">',
            *(f'<li><a href="#attempt-{a.iteration}">attempt {a.iteration}</a> '
              f'<span class="m">{escape(a.result_text(metric_goal))}</span> {escape(a.description)}</li>'
              for a in kept), "</ol>"]


def _net_diff_html(record: RunRecord) -> list[str]:
    diff = net_diff(record)
    if diff is None:
        return []
    stat, patch = diff
    if not patch.strip():
        return ["<h2>The change, base to best</h2>", '<p class="sub">nothing kept: the best is the base</p>']
    cut = len(patch) > DIFF_CAP
    body = "\n".join(_diff_line(line) for line in patch[:DIFF_CAP].splitlines())
    note = f'<div class="note">the first {DIFF_CAP:,} characters of {len(patch):,}</div>' if cut else ""
    return ["<h2>The change, base to best</h2>", f'<pre class="diff net">{escape(stat)}</pre>',
            f"<details><summary>the whole diff</summary>{note}<pre class=\"diff net\">{body}</pre></details>"]


def _findings_html(record: RunRecord) -> list[str]:
    noticed = findings(record)
    if not noticed:
        return []
    return ["<h2>Findings</h2>", '<ul class="findings">', *(f"<li>{escape(x)}</li>" for x in noticed), "</ul>"]


def _attempts_table(record: RunRecord) -> str:
    metric_goal, holdout = record.meta.metric_goal, _has_holdout(record)
    metric_width = 150 if _has_samples(record) else 84
    rows = [
        f"<div class=\"attempts\"><table><colgroup><col style=\"width:48px\"><col style=\"width:92px\"><col style=\"width:{metric_width}px\">"
        + ("<col style=\"width:76px\">" if holdout else "")
        + "<col style=\"width:72px\"><col style=\"width:64px\"><col style=\"width:60px\"><col></colgroup>",
        '<thead><tr><th class="n">#</th><th>verdict</th><th class="n">'
        + ("metric" if metric_goal else "check")
        + '</th>' + ('<th class="n">holdout</th>' if _has_holdout(record) else "")
        + '<th class="n">cost</th><th class="n">time</th><th class="n">+lines</th>'
        "<th>description</th></tr></thead>",
        "<tbody>",
    ]
    budget = [DIFFS_TOTAL_CAP]
    for attempt in _attempts(record):
        why = ""
        if attempt.reason and attempt.verdict not in ("keep", "discard"):
            why = f'<div class="why">{escape(attempt.reason)}</div>'
        if attempt.warning:
            why += f'<div class="warning">⚠ {escape(attempt.warning)}</div>'
        shown = escape(attempt.result_text(record.meta.metric_goal))
        if metric_goal and len(attempt.samples) > 1:
            spread = _measured(attempt, metric_goal)[len(attempt.result_text(metric_goal)):].strip()
            shown += f'<div class="samples">{escape(spread)}</div>'
        held = ""
        if holdout:
            badge = ' <span class="badge" title="holdout got worse">⚠</span>' if attempt.warning else ""
            held = f'<td class="n holdout" data-k="holdout">{escape(_holdout_cell(attempt))}{badge}</td>'
        warned = ' class="warned"' if attempt.warning else ""
        rows.append(
            f'<tr id="attempt-{attempt.iteration}"{warned}><td class="n">{attempt.iteration}</td>'
            f'<td><span class="pill {escape(attempt.verdict)}">{escape(attempt.verdict)}</span></td>'
            f'<td class="n" data-k="{"metric" if metric_goal else "check"}">{shown}</td>{held}'
            f'<td class="n" data-k="cost">{escape(_cost(attempt.cost_usd))}</td>'
            f'<td class="n" data-k="time">{escape(format_seconds(attempt.seconds))}</td>'
            f'<td class="n" data-k="+lines">{attempt.added_lines}</td>'
            f'<td class="desc">{escape(attempt.description)}{why}{_diff_block(record, attempt, budget)}</td></tr>'
        )
    rows.append("</tbody></table></div>")
    return "\n".join(rows)


def _diff_block(record: RunRecord, attempt: AttemptRecord, budget: list[int]) -> str:
    """The attempt's diff.patch, escaped and coloured, behind a <details>; capped per diff and per page."""
    if attempt.iteration == 0:
        return ""
    path = record.run_dir / "attempts" / f"{attempt.iteration:04d}" / "diff.patch"
    show = f"git -C {shlex.quote(record.meta.repo)} show {(attempt.commit or '')[:12]}"
    try:
        size = path.stat().st_size
    except OSError:
        if attempt.commit:
            return f'<div class="why">no diff.patch recorded; <code>{escape(show)}</code></div>'
        return ""
    if budget[0] <= 0:
        return (f'<div class="note">diff not shown ({size:,} bytes; the page holds {DIFFS_TOTAL_CAP:,} bytes of '
                f"diffs): attempts/{attempt.iteration:04d}/diff.patch</div>")
    cap = min(DIFF_CAP, budget[0])
    with open(path, "rb") as stream:
        data = stream.read(cap)
    budget[0] -= len(data)
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    files = [line.split(" b/", 1)[-1] for line in lines if line.startswith("diff --git ")]
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    label = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    note = ""
    if size > len(data):
        note = (f'<div class="note">showing the first {len(data):,} of {size:,} bytes; the whole diff: '
                f"attempts/{attempt.iteration:04d}/diff.patch or <code>{escape(show)}</code></div>")
    body = "\n".join(_diff_line(line) for line in lines)
    return (f"<details><summary>diff: {escape(label or 'changes')} (+{added} −{removed})</summary>"
            f'{note}<pre class="diff">{body}</pre></details>')


def _diff_line(line: str) -> str:
    if line.startswith(("+++", "---", "diff --git", "index ")):
        kind = "file"
    elif line.startswith("+"):
        kind = "add"
    elif line.startswith("-"):
        kind = "del"
    elif line.startswith("@@"):
        kind = "hunk"
    else:
        return escape(line)
    return f'<span class="{kind}">{escape(line)}</span>'
