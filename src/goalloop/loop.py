"""The loop: a baseline, then rounds of attempts until the target is met or a budget is spent.

A round is one attempt, or with `parallel: N` up to N attempts proposed and checked at once, each in its
own worktree (slot), from the same kept state and the same prompt. Each attempt: the proposer edits its
worktree, what it did is committed (every attempt gets its own ref) and judged (attempt.py says how; an
executor runs the slots). After the round the best candidate judged `keep` is kept; the others that would
also have been kept are `discard`, beaten. Then the ledger rows are written in iteration order, and only
then does the branch move and every worktree go back to the kept commit. Kept states are also measured by
the holdout check, which the proposer never sees.

With a tree strategy (`search:`, strategy.py) each slot first picks a parent from the frontier of kept
states (frontier.py) and its worktree is moved to that parent's commit; a child that beats its own parent
is kept and joins the frontier (several may in one round), and the branch moves only to a new best.

Budgets stay hard with concurrency: a round never starts more attempts than the iteration budget (or the
patience) has left, and no round starts once a budget is spent. Proposers that pay per call see the spend
as of the round's start (see ProposalRequest.spend).

Ends with exit 0 (target met), 1 (a budget or the patience spent) or 130 (interrupted, resumable). Failures
of a proposal or of the check are verdicts, not exceptions; only an InfrastructureError or a GoalError
ends a run early.
"""

from __future__ import annotations

import random
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable

from goalloop import faults, verdict
from goalloop.attempt import Attempter, Bench, Candidate, Slot, baseline_judgement, told
from goalloop.check import child_pid_files
from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.executor import Executor, ThreadExecutor, interrupts_held
from goalloop.executors import CheckRunner
from goalloop.frontier import Frontier, Node
from goalloop.goal import Goal, format_duration
from goalloop.ledger import TREE_COLUMNS, AttemptRecord, History, Ledger
from goalloop.path_rules import PathRules
from goalloop.prompt import build_prompt, tree_notes
from goalloop.proposers.base import NO_PROMPT, Prompt, ProposalRequest, Proposer, Spend, reads_prompt
from goalloop.resume import set_aside, write_round
from goalloop.sandbox import Bubblewrap
from goalloop.strategy import STRATEGIES, pick_parents
from goalloop.workspace import Workspace

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
        self._parents: dict[int, Node] = {}
        """Each slot's parent in the round under way."""
        self._largest_attempt = 0
        self.tree = goal.search.tree
        self.frontier = Frontier.of(goal, self.history, greedy=not self.tree, patience=goal.search.node_patience)
        self._spent = Spend.of(self.history, 0.0)

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
                slot.workspace.save_unrecorded(iteration, self._parent_commit(slot, kept_commit),
                                               "interrupted while proposing")
        for slot in self.slots:
            slot.workspace.reset_to(kept_commit)

    @property
    def kept(self) -> AttemptRecord:
        """The state the branch points at: the latest kept (greedy) or the best node (a tree)."""
        return self.frontier.head.record

    def spend(self) -> Spend:
        return replace(self._spent, seconds=self._elapsed())

    def _parent_commit(self, slot: Slot, kept_commit: str) -> str:
        parent = self._parents.get(slot.index)
        return parent.commit if self.tree and parent is not None else kept_commit

    def _round_size(self) -> int:
        """As many slots as the iteration budget and the patience have attempts left (at least one)."""
        size = len(self.slots)
        budget = self.goal.budget
        if budget.iterations is not None:
            size = min(size, budget.iterations - self.spend().iterations)
        if budget.patience is not None:
            size = min(size, budget.patience - self.frontier.since_keep)
        return max(size, 1)

    def _out_of_patience(self) -> str | None:
        patience = self.goal.budget.patience
        since_keep = self.frontier.since_keep
        if patience is not None and since_keep >= patience:
            self._stall_notes()  # a stall that patience ends is still recorded
            return f"no keep in the last {since_keep} attempts (budget.patience: {patience})"
        if self.tree and not self.frontier.open:
            n = self.goal.search.node_patience
            return (f"every kept state is closed: each had {n} attempt{'s' if n != 1 else ''} in a row from it "
                    f"without a keep (search.patience: {n})")
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
            parent, sha, committed = self._parent_commit(slot, kept_commit), None, False
            with suppress(InfrastructureError, OSError):
                sha, committed = slot.workspace.commit_unjudged(iteration, parent), True
            with suppress(InfrastructureError, OSError):
                set_aside(slot.workspace, self.ledger, iteration, sha, "stopped by a fault of the machine")
            if committed:  # else the work is only in the worktree: left there for the resume to commit
                with suppress(InfrastructureError, OSError):
                    slot.workspace.reset_to(parent)
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
        if self.tree:
            self.ledger.use_columns(TREE_COLUMNS)
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
        """Attempts `first` .. `first + size - 1`, one a slot, at once; returns the new kept state's record, if any."""
        kept = self.kept
        parents = self._pick_parents(first, size)
        spend = self.spend()
        self._in_flight = [(self.slots[n], first + n) for n in range(size)]
        self._parents = {slot.index: parent for (slot, _), parent in zip(self._in_flight, parents)}
        if len(self.slots) > 1 or self.tree:
            write_round(self.ledger.run_dir, {slot.index: iteration for slot, iteration in self._in_flight},
                        {slot.index: (p.iteration, p.commit) for slot, p in zip(self.slots, parents)} if self.tree else None)
        if self.tree:
            for slot, parent in zip(self.slots, parents):
                slot.workspace.reset_to(parent.commit)
        prompts = self._prompts(parents)
        pins = self._pins or {}

        def task(slot: Slot, iteration: int, parent: Node) -> Callable[[], Candidate]:
            request = ProposalRequest(
                iteration=iteration, worktree=slot.workspace.worktree, prompt=prompts[parent.iteration],
                attempt_dir=self.ledger.attempt_dir(iteration), run_dir=self.ledger.run_dir, rules=self.rules,
                budget=self.goal.budget, spend=spend, history=History(self.history), env=slot.workspace.tool_env(),
                slot=slot.index, round_size=size, sandbox=self.bench.proposer_sandbox(slot),
                parent=parent.iteration, parent_commit=parent.commit if self.tree else kept.kept_commit,
            )
            return lambda: self.attempter.attempt(slot, request, parent.record, pins)

        candidates = self.executor.run([task(slot, iteration, parent) for (slot, iteration), parent
                                        in zip(self._in_flight, parents)])
        winner = self._best(candidates)
        head_after = winner.commit.sha if winner is not None and winner.commit.sha else kept.kept_commit
        records = [self._record_of(c, self._parents[c.slot.index],
                                   c.judged_keep if self.tree else c is winner,
                                   winner if not self.tree else None,
                                   head_after if winner is not None and c.iteration >= winner.iteration else kept.kept_commit)
                   for c in candidates]
        for record in records:
            self._record(record)
        self.last_output = candidates[-1].told
        if winner is not None and winner.commit.sha is not None:
            self.ledger.sync()  # the branch never moves past a row a power cut could take back
            winner.slot.workspace.keep(winner.commit.sha, kept.kept_commit)
        if not self.tree:
            for slot in self.slots:
                if winner is None or slot is not winner.slot:
                    slot.workspace.reset_to(self.kept.kept_commit)
        self._in_flight = []
        for record in records:
            self.proposer.observe(record)
        stopped = next((c.stopped for c in candidates if c.stopped), None)
        if stopped:
            raise stopped
        if self.tree:
            return self.kept if winner is not None else None
        return next((r for r in records if r.verdict == "keep"), None)

    def _pick_parents(self, first: int, size: int) -> list[Node]:
        """Each slot's parent: the kept state (greedy), or picks from the open nodes of the tree; with a
        seed, the picks of a round depend only on the seed and the round's first attempt, resumes included."""
        if not self.tree:
            return [self.frontier.head] * size
        seed = self.goal.search.seed
        rng = random.Random(f"{seed}:{first}") if seed is not None else random.Random()
        strategy = STRATEGIES[self.goal.search.strategy]
        return pick_parents(strategy, self.goal.search.params, list(self.frontier.open.values()), size, rng)  # type: ignore[return-value]

    def _prompts(self, parents: list[Node]) -> dict[int, Prompt]:
        """One prompt per distinct parent, built in the worktree of the first slot that starts from it."""
        prompts: dict[int, Prompt] = {}
        for slot, parent in zip(self.slots, parents):
            if parent.iteration in prompts:
                continue
            notes = self._stall_notes(parent if self.tree else None)
            if not reads_prompt(self.proposer):
                prompts[parent.iteration] = NO_PROMPT
                continue
            if self.tree:
                notes = tree_notes(self.goal, parent, self.frontier.head) + notes
            prompts[parent.iteration] = build_prompt(
                self.goal, self.rules, slot.workspace.worktree if self.tree else self.workspace.worktree,
                self._read_at_base, self.history, self.last_output, notes, kept=self.frontier.kept_rows)
        return prompts

    def _best(self, candidates: list[Candidate]) -> Candidate | None:
        """The candidate the branch moves to: the best metric (the earliest on a tie), or the first that passes;
        with a tree strategy, only one better than the best so far."""
        judged = [c for c in candidates if c.judged_keep]
        if self.tree and self.goal.is_metric_goal:
            best = self.frontier.head.score
            judged = [c for c in judged if self.frontier.score_of(c.judgement.metric) > best]
        if not judged or not self.goal.is_metric_goal:
            return judged[0] if judged else None
        sign = 1.0 if self.goal.target.direction == "maximize" else -1.0
        return max(judged, key=lambda c: (sign * (c.judgement.metric or 0.0), -c.iteration))

    def _record_of(self, candidate: Candidate, parent: Node, keep: bool, beaten_by: Candidate | None,
                   head_after: str) -> AttemptRecord:
        judged, commit = candidate.judgement, candidate.commit
        verdict_name, reason = judged.verdict, judged.reason
        if candidate.judged_keep and not keep:
            assert beaten_by is not None
            verdict_name, reason = "discard", f"beaten by attempt {beaten_by.iteration} in the same round"
        if commit.removed_ignored:
            reason = f"{reason}; removed files git ignores: {', '.join(commit.removed_ignored[:5])}".lstrip("; ")
        started = time.monotonic()
        holdout = self.bench.holdout(candidate.slot, candidate.iteration) if keep else []
        seconds = candidate.seconds + time.monotonic() - started
        before = parent.record
        return AttemptRecord(
            iteration=candidate.iteration, verdict=verdict_name, description=candidate.proposal.description
            or f"attempt {candidate.iteration}", commit=commit.sha, metric=judged.metric,
            passed=bool(judged.result and judged.result.passed),
            seconds=seconds, cost_usd=candidate.proposal.cost_usd, tokens=candidate.proposal.tokens,
            added_lines=commit.added_lines, reason=reason, kept_commit=head_after,
            samples=judged.samples, holdout=_median(holdout), holdout_samples=holdout if len(holdout) > 1 else [],
            figures=judged.figures if keep else {}, warning=verdict.holdout_warning(
                self.goal, before.holdout_samples or ([before.holdout] if before.holdout is not None else []), holdout,
                self.history) if keep else "", parent=parent.iteration,
        )

    # -- verdict rules --------------------------------------------------------------------------------------
    def _meets_target(self, record: AttemptRecord) -> bool:
        if not self.goal.is_metric_goal:
            return record.passed
        target = self.goal.target.value
        if target is None or record.metric is None:
            return False
        return record.metric >= target if self.goal.target.direction == "maximize" else record.metric <= target

    def _stall_notes(self, parent: Node | None = None) -> list[str]:
        """A note for the prompt when the last attempts (from `parent`, or anywhere) all failed the same way."""
        line = self.frontier.stall(parent) or (self.frontier.stall() if parent is not None else None)
        if line is None:
            return []
        times = self.goal.budget.patience or 3
        self.ledger.event("stall", line=line, times=times)
        if f"stalled: {line}" not in self.notes:
            self.notes.append(f"stalled: {line}")
        return [f"# Stalled\nThe last {times} attempts failed the same way:\n    {line}\n"
                "Do not repeat it: change approach."]

    # -- the record ---------------------------------------------------------------------------------------
    def _record(self, record: AttemptRecord) -> None:
        record.elapsed = self._elapsed()
        self.ledger.record(record, wait=False)
        self.history.append(record)
        self.frontier.observe(record)
        self._spent.add(record)
        self.on_record(record)

    def _stop(self, exit_code: int, reason: str) -> RunOutcome:
        best = self.kept if self.history else None
        if self.tree and best is not None and exit_code != INTERRUPTED:
            for slot in self.slots:
                slot.workspace.reset_to(best.kept_commit)
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
