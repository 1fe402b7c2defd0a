"""The search tree of a run with a tree strategy, as inline SVG beside the metric chart.

One node per attempt, placed along the same axis as the chart (attempt number, left to right) and one row
per generation (the baseline at the top, each kept state's children a row below it). Kept nodes are green
and joined to their parents; an attempt that was not kept is a small dot in the row below the state it
was proposed from, coloured by its verdict. The path from the baseline to the best node (what the branch
holds) is drawn thick. A greedy run is a single line of kept states and gets no tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.chart import CHART_WIDTH, COLORS, SANS
from goalloop.report.data import _attempts, _measured

ROW_HEIGHT = 26
MAX_HEIGHT = 420
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 18, 30


@dataclass(frozen=True)
class TreeNode:
    record: AttemptRecord
    depth: int
    parent: int | None
    """The parent's attempt number, None for the baseline."""


def tree_nodes(record: RunRecord) -> list[TreeNode] | None:
    """Every attempt placed in the tree, or None when the run's kept states form a single line (greedy, or a
    run recorded before parents were)."""
    attempts = _attempts(record)
    depth: dict[int, int] = {}
    nodes: list[TreeNode] = []
    latest: int | None = None
    branched = False
    for attempt in attempts:
        if attempt.verdict == "baseline":
            depth[attempt.iteration] = 0
            nodes.append(TreeNode(attempt, 0, None))
            latest = attempt.iteration
            continue
        parent = attempt.parent if attempt.parent in depth else latest
        if parent is None:
            continue
        branched = branched or parent != latest
        nodes.append(TreeNode(attempt, depth[parent] + 1, parent))
        if attempt.verdict == "keep":
            depth[attempt.iteration] = depth[parent] + 1
            latest = attempt.iteration
    return nodes if branched else None


def render_tree_svg(record: RunRecord, width: int = CHART_WIDTH) -> str | None:
    """The tree as an SVG element, or None for a run that is not a tree."""
    nodes = tree_nodes(record)
    if nodes is None:
        return None
    deepest = max(n.depth for n in nodes)
    row = min(ROW_HEIGHT, (MAX_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / max(deepest, 1))
    height = int(MARGIN_TOP + MARGIN_BOTTOM + row * max(deepest, 1))
    last = max(n.record.iteration for n in nodes) or 1
    plot = width - MARGIN_LEFT - MARGIN_RIGHT

    def x(iteration: int) -> float:
        return MARGIN_LEFT + plot * iteration / last

    def y(depth: int) -> float:
        return MARGIN_TOP + row * depth

    where = {n.record.iteration: n for n in nodes}
    best_path = _path_to(where, record.kept.iteration if record.kept else 0)
    metric_goal = record.meta.metric_goal
    edges, best_edges, dots = [], [], []
    for node in nodes:
        attempt = node.record
        if node.parent is not None and attempt.verdict == "keep":
            parent = where[node.parent]
            line = (f'<path d="M{x(parent.record.iteration):.1f},{y(parent.depth):.1f} '
                    f'V{y(node.depth):.1f} H{x(attempt.iteration):.1f}"')
            if attempt.iteration in best_path and node.parent in best_path:
                best_edges.append(f'{line} stroke="{COLORS["best"]}" stroke-width="3" fill="none"/>')
            else:
                edges.append(f'{line} stroke="{COLORS["keep"]}" stroke-width="1.2" fill="none" opacity=".7"/>')
        kept = attempt.verdict in ("baseline", "keep")
        colour = COLORS.get(attempt.verdict, COLORS["discard"])
        radius = 4.5 if kept else 2.2
        ring = f' stroke="{COLORS["best"]}" stroke-width="2"' if attempt.iteration in best_path else ""
        title = escape(f"#{attempt.iteration} {attempt.verdict}: {_measured(attempt, metric_goal)}"
                       + (f" (from #{node.parent})" if node.parent is not None else "")
                       + f"\n{' '.join(attempt.description.split())[:200]}")
        dots.append(f'<circle cx="{x(attempt.iteration):.1f}" cy="{y(node.depth):.1f}" r="{radius}" fill="{colour}"'
                    f'{ring}><title>{title}</title></circle>')
    labels = [f'<text x="{MARGIN_LEFT - 8}" y="{y(0) + 4:.1f}" text-anchor="end">baseline</text>',
              f'<text x="{MARGIN_LEFT - 8}" y="{y(deepest) + 4:.1f}" text-anchor="end">depth {deepest}</text>'
              if deepest else "",
              f'<text x="{x(0):.1f}" y="{height - 8}">attempt 0</text>',
              f'<text x="{x(last):.1f}" y="{height - 8}" text-anchor="end">attempt {last}</text>']
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="the search tree: {len(nodes)} attempts, the best path drawn thick" '
            f'font-family="{SANS}" font-size="12" fill="{COLORS["muted"]}">'
            + "".join(edges + best_edges + dots + labels) + "</svg>")


def _path_to(where: dict[int, TreeNode], iteration: int) -> set[int]:
    path: set[int] = set()
    node = where.get(iteration)
    while node is not None:
        path.add(node.record.iteration)
        node = where.get(node.parent) if node.parent is not None else None
    return path
