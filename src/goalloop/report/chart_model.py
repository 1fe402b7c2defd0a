"""What the chart shows, computed from the ledger: one point an attempt (where it sits, whether it is off the
chart, its tooltip), the running best's corners, the y range that follows the progress rather than the
outliers, and the holdout's series with whether it shares the metric's scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.data import _attempts, _measured
from goalloop.report.svg import COLORS


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
            if core and comparable(core, values):
                core = core + values
            else:
                low, high = min(values), max(values)
                pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
                holdout_range = (low - pad, high + pad)
        low, high = chart_range(core, rest)
        points = []
        for a in attempts:
            value = metric.get(a.iteration)
            kind = a.verdict if a.verdict in COLORS else "discard"
            clipped = value is not None and not low <= value <= high
            if value is not None:
                value = min(max(value, low), high)
            elif kind not in ("crash", "rejected"):
                kind = "crash"  # a baseline or verdict without a metric: the check did not produce one
            points.append(ChartPoint(a.iteration, kind, value, clipped, tooltip(a, record.meta.metric_goal),
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


def comparable(metric: list[float], holdout: list[float]) -> bool:
    """Whether the holdout can share the metric's scale: together they span at most 3x either one alone."""
    def span(values: list[float]) -> float:
        return max(values) - min(values) or abs(max(values)) * 0.1 or 1.0

    together = max(metric + holdout) - min(metric + holdout)
    return together <= 3 * max(span(metric), span(holdout))


def tooltip(attempt: AttemptRecord, metric_goal: bool) -> str:
    title = "baseline" if attempt.iteration == 0 else f"#{attempt.iteration} {attempt.verdict}"
    lines = [f"{title}: {_measured(attempt, metric_goal)}", " ".join(attempt.description.split())[:200]]
    if attempt.holdout is not None:
        lines.append(f"holdout: {attempt.holdout:.6g}")
    if attempt.reason and attempt.verdict not in ("keep", "discard"):
        lines.append(attempt.reason[:200])
    if attempt.warning:
        lines.append(f"⚠ {attempt.warning[:200]}")
    return "\n".join(lines)


def chart_range(core: list[float], rest: list[float]) -> tuple[float, float]:
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
