"""The morning report: a run's ledger -> `report.md`, `report.html` and, when asked, `report.png`.

    report.md     the totals and one table row per attempt (the rows of results.tsv, plus added lines and
                  the reason for a verdict); `markdown_summary()` alone is what a CI step summary shows
    report.html   one self-contained page: the metric over attempts as inline SVG (autoresearch's progress
                  chart: discards grey, keeps green, the running best as a step line, the target dashed),
                  the totals, how to look at the branch, and every attempt with its diff behind a click
    report.png    the chart alone, for a pull request or a chat message

One module a concept: data.py (what a report says, read from the ledger), markdown.py (report.md and the CI
step summary), html.py (the page), chart.py (the SVG chart's layout, with chart_model.py for what it shows
and svg.py for how it is drawn), png.py (the chart as a PNG). This module writes the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from goalloop.ledger import read_run
from goalloop.report.chart import CHART_HEIGHT, CHART_WIDTH, COLORS, SANS, ChartPoint, MetricChart, render_chart_svg
from goalloop.report.data import CHECK_LOG, VERDICTS, Totals, findings
from goalloop.report.html import CSS, DIFF_CAP, DIFFS_TOTAL_CAP, render_html
from goalloop.report.markdown import markdown_summary, render_markdown
from goalloop.report.png import (
    CHROMIUM_NAMES,
    CHROMIUM_PATHS,
    _png_with_matplotlib,
    chromium_command,
    find_chromium,
    write_chart_png,
)

__all__ = [
    "CHART_HEIGHT", "CHART_WIDTH", "CHECK_LOG", "CHROMIUM_NAMES", "CHROMIUM_PATHS", "COLORS", "CSS", "DIFF_CAP",
    "DIFFS_TOTAL_CAP", "SANS", "VERDICTS", "ChartPoint", "MetricChart", "ReportPaths", "Totals", "_png_with_matplotlib",
    "chromium_command", "find_chromium", "findings", "markdown_summary", "render_chart_svg", "render_html",
    "render_markdown", "write_chart_png", "write_report",
]


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


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
