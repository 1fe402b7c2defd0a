"""The chart: the metric over attempts as one standalone SVG (autoresearch's progress chart: discards grey,
keeps green, the running best as a step line, the target dashed), or a pass/fail strip for pass/fail goals.
report.html shows it inline; png.py draws the same chart as a PNG.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

import yaml

from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.data import _attempts, _measured

CHART_WIDTH, CHART_HEIGHT = 960, 400
SANS = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
COLORS = {
    "baseline": "#2563eb", "keep": "#16a34a", "discard": "#b8bcc4", "crash": "#dc2626", "rejected": "#d97706",
    "best": "#15803d", "target": "#6b7280", "ink": "#1f2937", "muted": "#6b7280", "grid": "#eceef1",
    "holdout": "#7c3aed", "warned": "#d97706",
}


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

    def __init__(self, width: int, height: int, label: str, *, primary: bool = True) -> None:
        self.primary = primary
        self.key = "data-iteration" if primary else "data-copy-of"
        """Only the primary copy of a chart (the page has one a screen size) names its points' attempts."""
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
        self.add(f'<a href="#attempt-{iteration}"><{shape} class="point {kind}" {self.key}="{iteration}"'
                 f'{extra}><title>{escape(tooltip)}</title></{element}></a>')

    def done(self) -> str:
        return "\n".join(self.parts + ["</svg>"])


def _marker(svg: _Svg, point: ChartPoint, x: float, y: float, r: float) -> None:
    color = COLORS[point.kind]
    if point.warning:
        key = "data-warned-iteration" if svg.primary else "data-copy-warned"
        svg.add(f'<circle class="warned{"" if svg.primary else " copy"}" {key}="{point.iteration}" cx="{x:.1f}" cy="{y:.1f}" '
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
    legend_rows = _legend_rows(left, width - 12, legend)
    main_height = 200 if narrow else 250
    zoom_height = 110 if narrow else 130
    reject_lane = top - 16 if has_rejected else None
    bottom = top + main_height
    crash_lane = bottom + 16 if has_crash else None
    zoom_top = bottom + (46 if has_crash else 30)
    zoom_bottom = zoom_top + zoom_height
    axis_y = zoom_bottom
    height = axis_y + 48 + 20 * len(legend_rows)
    svg = _Svg(width, height, f"{name} over attempts of run {record.meta.run_id}", primary=primary)
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
    y_of, ticks, labels = _axis(low, high, top, bottom, log)
    for tick, label in zip(ticks, labels):
        y = y_of(tick)
        svg.add(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>')
        svg.text(left - 8, y + 4, label, size=11, anchor="end")
    if not chart.has_values:
        svg.text((left + right) / 2, (top + bottom) / 2, "no attempt produced a metric yet", size=14, anchor="middle")
    _y_label(svg, 14, (top + bottom) / 2, name + (" (log)" if log else ""))
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
        d = _step_path([(x_of(i), y_of(min(max(v, chart.low), chart.high))) for i, v in chart.best], x_of(n))
        svg.add(f'<path class="best" d="{d}" fill="none" stroke="{COLORS["best"]}" stroke-width="2" '
                'stroke-linejoin="round" opacity="0.75"/>')
    radius = (5.0 if n <= 60 else 4.0 if n <= 200 else 3.0 if n <= 1000 else 2.0) * (0.8 if narrow else 1.0)
    order = {"discard": 0, "crash": 1, "rejected": 1, "keep": 2, "baseline": 3}
    for point in sorted(chart.points, key=lambda p: order[p.kind]):
        lane = crash_lane if point.kind == "crash" else reject_lane
        y = (lane or bottom) if point.value is None else y_of(point.value)
        _marker(svg, point, x_of(point.iteration), y, radius)
    if chart.holdout:
        warned = {p.iteration for p in chart.points if p.warning}
        _holdout_series(svg, chart, x_of, y_of, x_of(n), top, bottom, right, warned)
    _best_panel(svg, chart, x_of, left, right, zoom_top, zoom_bottom, log)
    step = max(1, _nice_ticks(0, n, 5 if narrow else 10)[1] if n >= 10 else 1)
    svg.add(f'<line x1="{left}" x2="{right}" y1="{axis_y}" y2="{axis_y}" stroke="#c9cdd3"/>')
    for iteration in range(0, n + 1, int(step)):
        svg.add(f'<line x1="{x_of(iteration):.1f}" x2="{x_of(iteration):.1f}" y1="{axis_y}" y2="{axis_y + 4}" '
                'stroke="#c9cdd3"/>')
        svg.text(x_of(iteration), axis_y + 17, f"{iteration:,}", size=11, anchor="middle")
    svg.text((left + right) / 2, axis_y + 34, "attempt", size=12, anchor="middle", fill=COLORS["ink"])
    for row, entries in enumerate(legend_rows):
        _legend(svg, left, axis_y + 58 + 20 * row, entries)
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


def _axis(low: float, high: float, top: float, bottom: float, log: bool):  # noqa: ANN202
    """y_of, the ticks and their labels, for a linear or a log scale between `low` and `high`."""
    if log:
        lo, hi = math.log10(low), math.log10(high)

        def y_of(value: float) -> float:
            return bottom - (math.log10(max(value, low)) - lo) / (hi - lo or 1) * (bottom - top)

        ticks = [10.0 ** e * m for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                 if low <= 10.0 ** e * m <= high]
        return y_of, ticks, [f"{t:g}" for t in ticks]

    def y_lin(value: float) -> float:
        return bottom - (value - low) / (high - low or 1) * (bottom - top)

    ticks = _nice_ticks(low, high, 5)
    return y_lin, ticks, [_tick_label(t, ticks) for t in ticks]


def _y_label(svg: _Svg, x: float, y: float, text: str) -> None:
    svg.add(f'<text x="{x}" y="{y:.1f}" font-size="12" fill="{COLORS["ink"]}" text-anchor="middle" '
            f'transform="rotate(-90 {x} {y:.1f})">{escape(text)}</text>')


def _best_panel(svg: _Svg, chart: MetricChart, x_of: Callable[[float], float], left: float, right: float,
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
    y_of, ticks, labels = _axis(low, high, top + 6, bottom - 6, False)
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
    svg.add(f'<path class="best-zoom" d="{_step_path(corners, x_of(n))}" fill="none" '
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
        y_of = functools.partial(_linear_y, low=low, high=high, top=top, bottom=bottom)
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
        key = "data-holdout-iteration" if svg.primary else "data-copy-holdout"
        svg.add(f'<a href="#attempt-{iteration}"><polygon class="holdout-point{"" if svg.primary else " copy"}" {key}="{iteration}" '
                f'points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}" '
                f'fill="{color}"{outline}><title>{escape(what)}: holdout {value:.6g}'
                f"{' (worse)' if iteration in warned else ''}</title></polygon></a>")


def _linear_y(value: float, *, low: float, high: float, top: float, bottom: float) -> float:
    """Where `value` sits between `bottom` (at `low`) and `top` (at `high`)."""
    return bottom - (value - low) / (high - low) * (bottom - top)


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
