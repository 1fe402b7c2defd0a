"""The loop: a baseline, then rounds of attempts until the target is met or a budget is spent.

A round is one attempt, or with `parallel: N` up to N attempts proposed and checked at once, each in its
own worktree (slot), from the same kept state and the same prompt. Each attempt: the proposer edits its
worktree, what it did is committed (every attempt gets its own ref) and judged (attempt.py says how; an
executor runs the slots). After the round the best candidate judged `keep` is kept; the others that would
also have been kept are `discard`, beaten. Then the ledger rows are written in iteration order, and only
then does the branch move and every worktree go back to the kept commit. Kept states are also measured by
the holdout check, which the proposer never sees.

Budgets stay hard with concurrency: a round never starts more attempts than the iteration budget (or the
patience) has left, and no round starts once a budget is spent. Proposers that pay per call see the spend
as of the round's start (see ProposalRequest.spend).

Ends with exit 0 (target met), 1 (a budget or the patience spent) or 130 (interrupted, resumable). Failures
of a proposal or of the check are verdicts, not exceptions; only an InfrastructureError or a GoalError
ends a run early.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from goalloop import faults, verdict
from goalloop.attempt import Attempter, Bench, Candidate, Slot, baseline_judgement, told
from goalloop.check import child_pid_files
from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.executor import Executor, ThreadExecutor, interrupts_held
from goalloop.executors import CheckRunner
from goalloop.goal import Goal, format_duration
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.prompt import build_prompt
from goalloop.proposers.base import NO_PROMPT, ProposalRequest, Proposer, Spend, reads_prompt
from goalloop.resume import write_round
from goalloop.sandbox import Bubblewrap
from goalloop.workspace import PathRules, Workspace

TARGET_MET, BUDGET_SPENT, INTERRUPTED = 0, 1, 130
PINS_FILE = "pins.json"


@dataclass
class RunOutcome:
    exit_code: int
    reason: str
    baseline: AttemptRecord | None
    best: AttemptRecord | None
    spend: Spend
    notes: list[str] = field(default_factory=list)
    """Findings for the summary: the check's noise, a stall, the confirmation of the best result."""
    confirmed: float | None = None
    """The best state's metric measured again at the end (the median of keep.repeats fresh runs)."""


class Loop:
    def __init__(
        self,
        goal: Goal,
        workspaces: list[Workspace],
        ledger: Ledger,
        proposer: Proposer,
        rules: PathRules,
        check_env: dict[str, str],
        *,
        history: list[AttemptRecord] | None = None,
        last_output: str = "",
        on_record: Callable[[AttemptRecord], None] | None = None,
        deadline: datetime | None = None,
        executor: Executor | None = None,
        sandbox: Bubblewrap | None = None,
        checks: CheckRunner | None = None,
    ) -> None:
        self.goal, self.ledger, self.proposer, self.rules = goal, ledger, proposer, rules
        self.slots = [Slot(index, space) for index, space in enumerate(workspaces)]
        self.workspace = workspaces[0]
        self.bench = Bench(goal, ledger, check_env, sandbox, checks)
        self.attempter = Attempter(goal, ledger, proposer, rules, self.bench)
        self.executor = executor or ThreadExecutor(lambda: child_pid_files(ledger.run_dir))
        self.history = list(history or [])
        self.last_output = last_output
        self.on_record = on_record or (lambda record: None)
        self.notes: list[str] = []
        self.deadline = deadline
        self._pins = verdict.load_pins(ledger.run_dir / PINS_FILE)
        self._elapsed_before = max((r.elapsed for r in self.history), default=0.0)
        self._started = time.monotonic()
        self._in_flight: list[tuple[Slot, int]] = []
        self._largest_attempt = 0

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        try:
            if not self.history:
                self._baseline()
            if self._meets_target(self.kept):
                return self._stop(TARGET_MET, "target met by the baseline" if self.kept.iteration == 0 else "target met")
            while True:
                reason = self.spend().exhausted(self.goal.budget) or self._out_of_patience() or self._too_late()
                if reason:
                    return self._stop(BUDGET_SPENT, reason)
                self._require_space()
                kept = self._round(self.history[-1].iteration + 1, self._round_size())
                if kept is not None and self._meets_target(kept):
                    return self._stop(TARGET_MET, f"target met by attempt {kept.iteration}")
        except BudgetExhausted as exc:
            return self._stop(BUDGET_SPENT, exc.reason)
        except (faults.MachineFault, OSError) as exc:
            fault = self._set_aside(exc)
            if fault is None:
                raise
            raise fault from None
        except KeyboardInterrupt:
            with interrupts_held():
                self._save_interrupted()
                return self._stop(INTERRUPTED, f"interrupted; resume with `goalloop resume {self.workspace.run_id}`")

    def _save_interrupted(self) -> None:
        """Commit what the round's unrecorded proposals left, then put every worktree at the kept commit."""
        kept_commit = self.kept.kept_commit if self.history else self.workspace.branch_head()
        recorded = {r.iteration for r in self.history}
        for slot, iteration in self._in_flight:
            if iteration not in recorded:
                slot.workspace.save_unrecorded(iteration, kept_commit, "interrupted while proposing")
        for slot in self.slots:
            slot.workspace.reset_to(kept_commit)

    @property
    def kept(self) -> AttemptRecord:
        return next(r for r in reversed(self.history) if r.verdict in ("baseline", "keep"))

    def spend(self) -> Spend:
        return Spend.of(self.history, self._elapsed())

    def _round_size(self) -> int:
        """As many slots as the iteration budget and the patience have attempts left (at least one)."""
        size = len(self.slots)
        budget = self.goal.budget
        if budget.iterations is not None:
            size = min(size, budget.iterations - self.spend().iterations)
        if budget.patience is not None:
            size = min(size, budget.patience - (self.history[-1].iteration - self.kept.iteration))
        return max(size, 1)

    def _out_of_patience(self) -> str | None:
        patience = self.goal.budget.patience
        since_keep = self.history[-1].iteration - self.kept.iteration
        if patience is not None and since_keep >= patience:
            self._stall_notes()  # a stall that patience ends is still recorded
            return f"no keep in the last {since_keep} attempts (budget.patience: {patience})"
        return None

    def _too_late(self) -> str | None:
        """Why no attempt may start before the deadline: its check might not finish in time."""
        if self.deadline is None:
            return None
        left = (self.deadline - datetime.now(self.deadline.tzinfo)).total_seconds()
        if left < self.goal.check.timeout:
            return (f"deadline {self.deadline:%Y-%m-%d %H:%M}: a check started now might not finish before it "
                    f"(check.timeout {format_duration(self.goal.check.timeout)})")
        return None

    def _require_space(self) -> None:
        """DiskFull unless every disk the next round writes to has room for an attempt as big as the biggest yet."""
        last = self.history[-1].iteration if self.history else 0
        self._largest_attempt = max(self._largest_attempt, faults.folder_bytes(self.ledger.attempt_dir(last)))
        places = [self.ledger.run_dir, self.workspace.repo_root, *(slot.workspace.worktree for slot in self.slots)]
        faults.require_space(places, faults.MIN_FREE_BYTES + self._largest_attempt, self.workspace.run_id)

    def _set_aside(self, exc: BaseException) -> faults.MachineFault | None:
        """For a fault of the machine (a full disk, a folder gone read-only): set the attempts under way aside,
        unjudged, so a resume proposes them again, and note why the run stopped. None for any other error."""
        fault = exc if isinstance(exc, faults.MachineFault) else faults.named(exc, self.workspace.run_id)  # type: ignore[arg-type]
        if fault is None:
            return None
        kept_commit = self.kept.kept_commit if self.history else self.workspace.branch_head()
        for slot, iteration in self._in_flight:
            with suppress(InfrastructureError, OSError):
                slot.workspace.set_aside(iteration, kept_commit)
            with suppress(OSError):
                folder = self.ledger.attempt_dir(iteration)
                folder.rename(folder.with_name(f"{folder.name}.unjudged-{int(time.time())}"))
        with suppress(OSError):
            self.ledger.event("run_stopped", exit_code=3, state="stopped by a fault", reason=fault.message)
        return fault

    def _read_at_base(self, path: str) -> str | None:
        return self.workspace.read_at(self.history[0].commit or "", path) if self.history else None

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._started

    # -- steps --------------------------------------------------------------------------------------------
    def _baseline(self) -> None:
        base = self.workspace.branch_head()
        slot = self.slots[0]
        self._pins = verdict.pin_protected_files(self.workspace.worktree, self.rules)
        verdict.save_pins(self.ledger.run_dir / PINS_FILE, self._pins)
        result = self.bench.check(slot, 0)
        self.last_output = told(result)
        reason, figures = baseline_judgement(self.goal, result, self.attempter.guards)
        if result.slow_pattern:
            raise self.goal.error(("check", "metric"), f"the baseline's check {result.problem}",
                                  fix=r"write a pattern that matches the metric's line directly, such as '^score:\s*(\S+)'")
        samples = self.bench.repeat(slot, 0, result) if result.metric is not None else []
        metric = verdict.median(samples) if len(samples) > 1 else result.metric
        if len(samples) > 1:
            spread = verdict.spread(samples)
            self.ledger.event("noise", samples=samples, spread=spread)
            self.notes.append(f"noise: the baseline measured {len(samples)} times spread over {spread:.6g}")
        holdout = self.bench.holdout(slot, 0)
        self.workspace.reset_to(base)
        self._record(AttemptRecord(
            iteration=0, verdict="baseline", description="baseline", commit=base, metric=metric,
            passed=result.passed, seconds=result.seconds, reason=reason, kept_commit=base,
            samples=samples if len(samples) > 1 else [], holdout=_median(holdout), figures=figures,
            holdout_samples=holdout if len(holdout) > 1 else [],
        ))

    def _round(self, first: int, size: int) -> AttemptRecord | None:
        """Attempts `first` .. `first + size - 1`, one a slot, at once; returns the kept one's record, if any."""
        kept = self.kept
        notes = self._stall_notes()
        prompt = build_prompt(self.goal, self.rules, self.workspace.worktree, self._read_at_base, self.history,
                              self.last_output, notes) if reads_prompt(self.proposer) else NO_PROMPT
        spend = self.spend()
        self._in_flight = [(self.slots[n], first + n) for n in range(size)]
        if len(self.slots) > 1:
            write_round(self.ledger.run_dir, {slot.index: iteration for slot, iteration in self._in_flight})
        pins = self._pins or {}

        def task(slot: Slot, iteration: int) -> Callable[[], Candidate]:
            request = ProposalRequest(
                iteration=iteration, worktree=slot.workspace.worktree, prompt=prompt,
                attempt_dir=self.ledger.attempt_dir(iteration), run_dir=self.ledger.run_dir, rules=self.rules,
                budget=self.goal.budget, spend=spend, history=tuple(self.history), env=slot.workspace.tool_env(),
                slot=slot.index, round_size=size, sandbox=self.bench.proposer_sandbox(slot),
            )
            return lambda: self.attempter.attempt(slot, request, kept, pins)

        candidates = self.executor.run([task(slot, iteration) for slot, iteration in self._in_flight])
        winner = self._best(candidates)
        records = [self._record_of(c, kept, winner) for c in candidates]
        for record in records:
            self._record(record)
        self.last_output = candidates[-1].told
        if winner is not None and winner.commit.sha is not None:
            winner.slot.workspace.keep(winner.commit.sha, kept.kept_commit)
        new_kept = self.kept.kept_commit
        for slot in self.slots:
            if winner is None or slot is not winner.slot:
                slot.workspace.reset_to(new_kept)
        self._in_flight = []
        for record in records:
            self.proposer.observe(record)
        stopped = next((c.stopped for c in candidates if c.stopped), None)
        if stopped:
            raise stopped
        return next((r for r in records if r.verdict == "keep"), None)

    def _best(self, candidates: list[Candidate]) -> Candidate | None:
        """The candidate to keep: the best metric (the earliest on a tie), or the first that passes."""
        judged = [c for c in candidates if c.judged_keep]
        if not judged or not self.goal.is_metric_goal:
            return judged[0] if judged else None
        sign = 1.0 if self.goal.target.direction == "maximize" else -1.0
        return max(judged, key=lambda c: (sign * (c.judgement.metric or 0.0), -c.iteration))

    def _record_of(self, candidate: Candidate, kept: AttemptRecord, winner: Candidate | None) -> AttemptRecord:
        judged, commit = candidate.judgement, candidate.commit
        verdict_name, reason = judged.verdict, judged.reason
        if candidate.judged_keep and candidate is not winner:
            assert winner is not None
            verdict_name, reason = "discard", f"beaten by attempt {winner.iteration} in the same round"
        if commit.removed_ignored:
            reason = f"{reason}; removed files git ignores: {', '.join(commit.removed_ignored[:5])}".lstrip("; ")
        keep = candidate is winner
        started = time.monotonic()
        holdout = self.bench.holdout(candidate.slot, candidate.iteration) if keep else []
        seconds = candidate.seconds + time.monotonic() - started
        after = winner.commit.sha if winner is not None and candidate.iteration >= winner.iteration else None
        return AttemptRecord(
            iteration=candidate.iteration, verdict=verdict_name, description=candidate.proposal.description
            or f"attempt {candidate.iteration}", commit=commit.sha, metric=judged.metric,
            passed=bool(judged.result and judged.result.passed),
            seconds=seconds, cost_usd=candidate.proposal.cost_usd, tokens=candidate.proposal.tokens,
            added_lines=commit.added_lines, reason=reason, kept_commit=after or kept.kept_commit,
            samples=judged.samples, holdout=_median(holdout), holdout_samples=holdout if len(holdout) > 1 else [],
            figures=judged.figures if keep else {}, warning=verdict.holdout_warning(
                self.goal, kept.holdout_samples or ([kept.holdout] if kept.holdout is not None else []), holdout,
                self.history) if keep else "",
        )

    # -- verdict rules --------------------------------------------------------------------------------------
    def _meets_target(self, record: AttemptRecord) -> bool:
        if not self.goal.is_metric_goal:
            return record.passed
        target = self.goal.target.value
        if target is None or record.metric is None:
            return False
        return record.metric >= target if self.goal.target.direction == "maximize" else record.metric <= target

    def _stall_notes(self) -> list[str]:
        """A note for the prompt when the last attempts all failed the same way (normalised)."""
        times = self.goal.budget.patience or 3
        recent = [r for r in self.history if r.iteration > self.kept.iteration][-times:]
        failed = [r for r in recent if r.verdict in ("crash", "rejected") or
                  (r.verdict == "discard" and not self.goal.is_metric_goal)]
        line = verdict.repeated_failure([verdict.normalise_failure(r.reason) for r in failed], times)
        if line is None or len(failed) < len(recent):
            return []
        self.ledger.event("stall", line=line, times=times)
        if f"stalled: {line}" not in self.notes:
            self.notes.append(f"stalled: {line}")
        return [f"# Stalled\nThe last {times} attempts failed the same way:\n    {line}\n"
                "Do not repeat it: change approach."]

    # -- the record ---------------------------------------------------------------------------------------
    def _record(self, record: AttemptRecord) -> None:
        record.elapsed = self._elapsed()
        self.ledger.record(record)
        self.history.append(record)
        self.on_record(record)

    def _stop(self, exit_code: int, reason: str) -> RunOutcome:
        scored = [r for r in self.history if r.verdict in ("baseline", "keep")]
        best = scored[-1] if scored else None
        confirmed = None
        if exit_code != INTERRUPTED and best is not None and verdict.confirms(self.goal) and self.goal.is_metric_goal:
            confirmed = self._confirm(best)
        outcome = RunOutcome(exit_code, reason, self.history[0] if self.history else None, best, self.spend(),
                             self.notes, confirmed)
        state = {TARGET_MET: "target met", BUDGET_SPENT: "budget spent", INTERRUPTED: "interrupted"}[exit_code]
        self.ledger.event(
            "run_stopped", exit_code=exit_code, state=state, reason=reason, elapsed=outcome.spend.seconds,
            best_commit=best.kept_commit if best else None, best_metric=best.metric if best else None,
        )
        return outcome

    def _confirm(self, best: AttemptRecord) -> float | None:
        """Measure the best kept state afresh, keep.repeats times, so the best reported is not the luckiest
        measurement; note how far it drifted from what was recorded."""
        repeats = self.goal.keep.repeats
        results = [self.bench.check(self.slots[0], best.iteration, repeat=repeats + n) for n in range(1, repeats + 1)]
        self.workspace.reset_to(best.kept_commit)
        samples = [r.metric for r in results if r.metric is not None]
        if len(samples) < len(results) or best.metric is None:
            problem = next((r.problem for r in results if r.metric is None), None)
            self.ledger.event("confirm", metric=None, drift=None, problem=problem)
            self.notes.append(f"confirm: the best state gave no result when measured again ({problem})")
            return None
        metric = verdict.median(samples)
        drift = metric - best.metric
        self.ledger.event("confirm", metric=metric, drift=drift, samples=samples)
        self.notes.append(f"confirm: the best state measured again {len(samples)} times gives {metric:.6g} "
                          f"(drift {drift:+.6g}); that is the best to believe")
        return metric


def _median(samples: list[float]) -> float | None:
    return verdict.median(samples) if samples else None
