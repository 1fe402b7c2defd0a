"""What a report says, derived from the ledger alone: the totals, the best against the baseline, the findings
of the trust rules, and how each number reads. Both formats (markdown.py, html.py) and the chart read these.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

from goalloop.git_runner import git_environment
from goalloop.ledger import SET_ASIDE_EVENT, AttemptRecord, RunRecord
from goalloop.tally import NOT_TRACKED, event_finding, set_aside_line, spent_text

CHECK_LOG = "check.stdout.log"
VERDICTS = ("keep", "discard", "crash", "rejected")


@dataclass(frozen=True)
class Totals:
    attempts: int
    counts: dict[str, int]
    cost_usd: float
    unknown_cost: int
    """Attempts whose cost is not known (a run killed while proposing)."""
    tokens: int
    elapsed: float
    baseline: AttemptRecord | None
    best: AttemptRecord | None

    @classmethod
    def of(cls, record: RunRecord) -> Totals:
        tried = [a for a in record.attempts if a.iteration > 0]
        unpaid = _unpaid_set_aside(record)
        return cls(
            attempts=len(tried),
            counts={v: sum(1 for a in tried if a.verdict == v) for v in VERDICTS},
            cost_usd=record.cost_usd + sum(e.get("cost_usd") or 0.0 for e in unpaid),
            unknown_cost=sum(1 for a in tried if a.cost_usd is None),
            tokens=record.tokens + sum(e.get("tokens") or 0 for e in unpaid),
            elapsed=record.elapsed,
            baseline=record.baseline,
            best=record.kept,
        )

    @property
    def keep_rate(self) -> str:
        return f"{self.counts['keep'] / self.attempts:.0%}" if self.attempts else "-"

    def verdicts(self, sep: str = ", ") -> str:
        return sep.join(f"{n} {v}" for v, n in self.counts.items() if n) or "none yet"

    @property
    def none_reported(self) -> bool:
        """No attempt reported what it cost (an agent CLI that keeps its bill to itself)."""
        return bool(self.attempts) and self.unknown_cost == self.attempts

    def spent(self) -> str:
        """What the proposers spent: `$0.42, 12,000 tokens`; `not tracked` when none reported a cost."""
        return spent_text(self.attempts, self.unknown_cost, self.cost_usd, self.tokens)


def _attempts(record: RunRecord) -> list[AttemptRecord]:
    return sorted(record.attempts, key=lambda a: a.iteration)


def _gain(record: RunRecord, totals: Totals) -> str:
    """The best against the baseline: `+4 (+400%)`; empty when there is nothing to compare."""
    base, best = totals.baseline, totals.best
    if not (base and best and record.meta.metric_goal) or base.metric is None or best.metric is None:
        return ""
    delta = best.metric - base.metric
    percent = 100 * delta / abs(base.metric) if base.metric else None
    relative = "" if percent is None else f" ({percent:+.{0 if abs(percent) >= 10 else 1}f}%)"
    return f"{delta:+.6g}{relative}"


def _best_line(record: RunRecord, totals: Totals) -> str:
    base, best = totals.baseline, totals.best
    if not (base and best):
        return "-"
    metric_goal = record.meta.metric_goal
    where = f"attempt {best.iteration}" if best.iteration else "the baseline (nothing kept)"
    gain = _gain(record, totals)
    return f"{best.result_text(metric_goal)} at {where}; baseline {base.result_text(metric_goal)}" + (
        f", {gain}" if gain else ""
    )


def _cost(value: float | None) -> str:
    return NOT_TRACKED if value is None else f"${value:.3f}" if value else "-"


def _reason(record: RunRecord) -> str:
    return str(record.stop.get("reason", "")) if record.stop else "no stop was recorded: still running, or killed"


def _look_commands(record: RunRecord) -> list[tuple[str, str]]:
    meta = record.meta
    repo, base = shlex.quote(meta.repo), meta.base_commit[:12]
    return [
        ("the whole change kept", f"git -C {repo} diff {base} {meta.branch}"),
        ("the kept commits", f"git -C {repo} log --oneline {base}..{meta.branch}"),
        ("any attempt, kept or not", f"git -C {repo} show refs/goalloop/{meta.run_id}/<n>"),
    ]


def set_aside_events(record: RunRecord) -> list[dict]:
    return [e for e in record.events if e.get("event") == SET_ASIDE_EVENT and isinstance(e.get("iteration"), int)]


def _unpaid_set_aside(record: RunRecord) -> list[dict]:
    """Set-aside attempts whose spend no row carries yet: each is charged to the row of the attempt proposed
    in its place, and until that row exists (or if the run stopped first) it is counted here."""
    recorded = {a.iteration for a in record.attempts}
    return [e for e in set_aside_events(record) if e["iteration"] not in recorded]


def _stopped_mid_attempt(record: RunRecord) -> list[int]:
    """Attempts under way when the run stopped cleanly (Ctrl-C, SIGTERM, SIGHUP, a fault) that no row or
    resume has accounted for yet: the next resume proposes them again."""
    if record.stop is None or record.finished:
        return []
    under_way: set[int] = set()
    for event in record.events:
        name = event.get("event")
        if name in ("run_started", "run_resumed"):
            under_way = set()
        elif name == "phase" and isinstance(event.get("iteration"), int):
            under_way.add(event["iteration"])
    recorded = {a.iteration for a in record.attempts}
    return sorted(n for n in under_way if n not in recorded and n > 0)


def findings(record: RunRecord) -> list[str]:
    """What the trust rules noticed: the check's noise, stalls, drift on confirmation, holdout warnings; and
    attempts stopped before their verdict, which are proposed again on resume (never counted as lost)."""
    found: list[str] = [set_aside_line(e) for e in set_aside_events(record)]
    found += [f"interrupted: attempt {n} was under way when the run stopped; `goalloop resume` proposes it again "
              "(what it had changed is kept at a ref)" for n in _stopped_mid_attempt(record)]
    base = record.baseline
    if base is not None and base.reason:
        found.append(f"baseline: {base.reason}")
    if record.meta.metric_goal and base is not None and base.metric is not None and not base.samples:
        found.append("gains are single measurements (keep.repeats: 1): a lucky run of the check counts as a gain")
    for event in record.events:
        line = event_finding(event)
        if line is not None and (event.get("event") != "stall" or line not in found):
            found.append(line)
    found += [f"warning: attempt {a.iteration}: {a.warning}" for a in _attempts(record) if a.warning]
    return found


def _has_samples(record: RunRecord) -> bool:
    return any(len(a.samples) > 1 for a in record.attempts)


def _measured(attempt: AttemptRecord, metric_goal: bool) -> str:
    """The metric, and when it was measured several times how many and their range: `2 (n=3, 1.99–2.01)`."""
    shown = attempt.result_text(metric_goal)
    if len(attempt.samples) > 1:
        shown += f" (n={len(attempt.samples)}, {min(attempt.samples):.6g}–{max(attempt.samples):.6g})"
    return shown


def _has_holdout(record: RunRecord) -> bool:
    return any(a.holdout is not None for a in record.attempts)


def _holdout_cell(attempt: AttemptRecord) -> str:
    return "" if attempt.holdout is None else f"{attempt.holdout:.6g}"


def net_diff(record: RunRecord) -> tuple[str, str] | None:
    """`git diff --stat` and the diff from the base to the best kept state; None when git cannot say."""
    best = record.kept
    if best is None or not best.kept_commit:
        return None
    base, repo = record.meta.base_commit, record.meta.repo
    try:
        env = git_environment(os.environ)  # not a git hook's repository
        stat = subprocess.run(["git", "-C", repo, "diff", "--stat", base, best.kept_commit], capture_output=True,
                              text=True, timeout=60, errors="replace", env=env)
        patch = subprocess.run(["git", "-C", repo, "diff", base, best.kept_commit], capture_output=True, text=True,
                               timeout=60, errors="replace", env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if stat.returncode or patch.returncode:
        return None
    return stat.stdout.rstrip(), patch.stdout
