"""The chart: the metric over attempts as one standalone SVG (autoresearch's progress chart: discards grey,
keeps green, the running best as a step line, the target dashed), or a pass/fail strip for pass/fail goals.
report.html shows it inline; png.py draws the same chart as a PNG. chart_model.py says what is drawn, svg.py
how to draw it; this module lays the chart out.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from html import escape

import yaml

from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.chart_model import ChartPoint, MetricChart, tooltip
from goalloop.report.data import _attempts
from goalloop.report.svg import (
    CHART_HEIGHT,
    CHART_WIDTH,
    COLORS,
    SANS,
    Svg,
    axis,
    draw_legend,
    legend_lines,
    linear_y,
    marker,
    nice_ticks,
    step_path,
    tick_label,
    y_label,
)

__all__ = ["CHART_HEIGHT", "CHART_WIDTH", "COLORS", "SANS", "ChartPoint", "MetricChart", "metric_label",
           "render_chart_svg"]


def render_chart_svg(record: RunRecord, width: int = CHART_WIDTH, *, primary: bool = True) -> str:
    """The chart as one standalone <svg>: the metric over attempts, or a pass/fail strip for pass/fail goals.

    A metric chart has two panels on one attempt axis: every attempt on top (its y range follows the
    progress, outliers sit on the edge; a log scale when the values span more than 5x), and below it the
    running best alone, zoomed to its own range, so a gain late in a long run is still visible. `width`:
    960 for a screen, 480 for a phone. `primary`: the one copy whose points carry data-iteration.
    """
    if not record.meta.metric_goal:
        return _pass_fail_svg(record)
    chart = MetricChart.of(record)
    name, lower_better = metric_label(record)
    narrow = width < 700
    left, right, top = (58 if narrow else 76), width - ((52 if chart.holdout_range else 16) if narrow else
                                                         (64 if chart.holdout_range else 28)), 54
    scale = "right scale" if chart.holdout_range else "same scale"
    baseline = next((p for p in chart.points if p.iteration == 0), None)
    has_crash = any(p.kind == "crash" and p.value is None for p in chart.points)
    has_rejected = any(p.kind == "rejected" and p.value is None for p in chart.points)
    legend = [
        *([("baseline", f"baseline {baseline.value:.6g}")] if baseline and baseline.value is not None else []),
        ("keep", "kept"), ("discard", "discarded"), *([("crash", "crash")] if has_crash else []),
        *([("rejected", "rejected")] if has_rejected else []),
        ("best", "running best"), *([("target", "target")] if chart.target is not None else []),
        *([("holdout", f"holdout ({scale})")] if chart.holdout else []),
        *([("warned", "holdout got worse")] if any(p.warning for p in chart.points) else []),
        *([("clipped", "off the chart")] if any(p.clipped for p in chart.points) else []),
    ]
    legend_rows = legend_lines(left, width - 12, legend)
    main_height = 200 if narrow else 250
    zoom_height = 110 if narrow else 130
    reject_lane = top - 16 if has_rejected else None
    bottom = top + main_height
    crash_lane = bottom + 16 if has_crash else None
    zoom_top = bottom + (46 if has_crash else 30)
    zoom_bottom = zoom_top + zoom_height
    axis_y = zoom_bottom
    height = axis_y + 48 + 20 * len(legend_rows)
    svg = Svg(width, height, f"{name} over attempts of run {record.meta.run_id}", primary=primary)
    n = chart.last_iteration
    title = f"{name} ({'lower' if lower_better else 'higher'} is better) over {n:,} attempts"
    svg.text(left, 22, title, size=14 if not narrow else 13, fill=COLORS["ink"], weight="600")

    def x_of(iteration: float) -> float:
        return left + (iteration + 0.5) / (n + 1) * (right - left)

    values = [p.value for p in chart.points if p.value is not None]
    values += ([v for _, v in chart.holdout] if chart.holdout and not chart.holdout_range else [])
    values += [chart.target] if chart.target is not None and chart.low <= chart.target <= chart.high else []
    log = _use_log(values)
    low, high = chart.low, chart.high
    if log:  # the linear margins would leave an empty band at the bottom of a log scale
        low, high = max(low, min(values) / 1.1), min(high, max(values) * 1.1)
    y_of, ticks, labels = axis(low, high, top, bottom, log)
    for tick, label in zip(ticks, labels):
        y = y_of(tick)
        svg.add(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>')
        svg.text(left - 8, y + 4, label, size=11, anchor="end")
    if not chart.has_values:
        svg.text((left + right) / 2, (top + bottom) / 2, "no attempt produced a metric yet", size=14, anchor="middle")
    y_label(svg, 14, (top + bottom) / 2, name + (" (log)" if log else ""))
    svg.add(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#c9cdd3"/>')
    if reject_lane is not None:
        svg.text(left - 8, reject_lane + 4, "rejected", size=11, anchor="end")
    if crash_lane is not None:
        svg.text(left - 8, crash_lane + 4, "crash", size=11, anchor="end")
    if chart.target is not None and chart.has_values and chart.low <= chart.target <= chart.high:
        y = y_of(chart.target)
        svg.add(f'<line class="target" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{COLORS["target"]}" stroke-width="1.5" stroke-dasharray="6 5"/>')
    if chart.best:
        d = step_path([(x_of(i), y_of(min(max(v, chart.low), chart.high))) for i, v in chart.best], x_of(n))
        svg.add(f'<path class="best" d="{d}" fill="none" stroke="{COLORS["best"]}" stroke-width="2" '
                'stroke-linejoin="round" opacity="0.75"/>')
    radius = (5.0 if n <= 60 else 4.0 if n <= 200 else 3.0 if n <= 1000 else 2.0) * (0.8 if narrow else 1.0)
    order = {"discard": 0, "crash": 1, "rejected": 1, "keep": 2, "baseline": 3}
    for point in sorted(chart.points, key=lambda p: order[p.kind]):
        lane = crash_lane if point.kind == "crash" else reject_lane
        y = (lane or bottom) if point.value is None else y_of(point.value)
        marker(svg, point, x_of(point.iteration), y, radius)
    if chart.holdout:
        warned = {p.iteration for p in chart.points if p.warning}
        _holdout_series(svg, chart, x_of, y_of, x_of(n), top, bottom, right, warned)
    _best_panel(svg, chart, x_of, left, right, zoom_top, zoom_bottom, log)
    step = max(1, nice_ticks(0, n, 5 if narrow else 10)[1] if n >= 10 else 1)
    svg.add(f'<line x1="{left}" x2="{right}" y1="{axis_y}" y2="{axis_y}" stroke="#c9cdd3"/>')
    for iteration in range(0, n + 1, int(step)):
        svg.add(f'<line x1="{x_of(iteration):.1f}" x2="{x_of(iteration):.1f}" y1="{axis_y}" y2="{axis_y + 4}" '
                'stroke="#c9cdd3"/>')
        svg.text(x_of(iteration), axis_y + 17, f"{iteration:,}", size=11, anchor="middle")
    svg.text((left + right) / 2, axis_y + 34, "attempt", size=12, anchor="middle", fill=COLORS["ink"])
    for row, entries in enumerate(legend_rows):
        draw_legend(svg, left, axis_y + 58 + 20 * row, entries)
    return svg.done()


def metric_label(record: RunRecord) -> tuple[str, bool]:
    """The metric's name as the goal's regex starts (`val_mae` from `^val_mae:...`, else "metric"), and
    whether lower is better."""
    name = "metric"
    try:
        goal = yaml.safe_load((record.run_dir / "goal.yaml").read_text(encoding="utf-8")) or {}
        pattern = str((goal.get("check") or {}).get("metric") or "")
        found = re.match(r"([A-Za-z_][\w.-]*)", pattern.lstrip("^"))
        if found:
            name = found.group(1)
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        pass
    return name, record.meta.direction != "maximize"


def _use_log(values: list[float]) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 5


def _best_panel(svg: Svg, chart: MetricChart, x_of: Callable[[float], float], left: float, right: float,
                top: float, bottom: float, log: bool) -> None:
    """The running best alone, zoomed to its later course: a long run makes its big gains early, so the
    range starts where the best stood a twentieth of the way in (earlier values sit on the top edge)."""
    if not chart.best:
        return
    n = chart.last_iteration
    start = n // 20 if n >= 40 else 0
    at_start = ([v for i, v in chart.best if i <= start] or [chart.best[0][1]])[-1]
    values = [at_start] + [v for i, v in chart.best if i > start]
    if chart.target is not None:
        span = max(values) - min(values) or abs(values[0]) * 0.1 or 1.0
        if min(values) - span <= chart.target <= max(values) + span:
            values.append(chart.target)
    low, high = min(values), max(values)
    pad = (high - low) * 0.12 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    svg.add(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="#f8faf9"/>')
    y_of, ticks, labels = axis(low, high, top + 6, bottom - 6, False)
    for tick, label in list(zip(ticks, labels))[:: max(1, len(ticks) // 3)]:
        y = y_of(tick)
        svg.add(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>')
        svg.text(left - 8, y + 4, label, size=11, anchor="end")
    zoomed = f"running best from attempt {start:,}, zoomed" if start else "running best, zoomed"
    svg.text(left, top - 6, zoomed, size=11, fill=COLORS["best"], weight="600")
    if chart.target is not None and low <= chart.target <= high:
        y = y_of(chart.target)
        svg.add(f'<line class="target" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{COLORS["target"]}" stroke-width="1.5" stroke-dasharray="6 5"/>')

    def y_in(value: float) -> float:
        return y_of(min(max(value, low), high))

    corners = [(x_of(i), y_in(v)) for i, v in chart.best]
    svg.add(f'<path class="best-zoom" d="{step_path(corners, x_of(n))}" fill="none" '
            f'stroke="{COLORS["best"]}" stroke-width="2"/>')
    for (iteration, value), (x, y) in zip(chart.best, corners):
        if iteration < start:
            continue
        kind = "baseline" if iteration == 0 else "keep"
        svg.add(f'<circle class="best-point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{COLORS[kind]}">'
                f"<title>{escape(('baseline' if iteration == 0 else f'attempt {iteration}') + f': {value:.6g}')}"
                "</title></circle>")
    last_iteration, last_value = chart.best[-1]
    svg.text(right - 4, corners[-1][1] - 7, f"best {last_value:.6g} at {last_iteration:,}", size=11,
             fill=COLORS["best"], anchor="end", weight="600")


def _holdout_series(svg: Svg, chart: MetricChart, x_of: Callable[[float], float],
                    metric_y: Callable[[float], float], x_end: float, top: float, bottom: float, right: float,
                    warned: set[int]) -> None:
    """The holdout metric of the baseline and each kept state: diamonds on a dashed step line, on the metric's
    scale or, when the ranges differ a lot, on its own scale at the right."""
    color = COLORS["holdout"]
    y_of = metric_y
    if chart.holdout_range:
        low, high = chart.holdout_range
        y_of = functools.partial(linear_y, low=low, high=high, top=top, bottom=bottom)
        ticks = [t for t in nice_ticks(low, high, 4) if low <= t <= high]
        for tick in ticks:
            svg.text(right + 8, y_of(tick) + 4, tick_label(tick, ticks), size=11, fill=color)
        svg.text(right + 8, top - 10, "holdout", size=10, fill=color, weight="600")
    d = step_path([(x_of(i), y_of(v)) for i, v in chart.holdout], x_end)
    svg.add(f'<path class="holdout" d="{d}" fill="none" stroke="{color}" stroke-width="1.5" '
            'stroke-dasharray="5 4"/>')
    for iteration, value in chart.holdout:
        x, y = x_of(iteration), y_of(value)
        outline = (f' stroke="{COLORS["warned"]}" stroke-width="2.5"' if iteration in warned
                   else ' stroke="#fff" stroke-width="1"')
        what = "baseline" if iteration == 0 else f"#{iteration} keep"
        key = "data-holdout-iteration" if svg.primary else "data-copy-holdout"
        svg.add(f'<a href="#attempt-{iteration}"><polygon class="holdout-point{"" if svg.primary else " copy"}" {key}="{iteration}" '
                f'points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}" '
                f'fill="{color}"{outline}><title>{escape(what)}: holdout {value:.6g}'
                f"{' (worse)' if iteration in warned else ''}</title></polygon></a>")


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
    svg = Svg(width, height, f"pass or fail over attempts of run {record.meta.run_id}")
    svg.text(left, 24, "each square an attempt, the baseline first; hover for what it tried", size=12)
    for index, attempt in enumerate(attempts):
        x = left + (index % per_row) * (size + gap)
        y = top + (index // per_row) * (size + gap)
        if index % per_row == 0:
            svg.text(left - 10, y + size - 6, f"#{attempt.iteration}", size=11, anchor="end")
        kind = attempt.verdict if attempt.verdict in COLORS else "discard"
        outline = f' stroke="{COLORS["baseline"]}" stroke-width="2.5"' if kind == "baseline" else ""
        svg.point(f'rect x="{x}" y="{y}" width="{size}" height="{size}" rx="4"', attempt.iteration, kind,
                  tooltip(attempt, False), f' fill="{_strip_color(attempt)}"{outline}')
    draw_legend(svg, left, legend_y, [
        ("baseline", "baseline"), ("keep", "passed, kept"), ("discard", "failed"), ("crash", "crash"),
        ("rejected", "rejected"),
    ], squares=True)
    return svg.done()
