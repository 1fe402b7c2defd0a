"""report.png: the chart alone, for a pull request or a chat message.

The PNG is drawn by headless Chromium from the very SVG the page shows, when a Chromium or Chrome is
installed; otherwise by matplotlib if it is importable; otherwise `write_report(png=True)` raises a
GoalloopError saying what to install. Neither is a dependency of goalloop.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from goalloop.errors import GoalloopError
from goalloop.ledger import RunRecord
from goalloop.report.chart import CHART_HEIGHT, CHART_WIDTH, COLORS, MetricChart, _strip_color, metric_label, render_chart_svg
from goalloop.report.data import _attempts

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_PATHS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)


def write_chart_png(record: RunRecord, path: Path) -> Path:
    """The chart as a PNG: headless Chromium if installed (the same SVG as the page), else matplotlib."""
    browser = find_chromium()
    if browser:
        return _png_with_chromium(browser, render_chart_svg(record), path)
    if importlib.util.find_spec("matplotlib") is None:
        raise GoalloopError(
            "--png needs a headless Chromium or Chrome, or matplotlib, to draw the chart; neither was found",
            fix="install Chromium (Debian/Ubuntu: `apt-get install chromium`; macOS: `brew install --cask chromium`) "
            "or `pip install matplotlib` in goalloop's environment; report.html has the same chart",
        )
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
            chart = MetricChart.of(record)
            _matplotlib_metric(ax, chart)
            name, lower_better = metric_label(record)
            ax.set_ylabel(name)
            ax.set_title(f"{name} ({'lower' if lower_better else 'higher'} is better) over "
                         f"{chart.last_iteration:,} attempts", fontsize=10, loc="left")
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
