"""The kept states of a run as a tree, kept up to date one ledger row at a time.

Every kept attempt (and the baseline, the root) is a node; its parent is the node it was proposed from
(results.tsv's `parent` column). A node is open, a candidate parent, until `search.patience` of its
children in a row were not kept; the run is out of patience when no attempt anywhere was kept for
`budget.patience` attempts. The head is the state the run's branch points at: the latest kept state for
`greedy`, the best node for a tree strategy.

Nothing here rescans the history: `observe` costs O(1) per row (O(patience) for the failure windows), so
a run of 10,000 attempts spends on its bookkeeping what a run of 100 does. A resume rebuilds the tree once
by observing the ledger's rows in order. Rows written before the parent column existed, and lost attempts
whose parent is unknown, count as children of the head at the time, which is what greedy proposed from.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from goalloop import verdict
from goalloop.goal import Goal
from goalloop.ledger import AttemptRecord

TRIED_SHOWN = 8
"""How many of a node's children the tree remembers for the prompt (the most recent)."""


@dataclass(eq=False)
class Node:
    record: AttemptRecord
    parent: Node | None
    score: float
    """The metric made "higher is better" (pass/fail: 1 for a pass); -inf when it gave no metric."""
    children: int = 0
    failures: int = 0
    """Children in a row that were not kept, since the last one that was."""
    closed: bool = False
    tried: deque[AttemptRecord] = field(default_factory=lambda: deque(maxlen=TRIED_SHOWN))
    window: deque[str | None] = field(default_factory=deque)
    """The failure line of each of its latest children (None for one that did not fail), for stalls."""

    @property
    def iteration(self) -> int:
        return self.record.iteration

    @property
    def commit(self) -> str:
        return self.record.commit or self.record.kept_commit

    def lineage(self) -> list[Node]:
        """The path from the root (the baseline) to this node."""
        path: list[Node] = []
        node: Node | None = self
        while node is not None:
            path.append(node)
            node = node.parent
        return path[::-1]


class Frontier:
    def __init__(self, goal: Goal, greedy: bool = True, patience: int | None = None) -> None:
        self.goal, self.greedy, self.patience = goal, greedy, patience
        self.nodes: dict[int, Node] = {}
        self.open: dict[int, Node] = {}
        """Open nodes by iteration, oldest first."""
        self.latest: Node | None = None
        self.best: Node | None = None
        self.last_iteration = 0
        self.kept_rows: list[tuple[int, AttemptRecord]] = []
        """(position in the history, record) of every kept state, for the prompt's table of attempts."""
        self._rows = 0
        self._times = goal.budget.patience or 3
        self.window: deque[str | None] = deque(maxlen=self._times)
        """The run's failure lines since its last keep (the latest `times`)."""

    @classmethod
    def of(cls, goal: Goal, history: list[AttemptRecord], greedy: bool = True, patience: int | None = None) -> Frontier:
        frontier = cls(goal, greedy, patience)
        for record in history:
            frontier.observe(record)
        return frontier

    @property
    def head(self) -> Node:
        """The state the run's branch points at."""
        node = self.latest if self.greedy else self.best
        assert node is not None, "no baseline yet"
        return node

    @property
    def since_keep(self) -> int:
        """Attempts since the last one that was kept anywhere in the tree."""
        return self.last_iteration - (self.latest.iteration if self.latest else 0)

    def score(self, record: AttemptRecord) -> float:
        if not self.goal.is_metric_goal:
            return 1.0 if record.passed else 0.0
        return self.score_of(record.metric)

    def score_of(self, metric: float | None) -> float:
        if metric is None:
            return float("-inf")
        return metric if self.goal.target.direction == "maximize" else -metric

    def observe(self, record: AttemptRecord) -> None:
        """Take one ledger row into account, in iteration order."""
        self.last_iteration = max(self.last_iteration, record.iteration)
        self._rows += 1
        if record.verdict in ("baseline", "keep"):
            self.kept_rows.append((self._rows - 1, record))
        if record.verdict == "baseline":
            self._join(Node(record, None, self.score(record)))
            return
        parent = self.nodes.get(record.parent) if record.parent is not None else None
        parent = parent or (self.latest if self.greedy or self.best is None else self.best)
        if parent is None:
            return
        parent.children += 1
        parent.tried.append(record)
        if record.verdict == "keep":
            parent.failures = 0
            parent.window.clear()
            self.window.clear()
            self._join(Node(record, parent, self.score(record)))
            return
        parent.failures += 1
        line = self._failure_line(record)
        for window in (parent.window, self.window):
            window.append(line)
            while len(window) > self._times:
                window.popleft()
        if self.patience is not None and parent.failures >= self.patience and not parent.closed:
            parent.closed = True
            self.open.pop(parent.iteration, None)

    def _join(self, node: Node) -> None:
        self.nodes[node.iteration] = node
        self.open[node.iteration] = node
        self.latest = node
        if self.best is None or node.score > self.best.score:
            self.best = node

    def _failure_line(self, record: AttemptRecord) -> str | None:
        failed = record.verdict in ("crash", "rejected") or (record.verdict == "discard" and not self.goal.is_metric_goal)
        return verdict.normalise_failure(record.reason) if failed else None

    def stall(self, node: Node | None = None) -> str | None:
        """The failure every one of the latest attempts (from `node`, or anywhere) repeated, if they did."""
        window = list(self.window if node is None else node.window)
        if len(window) < self._times or any(line is None for line in window):
            return None
        return verdict.repeated_failure([line or "" for line in window], self._times)
