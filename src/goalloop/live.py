"""The live view of a run on a terminal: the goal, the budget used and left, the best against the baseline
and the target, the attempt in progress (what it is doing and for how long), and as many of the last
attempts as the terminal has rows for. Off a terminal the CLI prints one plain line per attempt instead.

Columns keep their width from frame to frame, long text ends in an ellipsis instead of wrapping, and the
view is redrawn in place once a second (rich's Live), so the clock of the attempt in progress moves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from goalloop.goal import Goal, format_duration, format_seconds
from goalloop.ledger import AttemptRecord
from goalloop.quick import VERDICT_STYLE

HEADER_ROWS = 7
"""Lines the view uses above the attempts (title, spend, standing, in progress, counts, table header, margin)."""


@dataclass
class _Phase:
    iteration: int
    phase: str
    started: float
    """time.monotonic() when the attempt started."""


class LiveView:
    """A rich Live panel fed with each recorded attempt and each phase of the attempts under way."""

    def __init__(self, goal: Goal, run_id: str, console: Console, history: list[AttemptRecord]) -> None:
        self.goal, self.run_id, self.console = goal, run_id, console
        self.history = list(history)
        self._elapsed_before = max((r.elapsed for r in history), default=0.0)
        self._started = time.monotonic()
        self._now: dict[int, _Phase] = {}
        self._lock = threading.Lock()
        self._live = Live(self, console=console, refresh_per_second=1, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)  # type: ignore[arg-type]

    def add(self, record: AttemptRecord) -> None:
        with self._lock:
            self.history.append(record)
            for slot in [s for s, p in self._now.items() if p.iteration == record.iteration]:
                del self._now[slot]
        self._live.refresh()

    def phase(self, slot: int, iteration: int, phase: str) -> None:
        """What the attempt in `slot` is doing now (called from the loop, from any thread)."""
        with self._lock:
            current = self._now.get(slot)
            started = current.started if current and current.iteration == iteration else time.monotonic()
            self._now[slot] = _Phase(iteration, phase, started)
        self._live.refresh()

    def __rich__(self) -> RenderableType:
        with self._lock:
            history, now = list(self.history), dict(self._now)
        goal = self.goal
        metric_goal = goal.is_metric_goal
        counts = Counter(r.verdict for r in history if r.iteration > 0)
        in_progress = [self._in_progress_line(p) for _, p in sorted(now.items())]
        lines = [
            Text.assemble((goal.run_name, "bold"), "  ", self.run_id, no_wrap=True, overflow="ellipsis"),
            Text(self._spend_line(history), no_wrap=True, overflow="ellipsis"),
            Text(self._standing_line(history), style="bold", no_wrap=True, overflow="ellipsis"),
            *(in_progress or [Text("between attempts", style="dim")]),
            Text(", ".join(f"{n} {v}" for v, n in counts.items()) or "no attempts recorded yet", style="dim",
                 no_wrap=True, overflow="ellipsis"),
        ]
        room = max(self.console.height - HEADER_ROWS - max(len(in_progress) - 1, 0), 3)
        widest = max(len(str(goal.budget.iterations or 0)), len(str(history[-1].iteration)) if history else 1, 3)
        return Group(*lines, self._table(history[-room:], metric_goal, widest))

    def _spend_line(self, history: list[AttemptRecord]) -> str:
        budget = self.goal.budget
        done = sum(1 for r in history if r.iteration > 0)
        elapsed = self._elapsed_before + time.monotonic() - self._started
        spend = [f"attempts {done}" + (f"/{budget.iterations}" if budget.iterations else ""),
                 f"time {format_duration(elapsed)}" + (f"/{format_duration(budget.time)}" if budget.time else "")]
        tried = [r for r in history if r.iteration > 0]
        known = [r.cost_usd for r in tried if r.cost_usd is not None]
        usd = sum(known)
        tokens = sum(r.tokens for r in history)
        if budget.usd is not None or usd:
            spend.append(f"${usd:.2f}" + (f"/${budget.usd:.2f}" if budget.usd is not None else ""))
        elif tried and not known:
            spend.append("cost not tracked")
        if tokens or budget.tokens:
            spend.append(f"{tokens:,} tokens" + (f"/{budget.tokens:,}" if budget.tokens else ""))
        return "   ".join(spend)

    def _standing_line(self, history: list[AttemptRecord]) -> str:
        kept = [r for r in history if r.verdict in ("baseline", "keep")]
        if not kept:
            return "measuring the baseline..."
        best, baseline, metric_goal = kept[-1], history[0], self.goal.is_metric_goal
        target = "" if self.goal.target.value is None else f"   target {self.goal.target.value:g} ({self.goal.target.direction})"
        return (f"best {best.result_text(metric_goal)} at #{best.iteration}   "
                f"baseline {baseline.result_text(metric_goal)}{target}")

    def _in_progress_line(self, phase: _Phase) -> Text:
        what = "the baseline" if phase.iteration == 0 else f"attempt {phase.iteration}"
        seconds = format_duration(time.monotonic() - phase.started)
        return Text.assemble(("▶ ", "bold cyan"), (what, "bold"), f": {phase.phase}, {seconds}",
                             no_wrap=True, overflow="ellipsis")

    @staticmethod
    def _table(shown: list[AttemptRecord], metric_goal: bool, widest: int) -> Table:
        """The last attempts; column widths depend only on the run, so they do not move between frames."""
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold", expand=True)
        table.add_column("#", justify="right", width=widest, no_wrap=True)
        table.add_column("verdict", width=8, no_wrap=True)
        table.add_column("result", justify="right", width=10, no_wrap=True, overflow="ellipsis")
        table.add_column("time", justify="right", width=7, no_wrap=True)
        table.add_column("description", ratio=1, no_wrap=True, overflow="ellipsis")
        for record in shown:
            note = record.description + (f"  ({record.reason})" if record.reason and record.verdict != "discard" else "")
            if record.warning:
                note += f"  warning: {record.warning}"
            table.add_row(str(record.iteration), Text(record.verdict, style=VERDICT_STYLE.get(record.verdict, "")),
                          record.result_text(metric_goal), format_seconds(record.seconds), Text(" ".join(note.split())))
        return table
