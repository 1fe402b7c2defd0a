"""Where a run stands now, for `goalloop status` and `goalloop status --json`: its state, the attempt in
progress and what it is doing, the budget used and left, the best against the baseline, what was spent.

Read from the ledger alone (plus whether the run's process is alive, which the caller knows), so it works
from another terminal while the run goes on, and on a run that was killed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from goalloop.goal import Budget, format_duration
from goalloop.ledger import AttemptRecord, RunRecord
from goalloop.report.data import NOT_TRACKED, VERDICTS, Totals, findings


@dataclass(frozen=True)
class InProgress:
    """An attempt under way: which, in which worktree, doing what, for how long."""

    iteration: int
    slot: int
    phase: str
    """proposing, checking, repeat k of n, holdout check, measuring the best again."""
    seconds: float
    """Since the attempt started."""

    def text(self) -> str:
        return f"attempt {self.iteration}: {self.phase}, {format_duration(self.seconds)}"


@dataclass(frozen=True)
class BudgetUse:
    """One budget: how much of it is used, its limit (None: no limit) and what is left."""

    name: str
    used: float
    limit: float | None

    @property
    def left(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    def text(self) -> str:
        show = {"attempts": lambda v: f"{v:g}", "time": format_duration, "tokens": lambda v: f"{v:,.0f}",
                "usd": lambda v: f"${v:.2f}"}[self.name]
        unit = {"attempts": " attempts", "tokens": " tokens"}.get(self.name, "")
        if self.limit is None:
            return f"{show(self.used)}{unit}"
        return f"{show(self.used)} of {show(self.limit)}{unit}, {show(self.left or 0)} left"


@dataclass
class Standing:
    run_id: str
    goal: str
    state: str
    reason: str
    resumable: bool
    attempts: int
    verdicts: dict[str, int]
    best: str
    best_attempt: int | None
    baseline: str
    spent: str
    budget: list[BudgetUse] = field(default_factory=list)
    in_progress: list[InProgress] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    branch: str = ""
    repo: str = ""
    record: str = ""

    @classmethod
    def of(cls, record: RunRecord, state: str, budget: Budget | None, now: datetime | None = None) -> Standing:
        """`state`: the caller's word for it (`running` when its process is alive)."""
        now = now or datetime.now(timezone.utc)
        meta, totals = record.meta, Totals.of(record)
        running = state == "running"
        elapsed = record.elapsed + (_since_last_row(record, now) if running else 0.0)
        tried = [a for a in record.attempts if a.iteration > 0]
        uses = []
        if budget is not None:
            uses = [BudgetUse("attempts", totals.attempts, budget.iterations),
                    BudgetUse("time", elapsed, budget.time)]
            if budget.tokens is not None:
                uses.append(BudgetUse("tokens", totals.tokens, budget.tokens))
            if budget.usd is not None:
                uses.append(BudgetUse("usd", totals.cost_usd, budget.usd))
        best, baseline = totals.best, totals.baseline
        return cls(
            run_id=meta.run_id, goal=meta.goal_name, state=state,
            reason=str(record.stop.get("reason", "")) if record.stop else "",
            resumable=not record.finished and not running, attempts=len(tried),
            verdicts={v: n for v, n in totals.counts.items() if n},
            best=best.result_text(meta.metric_goal) if best else "-",
            best_attempt=best.iteration if best else None,
            baseline=baseline.result_text(meta.metric_goal) if baseline else "-",
            spent=totals.spent() if tried else NOT_TRACKED, budget=uses,
            in_progress=in_progress(record, now) if running else [],
            findings=findings(record), branch=meta.branch, repo=meta.repo, record=str(record.run_dir),
        )

    def as_json(self, last: list[AttemptRecord], metric_goal: bool) -> dict[str, Any]:
        data = asdict(self)
        data["budget"] = {u.name: {"used": u.used, "limit": u.limit, "left": u.left} for u in self.budget}
        data["verdicts"] = {v: self.verdicts.get(v, 0) for v in VERDICTS}
        data["spent"] = None if self.spent == NOT_TRACKED else self.spent
        data["last_attempts"] = [
            {"iteration": a.iteration, "verdict": a.verdict, "result": a.result_text(metric_goal), "metric": a.metric,
             "seconds": a.seconds, "cost_usd": a.cost_usd, "description": a.description, "reason": a.reason}
            for a in last
        ]
        return data


def in_progress(record: RunRecord, now: datetime) -> list[InProgress]:
    """The attempts started since the run last (re)started and not yet recorded, each at its latest phase."""
    recorded = {a.iteration for a in record.attempts}
    started: dict[int, datetime] = {}
    latest: dict[int, dict[str, Any]] = {}
    for event in record.events:
        name = event.get("event")
        if name in ("run_started", "run_resumed"):
            started, latest = {}, {}
        elif name == "phase" and isinstance(event.get("iteration"), int):
            iteration = event["iteration"]
            started.setdefault(iteration, _when(event) or now)
            latest[event.get("slot", 0)] = event
    return [
        InProgress(e["iteration"], slot, str(e.get("phase", "")), max((now - started[e["iteration"]]).total_seconds(), 0))
        for slot, e in sorted(latest.items()) if e["iteration"] not in recorded
    ]


def _when(event: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event.get("ts", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _since_last_row(record: RunRecord, now: datetime) -> float:
    """Seconds since the last attempt row was written (the clock of a live run goes on between rows)."""
    rows = [e for e in record.events if e.get("event") in ("attempt", "run_started", "run_resumed")]
    when = _when(rows[-1]) if rows else None
    return max((now - when).total_seconds(), 0.0) if when else 0.0
