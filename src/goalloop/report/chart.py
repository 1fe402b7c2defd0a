"""The chart: the metric over attempts as one standalone SVG (autoresearch's progress chart: discards grey,
keeps green, the running best as a step line, the target dashed), or a pass/fail strip for pass/fail goals.
report.html shows it inline; png.py draws the same chart as a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

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
