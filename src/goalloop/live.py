"""The live view of a run on a terminal: the goal, the budget used and left, the best against the baseline
and the target, and the last attempts. Off a terminal the CLI prints one plain line per attempt instead."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from goalloop.goal import Goal, format_duration
from goalloop.ledger import AttemptRecord

VERDICT_STYLE = {"baseline": "cyan", "keep": "green", "discard": "dim", "crash": "red", "rejected": "yellow"}
SHOWN_ATTEMPTS = 8


class LiveView:
    """A rich Live panel fed with each recorded attempt; the clock in it ticks between attempts."""

    def __init__(self, goal: Goal, run_id: str, console: Console, history: list[AttemptRecord]) -> None:
        self.goal, self.run_id = goal, run_id
        self.history = list(history)
        self._elapsed_before = max((r.elapsed for r in history), default=0.0)
        self._started = time.monotonic()
        self._live = Live(self, console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)  # type: ignore[arg-type]

    def add(self, record: AttemptRecord) -> None:
        self.history.append(record)
        self._live.refresh()

    def __rich__(self) -> RenderableType:
        goal, history = self.goal, self.history
        budget = goal.budget
        done = sum(1 for r in history if r.iteration > 0)
        elapsed = self._elapsed_before + time.monotonic() - self._started
        usd = sum(r.cost_usd or 0.0 for r in history)
        tokens = sum(r.tokens or 0 for r in history)
        spend = [f"attempts {done}" + (f"/{budget.iterations}" if budget.iterations else ""),
                 f"time {format_duration(elapsed)}" + (f"/{format_duration(budget.time)}" if budget.time else "")]
        if usd or budget.usd is not None:
            spend.append(f"${usd:.2f}" + (f"/${budget.usd:.2f}" if budget.usd is not None else ""))
        if tokens or budget.tokens:
            spend.append(f"{tokens:,} tokens" + (f"/{budget.tokens:,}" if budget.tokens else ""))
        kept = [r for r in history if r.verdict in ("baseline", "keep")]
        best, baseline = (kept[-1], history[0]) if kept else (None, None)
        metric_goal = goal.is_metric_goal
        standing = "measuring the baseline..."
        if best and baseline:
            target = "" if goal.target.value is None else f"   target {goal.target.value:g} ({goal.target.direction})"
            standing = (f"best {best.result_text(metric_goal)} at #{best.iteration}   "
                        f"baseline {baseline.result_text(metric_goal)}{target}")
        counts = Counter(r.verdict for r in history if r.iteration > 0)
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column, justify in (("#", "right"), ("verdict", "left"), ("result", "right"), ("time", "right"),
                                ("description", "left")):
            table.add_column(column, justify=justify, no_wrap=column != "description")  # type: ignore[arg-type]
        for record in history[-SHOWN_ATTEMPTS:]:
            style = VERDICT_STYLE.get(record.verdict, "")
            note = record.description + (f"  ({record.reason})" if record.reason and record.verdict != "discard" else "")
            if record.warning:
                note += f"  warning: {record.warning}"
            table.add_row(str(record.iteration), Text(record.verdict, style=style), record.result_text(metric_goal),
                          f"{record.seconds:.1f}s", escape(note[:120]))
        return Group(
            Text.from_markup(f"[bold]{escape(goal.run_name)}[/]  {escape(self.run_id)}"),
            Text("   ".join(spend)),
            Text(standing, style="bold"),
            Text(", ".join(f"{n} {v}" for v, n in counts.items()) or "no attempts yet", style="dim"),
            table,
        )
