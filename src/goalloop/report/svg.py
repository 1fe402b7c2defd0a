"""The chart's drawing: an SVG writer whose every text and attribute is escaped, the palette, axes and
ticks (linear and log), step lines, the attempt markers and the legend. chart.py lays the chart out with these.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goalloop.report.chart_model import ChartPoint

CHART_WIDTH, CHART_HEIGHT = 960, 400
SANS = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
COLORS = {
    "baseline": "#2563eb", "keep": "#16a34a", "discard": "#b8bcc4", "crash": "#dc2626", "rejected": "#d97706",
    "best": "#15803d", "target": "#6b7280", "ink": "#1f2937", "muted": "#6b7280", "grid": "#eceef1",
    "holdout": "#7c3aed", "warned": "#d97706",
}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(value) or 1.0
    if abs(value) >= 1e6 or (value and abs(value) < 1e-3):
        return f"{value:.3g}"
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent) + (1 if round(step / 10**exponent, 6) == 2.5 else 0)
    return f"{value:.{decimals}f}"


class Svg:
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


def marker(svg: Svg, point: ChartPoint, x: float, y: float, r: float) -> None:
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


def axis(low: float, high: float, top: float, bottom: float, log: bool):  # noqa: ANN202
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

    ticks = nice_ticks(low, high, 5)
    return y_lin, ticks, [tick_label(t, ticks) for t in ticks]


def y_label(svg: Svg, x: float, y: float, text: str) -> None:
    svg.add(f'<text x="{x}" y="{y:.1f}" font-size="12" fill="{COLORS["ink"]}" text-anchor="middle" '
            f'transform="rotate(-90 {x} {y:.1f})">{escape(text)}</text>')


def step_path(corners: list[tuple[float, float]], x_end: float) -> str:
    """An SVG path that holds each value until the next one, then runs on to `x_end`."""
    d = f"M{corners[0][0]:.1f},{corners[0][1]:.1f}"
    for x, y in corners[1:]:
        d += f"H{x:.1f}V{y:.1f}"
    return d + f"H{x_end:.1f}"


def linear_y(value: float, *, low: float, high: float, top: float, bottom: float) -> float:
    """Where `value` sits between `bottom` (at `low`) and `top` (at `high`)."""
    return bottom - (value - low) / (high - low) * (bottom - top)


def glyph_width(kind: str, squares: bool = False) -> float:
    if squares:
        return 17
    return {"best": 28, "target": 28, "holdout": 34, "crash": 14, "rejected": 15, "warned": 20}.get(kind, 14)


def legend_lines(x: float, max_x: float, entries: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The legend's entries split into rows that fit between `x` and `max_x`."""
    rows: list[list[tuple[str, str]]] = [[]]
    at = x
    for kind, label in entries:
        width = glyph_width(kind) + 6.8 * len(label)
        if rows[-1] and at + width > max_x:
            rows.append([])
            at = x
        rows[-1].append((kind, label))
        at += width + 22
    return rows


def draw_legend(svg: Svg, x: float, y: float, entries: list[tuple[str, str]], *, squares: bool = False) -> None:
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
