"""The morning report: a run's ledger -> `report.md`, `report.html` and, when asked, `report.png`.

    report.md     the totals and one table row per attempt (the rows of results.tsv, plus added lines and
                  the reason for a verdict); `markdown_summary()` alone is what a CI step summary shows
    report.html   one self-contained page: the metric over attempts as inline SVG (autoresearch's progress
                  chart: discards grey, keeps green, the running best as a step line, the target dashed),
                  the totals, how to look at the branch, and every attempt with its diff behind a click
    report.png    the chart alone, for a pull request or a chat message

Everything in the page that a proposer or a goal file wrote (descriptions, reasons, diffs, paths) is
escaped, and the page carries a Content-Security-Policy that allows no script and no network at all, so
an attempt described as `<script>...` is text, twice over. It loads nothing: no font, no CDN, no script.

The PNG is drawn by headless Chromium from the very SVG the page shows, when a Chromium or Chrome is
installed; otherwise by matplotlib if it is importable; otherwise `write_report(png=True)` raises a
GoalloopError saying what to install. Neither is a dependency of goalloop.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from goalloop.errors import GoalloopError
from goalloop.goal import format_duration
from goalloop.ledger import AttemptRecord, RunRecord, read_run

DIFF_CAP = 200_000
"""Bytes of one attempt's diff.patch shown in the page; the rest is cut with a note."""
DIFFS_TOTAL_CAP = 20_000_000
"""Bytes of diffs in the whole page; later diffs are named, not shown, so the page still opens."""
CHART_WIDTH, CHART_HEIGHT = 960, 400
SANS = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_PATHS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)
CHECK_LOG = "check.stdout.log"
VERDICTS = ("keep", "discard", "crash", "rejected")
COLORS = {
    "baseline": "#2563eb", "keep": "#16a34a", "discard": "#b8bcc4", "crash": "#dc2626", "rejected": "#d97706",
    "best": "#15803d", "target": "#6b7280", "ink": "#1f2937", "muted": "#6b7280", "grid": "#eceef1",
    "holdout": "#7c3aed", "warned": "#d97706",
}


@dataclass(frozen=True)
class ReportPaths:
    """The files `write_report` wrote; `png` is None unless it was asked for."""

    markdown: Path
    html: Path
    png: Path | None = None


def write_report(run_dir: Path, *, png: bool = False) -> ReportPaths:
    """Write report.md and report.html (and report.png if `png`) into the run folder; return their paths.

    Works on a finished run, a running one and a killed one alike: it reads only the ledger.
    """
    record = read_run(run_dir)
    paths = ReportPaths(run_dir / "report.md", run_dir / "report.html", run_dir / "report.png" if png else None)
    _write_atomically(paths.markdown, render_markdown(record))
    _write_atomically(paths.html, render_html(record))
    if paths.png:
        write_chart_png(record, paths.png)
    return paths


# -- numbers both formats share ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    attempts: int
    counts: dict[str, int]
    cost_usd: float
    unknown_cost: int
    """Attempts whose cost is not known (a run killed while proposing)."""
    tokens: int
    elapsed: float
    baseline: AttemptRecord | None
    best: AttemptRecord | None

    @classmethod
    def of(cls, record: RunRecord) -> Totals:
        tried = [a for a in record.attempts if a.iteration > 0]
        return cls(
            attempts=len(tried),
            counts={v: sum(1 for a in tried if a.verdict == v) for v in VERDICTS},
            cost_usd=record.cost_usd,
            unknown_cost=sum(1 for a in tried if a.cost_usd is None),
            tokens=record.tokens,
            elapsed=record.elapsed,
            baseline=record.baseline,
            best=record.kept,
        )

    @property
    def keep_rate(self) -> str:
        return f"{self.counts['keep'] / self.attempts:.0%}" if self.attempts else "-"

    def verdicts(self, sep: str = ", ") -> str:
        return sep.join(f"{n} {v}" for v, n in self.counts.items() if n) or "none yet"

    def spent(self) -> str:
        unknown = f" (+{self.unknown_cost} of unknown cost)" if self.unknown_cost else ""
        return f"${self.cost_usd:.2f}{unknown}"


def _attempts(record: RunRecord) -> list[AttemptRecord]:
    return sorted(record.attempts, key=lambda a: a.iteration)


def _gain(record: RunRecord, totals: Totals) -> str:
    """The best against the baseline: `+4 (+400%)`; empty when there is nothing to compare."""
    base, best = totals.baseline, totals.best
    if not (base and best and record.meta.metric_goal) or base.metric is None or best.metric is None:
        return ""
    delta = best.metric - base.metric
    percent = 100 * delta / abs(base.metric) if base.metric else None
    relative = "" if percent is None else f" ({percent:+.{0 if abs(percent) >= 10 else 1}f}%)"
    return f"{delta:+.6g}{relative}"


def _best_line(record: RunRecord, totals: Totals) -> str:
    base, best = totals.baseline, totals.best
    if not (base and best):
        return "-"
    metric_goal = record.meta.metric_goal
    where = f"attempt {best.iteration}" if best.iteration else "the baseline (nothing kept)"
    gain = _gain(record, totals)
    return f"{best.result_text(metric_goal)} at {where}; baseline {base.result_text(metric_goal)}" + (
        f", {gain}" if gain else ""
    )


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _cost(value: float | None) -> str:
    return "?" if value is None else f"${value:.3f}" if value else "-"


def _reason(record: RunRecord) -> str:
    return str(record.stop.get("reason", "")) if record.stop else "no stop was recorded: still running, or killed"


def _look_commands(record: RunRecord) -> list[tuple[str, str]]:
    meta = record.meta
    repo, base = shlex.quote(meta.repo), meta.base_commit[:12]
    return [
        ("the whole change kept", f"git -C {repo} diff {base} {meta.branch}"),
        ("the kept commits", f"git -C {repo} log --oneline {base}..{meta.branch}"),
        ("any attempt, kept or not", f"git -C {repo} show refs/goalloop/{meta.run_id}/<n>"),
    ]


# -- markdown ---------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text: str) -> str:
    """Text safe in a markdown table cell: no formatting, no HTML, no cell break, one line."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_code(text: str) -> str:
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def findings(record: RunRecord) -> list[str]:
    """What the trust rules noticed: the check's noise, stalls, drift on confirmation, holdout warnings."""
    found: list[str] = []
    for event in record.events:
        name = event.get("event")
        if name == "noise":
            found.append(f"noise: the baseline measured {len(event.get('samples') or [])} times, "
                         f"spread {_number(event.get('spread'))}")
        elif name == "stall":
            line = f"stalled: {event.get('line')}"
            if line not in found:
                found.append(line)
        elif name == "confirm":
            if isinstance(event.get("metric"), (int, float)) and isinstance(event.get("drift"), (int, float)):
                found.append(f"confirm: the best measured again: {event['metric']:.6g}, drift {event['drift']:+.6g}")
            else:
                found.append(f"confirm: the best measured again gave no result ({event.get('problem') or 'no metric'})")
    found += [f"warning: attempt {a.iteration}: {a.warning}" for a in _attempts(record) if a.warning]
    return found


def _number(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else "?"


def _has_samples(record: RunRecord) -> bool:
    return any(len(a.samples) > 1 for a in record.attempts)


def _measured(attempt: AttemptRecord, metric_goal: bool) -> str:
    """The metric, and when it was measured several times how many and their range: `2 (n=3, 1.99–2.01)`."""
    shown = attempt.result_text(metric_goal)
    if len(attempt.samples) > 1:
        shown += f" (n={len(attempt.samples)}, {min(attempt.samples):.6g}–{max(attempt.samples):.6g})"
    return shown


def _has_holdout(record: RunRecord) -> bool:
    return any(a.holdout is not None for a in record.attempts)


def _holdout_cell(attempt: AttemptRecord) -> str:
    return "" if attempt.holdout is None else f"{attempt.holdout:.6g}"


def markdown_summary(record: RunRecord) -> str:
    """A short markdown summary of a run: the headline, the totals, what was kept and how to see it.

    What a CI job appends to `$GITHUB_STEP_SUMMARY`; also the top of report.md.
    """
    meta, totals = record.meta, Totals.of(record)
    lines = [
        f"## goalloop: {_md(meta.goal_name)} ({_md(record.state)})",
        "",
        _md(_reason(record)),
        "",
        "| | |",
        "| --- | --- |",
        f"| best | {_md(_best_line(record, totals))} |",
        f"| attempts | {totals.attempts}: {_md(totals.verdicts())} |",
        f"| keep rate | {totals.keep_rate} |",
        f"| cost | {_md(totals.spent())}, {totals.tokens:,} tokens |",
        f"| time | {format_duration(totals.elapsed)} |",
        f"| run | {_md_code(meta.run_id)} |",
        f"| branch | {_md_code(meta.branch)} in {_md_code(meta.repo)} |",
        f"| base | {_md_code(meta.base_commit[:12])} |",
    ]
    kept = [a for a in _attempts(record) if a.verdict == "keep"]
    if kept:
        lines += ["", "Kept, in order:", ""]
        lines += [
            f"- #{a.iteration} {_md(a.description)} -> {a.result_text(meta.metric_goal)}" for a in kept[:20]
        ]
        if len(kept) > 20:
            lines.append(f"- ... and {len(kept) - 20} more (see report.md)")
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
        f"# goalloop report: {_md(record.meta.run_id)}",
        "",
        markdown_summary(record),
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


# -- the chart --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChartPoint:
    iteration: int
    kind: str
    """baseline, keep, discard, crash or rejected."""
    value: float | None
    """Where it is drawn; None for an attempt without a metric (drawn on the crash or rejected lane)."""
    clipped: bool
    """The metric is off the chart; the point sits on its edge."""
    tooltip: str
    warning: str = ""
    """The attempt's warning (a keep that made the holdout worse): the point gets an amber ring."""


@dataclass(frozen=True)
class MetricChart:
    points: list[ChartPoint]
    best: list[tuple[int, float]]
    """(iteration, value) of the baseline and each keep: the corners of the running-best step line."""
    last_iteration: int
    target: float | None
    low: float
    high: float
    has_values: bool
    holdout: list[tuple[int, float]] = field(default_factory=list)
    """(iteration, holdout metric) of the baseline and each kept state that has one."""
    holdout_range: tuple[float, float] | None = None
    """The holdout's own (low, high) for a right-hand scale; None when it shares the metric's scale."""

    @classmethod
    def of(cls, record: RunRecord) -> MetricChart:
        attempts = _attempts(record)
        metric = {a.iteration: a.metric for a in attempts if a.metric is not None and math.isfinite(a.metric)}
        scored = [a for a in attempts if a.verdict in ("baseline", "keep") and a.iteration in metric]
        target = record.meta.target
        core = [metric[a.iteration] for a in scored] + ([target] if target is not None else [])
        core = core or list(metric.values())
        rest = list(metric.values())
        held = [(a.iteration, float(a.holdout)) for a in attempts
                if a.holdout is not None and math.isfinite(a.holdout) and a.verdict in ("baseline", "keep")]
        holdout_range = None
        if held:
            values = [v for _, v in held]
            if core and _comparable(core, values):
                core = core + values
            else:
                low, high = min(values), max(values)
                pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
                holdout_range = (low - pad, high + pad)
        low, high = _chart_range(core, rest)
        points = []
        for a in attempts:
            value = metric.get(a.iteration)
            kind = a.verdict if a.verdict in COLORS else "discard"
            clipped = value is not None and not low <= value <= high
            if value is not None:
                value = min(max(value, low), high)
            elif kind not in ("crash", "rejected"):
                kind = "crash"  # a baseline or verdict without a metric: the check did not produce one
            points.append(ChartPoint(a.iteration, kind, value, clipped, _tooltip(a, record.meta.metric_goal),
                                     a.warning))
        return cls(
            points=points,
            best=[(a.iteration, metric[a.iteration]) for a in scored],
            last_iteration=max((a.iteration for a in attempts), default=0),
            target=target,
            low=low,
            high=high,
            has_values=bool(metric),
            holdout=held,
            holdout_range=holdout_range,
        )


def _comparable(metric: list[float], holdout: list[float]) -> bool:
    """Whether the holdout can share the metric's scale: together they span at most 3x either one alone."""
    def span(values: list[float]) -> float:
        return max(values) - min(values) or abs(max(values)) * 0.1 or 1.0

    together = max(metric + holdout) - min(metric + holdout)
    return together <= 3 * max(span(metric), span(holdout))


def _tooltip(attempt: AttemptRecord, metric_goal: bool) -> str:
    title = "baseline" if attempt.iteration == 0 else f"#{attempt.iteration} {attempt.verdict}"
    lines = [f"{title}: {_measured(attempt, metric_goal)}", " ".join(attempt.description.split())[:200]]
    if attempt.holdout is not None:
        lines.append(f"holdout: {attempt.holdout:.6g}")
    if attempt.reason and attempt.verdict not in ("keep", "discard"):
        lines.append(attempt.reason[:200])
    if attempt.warning:
        lines.append(f"⚠ {attempt.warning[:200]}")
    return "\n".join(lines)


def _chart_range(core: list[float], rest: list[float]) -> tuple[float, float]:
    """The y range: everything, unless outliers would squash the progress, then the kept values and a margin."""
    if not core:
        return 0.0, 1.0
    low, high = min(core), max(core)
    span = high - low or abs(high) * 0.1 or 1.0
    every_low, every_high = min(rest + core), max(rest + core)
    if every_high - every_low <= 4 * span:
        low, high = every_low, every_high
    else:
        low, high = max(every_low, low - 1.5 * span), min(every_high, high + 1.5 * span)
    pad = (high - low or span) * 0.08
    return low - pad, high + pad


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_label(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(value) or 1.0
    if abs(value) >= 1e6 or (value and abs(value) < 1e-3):
        return f"{value:.3g}"
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent) + (1 if round(step / 10**exponent, 6) == 2.5 else 0)
    return f"{value:.{decimals}f}"


class _Svg:
    """Helpers to write the chart's SVG; every text and attribute value goes through `escape`."""

    def __init__(self, width: int, height: int, label: str) -> None:
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" '
            f'font-family="{SANS}">',
            f'<rect width="{width}" height="{height}" fill="#fff"/>',
        ]

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, text: str, *, size: int = 12, fill: str = COLORS["muted"],
             anchor: str = "start", weight: str = "normal") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}" '
                 f'font-weight="{weight}">{escape(text)}</text>')

    def point(self, shape: str, iteration: int, kind: str, tooltip: str, extra: str = "") -> None:
        """One attempt: a link to its table row around one shape with a data-iteration and a <title>."""
        element = shape.split(" ", 1)[0]
        self.add(f'<a href="#attempt-{iteration}"><{shape} class="point {kind}" data-iteration="{iteration}"'
                 f'{extra}><title>{escape(tooltip)}</title></{element}></a>')

    def done(self) -> str:
        return "\n".join(self.parts + ["</svg>"])


def _marker(svg: _Svg, point: ChartPoint, x: float, y: float, r: float) -> None:
    color = COLORS[point.kind]
    if point.warning:
        svg.add(f'<circle class="warned" data-warned-iteration="{point.iteration}" cx="{x:.1f}" cy="{y:.1f}" '
                f'r="{r * 1.2 + 4:.1f}" fill="#fff" stroke="{COLORS["warned"]}" stroke-width="2.5"/>')
    if point.kind == "crash" and point.value is None:
        d = f"M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}"
        svg.point(f'path d="{d}"', point.iteration, point.kind, point.tooltip,
                  f' stroke="{color}" stroke-width="{max(1.5, r / 2.2):.1f}" stroke-linecap="round" fill="none"')
    elif point.kind == "rejected" and point.value is None:
        pts = f"{x - r:.1f},{y - r * 0.8:.1f} {x + r:.1f},{y - r * 0.8:.1f} {x:.1f},{y + r:.1f}"
        svg.point(f'polygon points="{pts}"', point.iteration, point.kind, point.tooltip, f' fill="{color}"')
    elif point.clipped:
        svg.point(f'circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"', point.iteration, point.kind, point.tooltip,
                  f' fill="#fff" stroke="{color}" stroke-width="1.5"')
    else:
        radius = r * (1.2 if point.kind in ("keep", "baseline") else 1.0)
        stroke = ' stroke="#fff" stroke-width="1"' if point.kind in ("keep", "baseline") else ""
        svg.point(f'circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}"', point.iteration, point.kind,
                  point.tooltip, f' fill="{color}"{stroke}')


def render_chart_svg(record: RunRecord) -> str:
    """The chart as one standalone <svg>: the metric over attempts, or a pass/fail strip for pass/fail goals."""
    if not record.meta.metric_goal:
        return _pass_fail_svg(record)
    chart = MetricChart.of(record)
    width, height = CHART_WIDTH, CHART_HEIGHT
    left, right, top = 72, width - (64 if chart.holdout_range else 28), 44
    scale = "right scale" if chart.holdout_range else "same scale"
    legend = [
        ("keep", "kept"), ("discard", "discarded"), ("crash", "crash"), ("rejected", "rejected"),
        ("best", "running best"), *([("target", "target")] if chart.target is not None else []),
        *([("holdout", f"holdout ({scale})")] if chart.holdout else []),
        *([("warned", "holdout got worse")] if any(p.warning for p in chart.points) else []),
        *([("clipped", "off the chart")] if any(p.clipped for p in chart.points) else []),
    ]
    legend_rows = _legend_rows(left, width - 16, legend)
    height += 20 * (len(legend_rows) - 1)
    bottom = height - 96 - 20 * (len(legend_rows) - 1)
    reject_lane, crash_lane = top - 22, bottom + 20
    svg = _Svg(width, height, f"metric over attempts of run {record.meta.run_id}")
    n = chart.last_iteration

    def x_of(iteration: float) -> float:
        return left + (iteration + 0.5) / (n + 1) * (right - left)

    def y_of(value: float) -> float:
        return bottom - (value - chart.low) / (chart.high - chart.low) * (bottom - top)

    ticks = _nice_ticks(chart.low, chart.high) if chart.has_values else []
    for tick in ticks:
        y = y_of(tick)
        svg.add(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>')
        svg.text(left - 10, y + 4, _tick_label(tick, ticks), size=11, anchor="end")
    if not chart.has_values:
        svg.text((left + right) / 2, (top + bottom) / 2, "no attempt produced a metric yet", size=14, anchor="middle")
    svg.add(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#c9cdd3"/>')
    step = max(1, _nice_ticks(0, n, 10)[1] if n >= 10 else 1)
    for iteration in range(0, n + 1, int(step)):
        svg.add(f'<line x1="{x_of(iteration):.1f}" x2="{x_of(iteration):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                'stroke="#c9cdd3"/>')
        svg.text(x_of(iteration), crash_lane + 24, str(iteration), size=11, anchor="middle")
    svg.text((left + right) / 2, crash_lane + 42, "attempt", size=12, anchor="middle")
    svg.text(left - 10, reject_lane + 4, "rejected", size=10, anchor="end")
    svg.text(left - 10, crash_lane + 4, "crash", size=10, anchor="end")

    if chart.target is not None and chart.has_values:
        y = y_of(chart.target)
        svg.add(f'<line class="target" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{COLORS["target"]}" stroke-width="1.5" stroke-dasharray="6 5"/>')
        svg.text(left + 6, y - 6, f"target {chart.target:.6g}", size=11)
    if chart.best:
        d = _step_path([(x_of(i), y_of(v)) for i, v in chart.best], x_of(n))
        svg.add(f'<path class="best" d="{d}" fill="none" stroke="{COLORS["best"]}" stroke-width="2" '
                'stroke-linejoin="round" opacity="0.75"/>')

    radius = 5.0 if n <= 60 else 4.0 if n <= 200 else 3.0 if n <= 1000 else 2.0
    order = {"discard": 0, "crash": 1, "rejected": 1, "keep": 2, "baseline": 3}
    for point in sorted(chart.points, key=lambda p: order[p.kind]):
        lane = crash_lane if point.kind == "crash" else reject_lane
        y = lane if point.value is None else y_of(point.value)
        _marker(svg, point, x_of(point.iteration), y, radius)
    baseline = next((p for p in chart.points if p.iteration == 0), None)
    if baseline is not None:
        y = crash_lane if baseline.value is None else y_of(baseline.value)
        label = "baseline" + ("" if baseline.value is None else f" {baseline.value:.6g}")
        svg.text(x_of(0) + 9, y + 16 if baseline.value is not None and y < bottom - 20 else y - 9, label,
                 size=11, fill=COLORS["baseline"], weight="600")
    if chart.holdout:
        warned = {p.iteration for p in chart.points if p.warning}
        _holdout_series(svg, chart, x_of, y_of, x_of(n), top, bottom, right, warned)
    for row, entries in enumerate(legend_rows):
        _legend(svg, left, height - 14 - 20 * (len(legend_rows) - 1 - row), entries)
    return svg.done()


def _step_path(corners: list[tuple[float, float]], x_end: float) -> str:
    """An SVG path that holds each value until the next one, then runs on to `x_end`."""
    d = f"M{corners[0][0]:.1f},{corners[0][1]:.1f}"
    for x, y in corners[1:]:
        d += f"H{x:.1f}V{y:.1f}"
    return d + f"H{x_end:.1f}"


def _holdout_series(svg: _Svg, chart: MetricChart, x_of: Callable[[float], float],
                    metric_y: Callable[[float], float], x_end: float, top: float, bottom: float, right: float,
                    warned: set[int]) -> None:
    """The holdout metric of the baseline and each kept state: diamonds on a dashed step line, on the metric's
    scale or, when the ranges differ a lot, on its own scale at the right."""
    color = COLORS["holdout"]
    y_of = metric_y
    if chart.holdout_range:
        low, high = chart.holdout_range

        def y_of(value: float) -> float:
            return bottom - (value - low) / (high - low) * (bottom - top)

        ticks = [t for t in _nice_ticks(low, high, 4) if low <= t <= high]
        for tick in ticks:
            svg.text(right + 8, y_of(tick) + 4, _tick_label(tick, ticks), size=11, fill=color)
        svg.text(right + 8, top - 10, "holdout", size=10, fill=color, weight="600")
    d = _step_path([(x_of(i), y_of(v)) for i, v in chart.holdout], x_end)
    svg.add(f'<path class="holdout" d="{d}" fill="none" stroke="{color}" stroke-width="1.5" '
            'stroke-dasharray="5 4"/>')
    for iteration, value in chart.holdout:
        x, y = x_of(iteration), y_of(value)
        outline = (f' stroke="{COLORS["warned"]}" stroke-width="2.5"' if iteration in warned
                   else ' stroke="#fff" stroke-width="1"')
        what = "baseline" if iteration == 0 else f"#{iteration} keep"
        svg.add(f'<a href="#attempt-{iteration}"><polygon class="holdout-point" data-holdout-iteration="{iteration}" '
                f'points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}" '
                f'fill="{color}"{outline}><title>{escape(what)}: holdout {value:.6g}'
                f"{' (worse)' if iteration in warned else ''}</title></polygon></a>")


def _glyph_width(kind: str, squares: bool = False) -> float:
    if squares:
        return 17
    return {"best": 28, "target": 28, "holdout": 34, "crash": 14, "rejected": 15, "warned": 20}.get(kind, 14)


def _legend_rows(x: float, max_x: float, entries: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The legend's entries split into rows that fit between `x` and `max_x`."""
    rows: list[list[tuple[str, str]]] = [[]]
    at = x
    for kind, label in entries:
        width = _glyph_width(kind) + 6.8 * len(label)
        if rows[-1] and at + width > max_x:
            rows.append([])
            at = x
        rows[-1].append((kind, label))
        at += width + 22
    return rows


def _legend(svg: _Svg, x: float, y: float, entries: list[tuple[str, str]], *, squares: bool = False) -> None:
    for kind, label in entries:
        color = COLORS.get(kind, COLORS["discard"])
        if squares:
            outline = f' fill="#fff" stroke="{color}" stroke-width="2"' if kind == "baseline" else f' fill="{color}"'
            svg.add(f'<rect x="{x:.1f}" y="{y - 10}" width="11" height="11" rx="2"{outline}/>')
            x += 17
        elif kind in ("best", "target"):
            dash = ' stroke-dasharray="6 5"' if kind == "target" else ""
            svg.add(f'<line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                    f'stroke-width="2"{dash}/>')
            x += 28
        elif kind == "crash":
            svg.add(f'<path d="M{x:.1f},{y - 8}L{x + 8:.1f},{y}M{x:.1f},{y}L{x + 8:.1f},{y - 8}" stroke="{color}" '
                    'stroke-width="2" stroke-linecap="round"/>')
            x += 14
        elif kind == "rejected":
            svg.add(f'<polygon points="{x:.1f},{y - 8} {x + 9:.1f},{y - 8} {x + 4.5:.1f},{y}" fill="{color}"/>')
            x += 15
        elif kind == "holdout":
            svg.add(f'<line x1="{x:.1f}" x2="{x + 28:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                    'stroke-width="1.5" stroke-dasharray="5 4"/>')
            svg.add(f'<polygon points="{x + 14:.1f},{y - 10} {x + 20:.1f},{y - 4} {x + 14:.1f},{y + 2} '
                    f'{x + 8:.1f},{y - 4}" fill="{color}"/>')
            x += 34
        elif kind == "warned":
            svg.add(f'<circle cx="{x + 7:.1f}" cy="{y - 4}" r="7" fill="#fff" stroke="{color}" stroke-width="2.5"/>')
            svg.add(f'<circle cx="{x + 7:.1f}" cy="{y - 4}" r="4" fill="{COLORS["keep"]}"/>')
            x += 20
        else:
            fill = f'fill="#fff" stroke="{color}" stroke-width="1.5"' if kind == "clipped" else f'fill="{color}"'
            svg.add(f'<circle cx="{x + 4:.1f}" cy="{y - 4}" r="5" {fill}/>')
            x += 14
        svg.text(x, y, label, size=12, fill=COLORS["ink"])
        x += 6.8 * len(label) + 22


def _strip_color(attempt: AttemptRecord) -> str:
    if attempt.verdict == "baseline":
        return COLORS["keep" if attempt.passed else "discard"]
    return COLORS.get(attempt.verdict, COLORS["discard"])


def _pass_fail_svg(record: RunRecord) -> str:
    """One square per attempt, in order: green passed and kept, grey failed, red crash, amber rejected."""
    attempts = _attempts(record)
    width, left, size, gap, top = CHART_WIDTH, 72, 22, 6, 44
    per_row = max(1, (width - left - 28) // (size + gap))
    rows = max(1, math.ceil(len(attempts) / per_row))
    legend_y = top + rows * (size + gap) + 34
    height = max(180, legend_y + 24)  # headless Chromium leaves a very short page unpainted
    svg = _Svg(width, height, f"pass or fail over attempts of run {record.meta.run_id}")
    svg.text(left, 24, "each square an attempt, the baseline first; hover for what it tried", size=12)
    for index, attempt in enumerate(attempts):
        x = left + (index % per_row) * (size + gap)
        y = top + (index // per_row) * (size + gap)
        if index % per_row == 0:
            svg.text(left - 10, y + size - 6, f"#{attempt.iteration}", size=11, anchor="end")
        kind = attempt.verdict if attempt.verdict in COLORS else "discard"
        outline = f' stroke="{COLORS["baseline"]}" stroke-width="2.5"' if kind == "baseline" else ""
        svg.point(f'rect x="{x}" y="{y}" width="{size}" height="{size}" rx="4"', attempt.iteration, kind,
                  _tooltip(attempt, False), f' fill="{_strip_color(attempt)}"{outline}')
    _legend(svg, left, legend_y, [
        ("baseline", "baseline"), ("keep", "passed, kept"), ("discard", "failed"), ("crash", "crash"),
        ("rejected", "rejected"),
    ], squares=True)
    return svg.done()


# -- the page ---------------------------------------------------------------------------------------------
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
.figure { border: 1px solid var(--line); border-radius: 10px; padding: 8px; overflow-x: auto; }
.figure svg { display: block; width: 100%; height: auto; min-width: 640px; }
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
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
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
        ("cost", totals.spent(), f"{totals.tokens:,} tokens"),
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
        f'<div class="figure">{render_chart_svg(record)}</div>',
        "<h2>The result</h2>",
        '<dl class="git">',
        *(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in git_rows),
        "</dl>",
        "<h2>Every attempt</h2>",
        _attempts_table(record),
        f"<footer>Written {escape(datetime.now(timezone.utc).isoformat(timespec='seconds'))} from "
        f"<code>{escape(str(record.run_dir))}</code>. The raw rows are in results.tsv; each attempt's prompt, "
        "check output and diff are under attempts/NNNN/.</footer>",
        "</main></body></html>",
        "",
    ]
    return "\n".join(parts)


def _findings_html(record: RunRecord) -> list[str]:
    noticed = findings(record)
    if not noticed:
        return []
    return ["<h2>Findings</h2>", '<ul class="findings">', *(f"<li>{escape(x)}</li>" for x in noticed), "</ul>"]


def _attempts_table(record: RunRecord) -> str:
    metric_goal, holdout = record.meta.metric_goal, _has_holdout(record)
    metric_width = 150 if _has_samples(record) else 84
    rows = [
        f"<table><colgroup><col style=\"width:48px\"><col style=\"width:92px\"><col style=\"width:{metric_width}px\">"
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
            held = f'<td class="n holdout">{escape(_holdout_cell(attempt))}{badge}</td>'
        warned = ' class="warned"' if attempt.warning else ""
        rows.append(
            f'<tr id="attempt-{attempt.iteration}"{warned}><td class="n">{attempt.iteration}</td>'
            f'<td><span class="pill {escape(attempt.verdict)}">{escape(attempt.verdict)}</span></td>'
            f'<td class="n">{shown}</td>{held}<td class="n">{escape(_cost(attempt.cost_usd))}</td>'
            f'<td class="n">{escape(_seconds(attempt.seconds))}</td><td class="n">{attempt.added_lines}</td>'
            f"<td>{escape(attempt.description)}{why}{_diff_block(record, attempt, budget)}</td></tr>"
        )
    rows.append("</tbody></table>")
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


# -- PNG --------------------------------------------------------------------------------------------------
def write_chart_png(record: RunRecord, path: Path) -> Path:
    """The chart as a PNG: headless Chromium if installed (the same SVG as the page), else matplotlib."""
    browser = find_chromium()
    if browser:
        return _png_with_chromium(browser, render_chart_svg(record), path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GoalloopError(
            "--png needs a headless Chromium or Chrome, or matplotlib, to draw the chart; neither was found",
            fix="install Chromium (Debian/Ubuntu: `apt-get install chromium`; macOS: `brew install --cask chromium`) "
            "or `pip install matplotlib` in goalloop's environment; report.html has the same chart",
        ) from None
    return _png_with_matplotlib(record, path)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


def chromium_command(browser: str, page: Path, png: Path, profile: Path, width: int, height: int,
                     scale: float = 1.0) -> list[str]:
    """Headless Chromium that screenshots a local page: no network, no profile, no sandbox (see below)."""
    return [
        browser, "--headless", "--disable-gpu", "--hide-scrollbars",
        # the page is ours, static, script-free and under a CSP with no network; root in a container
        # (CI, Docker) cannot start the sandbox at all
        "--no-sandbox",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
        f"--force-device-scale-factor={scale}", f"--window-size={width},{height}",
        f"--screenshot={png}", page.resolve().as_uri(),
    ]


def _png_with_chromium(browser: str, svg: str, path: Path) -> Path:
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    with tempfile.TemporaryDirectory(prefix="goalloop-png-") as tmp:
        page, shot = Path(tmp) / "chart.html", Path(tmp) / "chart.png"
        page.write_text(f'<!doctype html><meta charset="utf-8"><style>body{{margin:0;background:#fff}}'
                        f"svg{{display:block}}</style>{svg}", encoding="utf-8")
        command = chromium_command(browser, page, shot, Path(tmp) / "profile", width, height, scale=2)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise GoalloopError(f"{browser} did not draw the chart within 120s",
                                fix="run again, or open report.html, which has the same chart") from None
        if not shot.is_file() or shot.stat().st_size == 0:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise GoalloopError(
                f"{browser} exited {done.returncode} without writing the chart: {' / '.join(tail)}",
                fix="check that this Chromium runs headless (`chromium --headless --version`), or open report.html",
            )
        shutil.copyfile(shot, path)
    return path


def _png_with_matplotlib(record: RunRecord, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    height = CHART_HEIGHT if record.meta.metric_goal else 180
    fig, ax = plt.subplots(figsize=(CHART_WIDTH / 100, height / 100), dpi=200)
    try:
        if record.meta.metric_goal:
            _matplotlib_metric(ax, MetricChart.of(record))
        else:
            attempts = _attempts(record)
            ax.bar([a.iteration for a in attempts], 1, color=[_strip_color(a) for a in attempts], width=0.85)
            ax.set_yticks([])
            ax.set_xlabel("attempt")
            kinds = [("keep", "passed, kept"), ("discard", "failed"), ("crash", "crash"), ("rejected", "rejected")]
            ax.legend(handles=[Patch(color=COLORS[k], label=label) for k, label in kinds], fontsize=8, ncols=4,
                      frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _matplotlib_metric(ax, chart: MetricChart) -> None:  # noqa: ANN001
    span = chart.high - chart.low
    lanes = {"crash": chart.low - 0.06 * span, "rejected": chart.high + 0.06 * span}
    styles = {"discard": ("o", "discarded"), "keep": ("o", "kept"), "baseline": ("o", "baseline"),
              "crash": ("x", "crash"), "rejected": ("v", "rejected")}
    for kind, (marker, label) in styles.items():
        chosen = [p for p in chart.points if p.kind == kind]
        if chosen:
            ax.scatter([p.iteration for p in chosen], [lanes[kind] if p.value is None else p.value for p in chosen],
                       c=COLORS[kind], marker=marker, s=30, label=label, zorder=3 if kind != "discard" else 2)
    if chart.best:
        xs = [i for i, _ in chart.best] + [chart.last_iteration]
        ys = [v for _, v in chart.best] + [chart.best[-1][1]]
        ax.step(xs, ys, where="post", color=COLORS["best"], linewidth=2, alpha=0.75, label="running best")
    if chart.target is not None:
        ax.axhline(chart.target, color=COLORS["target"], linestyle="--", linewidth=1.5, label="target")
    baseline = next((p for p in chart.points if p.iteration == 0 and p.value is not None), None)
    if baseline is not None:
        ax.annotate(f"baseline {baseline.value:.6g}", (0, baseline.value), xytext=(8, -12),
                    textcoords="offset points", color=COLORS["baseline"], fontsize=8, fontweight="bold")
    warned = [p for p in chart.points if p.warning and p.value is not None]
    if warned:
        ax.scatter([p.iteration for p in warned], [p.value for p in warned], s=140, facecolors="none",
                   edgecolors=COLORS["warned"], linewidths=2, label="holdout got worse", zorder=4)
    ax.set_ylim(lanes["crash"] - 0.04 * span, lanes["rejected"] + 0.04 * span)
    ax.set_xlabel("attempt")
    ax.grid(axis="y", color=COLORS["grid"])
    handles, labels = ax.get_legend_handles_labels()
    if chart.holdout:
        holdout_ax = ax.twinx() if chart.holdout_range else ax
        xs = [i for i, _ in chart.holdout] + [chart.last_iteration]
        ys = [v for _, v in chart.holdout] + [chart.holdout[-1][1]]
        scale = "right scale" if chart.holdout_range else "same scale"
        (line,) = holdout_ax.step(xs, ys, where="post", color=COLORS["holdout"], linestyle="--", linewidth=1.5,
                                  marker="D", markevery=list(range(len(chart.holdout))), markersize=6,
                                  label=f"holdout ({scale})")
        if chart.holdout_range:
            holdout_ax.set_ylim(*chart.holdout_range)
            holdout_ax.tick_params(axis="y", colors=COLORS["holdout"])
            holdout_ax.spines["top"].set_visible(False)
            handles.append(line)
            labels.append(line.get_label())
        else:
            handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="best", fontsize=8, frameon=False)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
