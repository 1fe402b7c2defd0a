"""The loop: a baseline, then attempts until the target is met or a budget is spent.

Each attempt: build the prompt, let the proposer edit the worktree, commit what it did (every attempt gets
its own ref), judge it, write the ledger row, and only then move the branch or reset the worktree.

Judging, in order: a failed proposal is a `crash`; an empty change, a change to a protected or
non-editable path, a pinned file that changed, or too many added lines is `rejected` without running the
check; otherwise the check runs. A candidate that looks better is measured `keep.repeats` times and kept
only if its median beats the kept median by more than `keep.min_delta`. Kept states are also measured by
the holdout check, which the proposer never sees.

Ends with exit 0 (target met), 1 (a budget or the patience spent) or 130 (interrupted, resumable). Failures
of a proposal or of the check are verdicts, not exceptions; only an InfrastructureError or a GoalError
ends a run early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from goalloop import verdict
from goalloop.check import CHILD_PID_FILE, COMMAND_NOT_RUNNABLE, CheckResult, read_capped, run_check
from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.goal import Goal, format_duration
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.prompt import build_prompt
from goalloop.proposers.base import Proposal, ProposalRequest, Proposer, Spend
from goalloop.resume import save_proposal
from goalloop.workspace import AttemptCommit, PathRules, Workspace

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


@dataclass
class Judgement:
    verdict: str
    reason: str = ""
    result: CheckResult | None = None
    metric: float | None = None
    samples: list[float] = field(default_factory=list)


class Loop:
    def __init__(
        self,
        goal: Goal,
        workspace: Workspace,
        ledger: Ledger,
        proposer: Proposer,
        rules: PathRules,
        check_env: dict[str, str],
        *,
        history: list[AttemptRecord] | None = None,
        last_output: str = "",
        on_record: Callable[[AttemptRecord], None] | None = None,
        deadline: datetime | None = None,
    ) -> None:
        self.goal, self.workspace, self.ledger, self.proposer, self.rules = goal, workspace, ledger, proposer, rules
        self.check_env = check_env
        self.history = list(history or [])
        self.last_output = last_output
        self.on_record = on_record or (lambda record: None)
        self.notes: list[str] = []
        self.deadline = deadline
        self._pins = verdict.load_pins(ledger.run_dir / PINS_FILE)
        self._elapsed_before = max((r.elapsed for r in self.history), default=0.0)
        self._started = time.monotonic()

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
                record = self._attempt(self.history[-1].iteration + 1)
                if record.verdict == "keep" and self._meets_target(record):
                    return self._stop(TARGET_MET, f"target met by attempt {record.iteration}")
        except BudgetExhausted as exc:
            return self._stop(BUDGET_SPENT, exc.reason)
        except KeyboardInterrupt:
            kept_commit = self.kept.kept_commit if self.history else self.workspace.branch_head()
            if self.history:
                self.workspace.save_unrecorded(self.history[-1].iteration + 1, kept_commit, "interrupted while proposing")
            self.workspace.reset_to(kept_commit)
            return self._stop(INTERRUPTED, "interrupted; resume with `goalloop resume " + self.workspace.run_id + "`")

    @property
    def kept(self) -> AttemptRecord:
        return next(r for r in reversed(self.history) if r.verdict in ("baseline", "keep"))

    def spend(self) -> Spend:
        return Spend(
            iterations=sum(1 for r in self.history if r.iteration > 0),
            seconds=self._elapsed(),
            tokens=sum(r.tokens for r in self.history),
            usd=sum(r.cost_usd or 0.0 for r in self.history),
        )

    def _out_of_patience(self) -> str | None:
        patience = self.goal.budget.patience
        since_keep = self.history[-1].iteration - self.kept.iteration
        if patience is not None and since_keep >= patience:
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

    def _read_at_base(self, path: str) -> str | None:
        return self.workspace.read_at(self.history[0].commit or "", path) if self.history else None

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._started

    # -- steps --------------------------------------------------------------------------------------------
    def _baseline(self) -> None:
        base = self.workspace.branch_head()
        self._pins = verdict.pin_protected_files(self.workspace.worktree, self.rules)
        verdict.save_pins(self.ledger.run_dir / PINS_FILE, self._pins)
        result = self._check(0)
        if result.process.exit_code in COMMAND_NOT_RUNNABLE:
            stderr = read_capped(result.process.stderr_path, 2000).strip().splitlines()
            raise self.goal.error(
                ("check", "run"),
                f"the check command could not run (exit {result.process.exit_code}): {stderr[-1] if stderr else ''}",
                fix="make sure the command exists in the repository or on PATH, and that scripts are executable",
            )
        samples = self._repeat(0, result) if result.metric is not None else []
        metric = verdict.median(samples) if len(samples) > 1 else result.metric
        if len(samples) > 1:
            spread = verdict.spread(samples)
            self.ledger.event("noise", samples=samples, spread=spread)
            self.notes.append(f"noise: the baseline measured {len(samples)} times spread over {spread:.6g}")
        holdout = self._holdout(0)
        self.workspace.reset_to(base)
        self._record(AttemptRecord(
            iteration=0, verdict="baseline", description="baseline", commit=base, metric=metric,
            passed=result.passed, seconds=result.seconds, reason=self._problem(result), kept_commit=base,
            samples=samples if len(samples) > 1 else [], holdout=holdout,
        ))

    def _attempt(self, iteration: int) -> AttemptRecord:
        started = time.monotonic()
        kept = self.kept
        attempt_dir = self.ledger.attempt_dir(iteration)
        prompt = build_prompt(self.goal, self.rules, self.workspace.worktree, self._read_at_base, self.history,
                              self.last_output, self._stall_notes())
        (attempt_dir / "prompt.md").write_text(prompt.text, encoding="utf-8")
        stopped: BudgetExhausted | InfrastructureError | None = None
        try:
            proposal = self.proposer.propose(ProposalRequest(
                iteration=iteration, worktree=self.workspace.worktree, prompt=prompt, attempt_dir=attempt_dir,
                run_dir=self.ledger.run_dir, rules=self.rules, budget=self.goal.budget, spend=self.spend(),
                history=tuple(self.history), env=self.workspace.tool_env(),
            ))
        except BudgetExhausted as exc:  # record what the cut-short attempt wrote and spent, then stop
            stopped = exc
            proposal = Proposal(failed=f"stopped: {exc.reason}", cost_usd=exc.cost_usd, tokens=exc.tokens)
        except InfrastructureError as exc:  # the same, then end the run resumably (exit 3)
            stopped = exc
            proposal = Proposal(failed=f"stopped: {exc.message}", cost_usd=exc.cost_usd, tokens=exc.tokens)
        save_proposal(attempt_dir, proposal)
        description = proposal.description or f"attempt {iteration}"
        commit = self.workspace.commit_attempt(
            iteration, kept.kept_commit, f"goalloop {self.workspace.run_id} #{iteration}: {description}"
        )
        if commit.patch:
            (attempt_dir / "diff.patch").write_text(commit.patch, encoding="utf-8")
        judged = self._judge(iteration, proposal, commit)
        reason = judged.reason
        if commit.removed_ignored:
            reason = f"{reason}; removed files git ignores: {', '.join(commit.removed_ignored[:5])}".lstrip("; ")
        keep = judged.verdict == "keep" and commit.sha is not None
        holdout = self._holdout(iteration) if keep else None
        record = AttemptRecord(
            iteration=iteration, verdict=judged.verdict, description=description, commit=commit.sha,
            metric=judged.metric, passed=bool(judged.result and judged.result.passed),
            seconds=time.monotonic() - started, cost_usd=proposal.cost_usd, tokens=proposal.tokens,
            added_lines=commit.added_lines, reason=reason, kept_commit=commit.sha if keep else kept.kept_commit,
            samples=judged.samples, holdout=holdout, warning=self._holdout_warning(kept, holdout) if keep else "",
        )
        self._record(record)
        if keep:
            self.workspace.keep(commit.sha, kept.kept_commit)
        else:
            self.workspace.reset_to(kept.kept_commit)
        self.proposer.observe(record)
        if stopped:
            raise stopped
        return record

    def _judge(self, iteration: int, proposal: Proposal, commit: AttemptCommit) -> Judgement:
        if proposal.failed:
            return self._refuse("crash", f"proposal failed: {proposal.failed}", "The proposal failed")
        if commit.sha is None:
            return self._refuse("rejected", "empty change", "The attempt changed nothing, so it was rejected")
        violations = self.rules.violations([c.path for c in commit.changed])
        violations += [f"{path} (protected)" for path in verdict.tampered_files(self.workspace.worktree, self._pins or {})
                       if f"{path} (protected)" not in violations]
        if violations:
            return self._refuse("rejected", "changed " + ", ".join(violations),
                                "The attempt was rejected without running the check")
        limit = self.goal.keep.max_added_lines
        if limit is not None and commit.added_lines > limit:
            return self._refuse("rejected", f"adds {commit.added_lines} lines (keep.max_added_lines: {limit})",
                                "The attempt was rejected without running the check: a simpler change is wanted")
        result = self._check(iteration)
        if result.crashed:
            return Judgement("crash", f"check {result.problem}", result)
        if not self._better(result):
            why = "not better than the kept state"
            if not self.goal.is_metric_goal:
                lines = result.process.excerpt(4000).strip().splitlines()
                why = f"check failed: {lines[-1].strip() if lines else 'exit code ' + str(result.process.exit_code)}"
            return Judgement("discard", why, result, result.metric)
        if not self.goal.is_metric_goal or self.goal.keep.repeats == 1:
            return Judgement("keep", "", result, result.metric)
        samples = self._repeat(iteration, result)
        if len(samples) < self.goal.keep.repeats:
            return Judgement("crash", f"check crashed when measured again ({len(samples)} of "
                             f"{self.goal.keep.repeats} runs)", result, None, samples)
        median = verdict.median(samples)
        if not verdict.beats(self.goal, median, self.kept.metric):
            return Judgement("discard", f"looked better once; the median of {len(samples)} runs is not",
                             result, median, samples)
        return Judgement("keep", "", result, median, samples)

    def _refuse(self, verdict_name: str, reason: str, told: str) -> Judgement:
        self.last_output = f"{told}: {reason}."
        return Judgement(verdict_name, reason)

    # -- measuring ------------------------------------------------------------------------------------------
    def _check(self, iteration: int, repeat: int = 1) -> CheckResult:
        env = dict(self.check_env, **self.workspace.tool_env(), GOALLOOP_ITERATION=str(iteration))
        prefix = "check" if repeat == 1 else f"check.{repeat}"
        log_dir = self.ledger.attempt_dir(iteration)
        result = run_check(
            self.goal.check.run, cwd=self.workspace.worktree, env=env, timeout=self.goal.check.timeout,
            log_dir=log_dir, metric_pattern=self.goal.check.metric, prefix=prefix,
            pid_file=self.ledger.run_dir / CHILD_PID_FILE,
            metric_file=log_dir / f"{prefix}.metric.json" if self.goal.check.metric_file else None,
        )
        if repeat == 1:
            self.last_output = result.process.excerpt()
            if result.crashed:
                self.last_output = f"The check {result.problem}.\n{self.last_output}"
        return result

    def _repeat(self, iteration: int, first: CheckResult) -> list[float]:
        """The first measurement and up to keep.repeats - 1 more; stops early at a crash."""
        samples = [first.metric] if first.metric is not None else []
        for repeat in range(2, self.goal.keep.repeats + 1):
            again = self._check(iteration, repeat)
            if again.metric is None:
                break
            samples.append(again.metric)
        return samples

    def _holdout(self, iteration: int) -> float | None:
        """The holdout check's metric for the worktree as it is; its output is never shown to the proposer."""
        holdout = self.goal.holdout
        if holdout is None:
            return None
        env = dict(self.check_env, **self.workspace.tool_env(), GOALLOOP_ITERATION=str(iteration))
        result = run_check(
            holdout.run, cwd=self.workspace.worktree, env=env, timeout=holdout.timeout,
            log_dir=self.ledger.attempt_dir(iteration), metric_pattern=holdout.metric, prefix="holdout",
            pid_file=self.ledger.run_dir / CHILD_PID_FILE,
        )
        return result.metric

    def _holdout_warning(self, kept: AttemptRecord, holdout: float | None) -> str:
        if self.goal.holdout is None or kept.holdout is None:
            return ""
        if holdout is None:
            return "holdout check gave no result on this kept state"
        worse = holdout < kept.holdout if self.goal.target.direction == "maximize" else holdout > kept.holdout
        return f"holdout got worse ({kept.holdout:.6g} -> {holdout:.6g}): overfitting the visible check?" if worse else ""

    # -- verdict rules --------------------------------------------------------------------------------------
    def _better(self, result: CheckResult) -> bool:
        kept = self.kept
        if not self.goal.is_metric_goal:
            return result.passed and not kept.passed
        return result.metric is not None and verdict.beats(self.goal, result.metric, kept.metric)

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

    @staticmethod
    def _problem(result: CheckResult) -> str:
        return f"check {result.problem}" if result.problem else ""

    # -- the record ---------------------------------------------------------------------------------------
    def _record(self, record: AttemptRecord) -> None:
        record.elapsed = self._elapsed()
        self.ledger.record(record)
        self.history.append(record)
        self.on_record(record)

    def _stop(self, exit_code: int, reason: str) -> RunOutcome:
        scored = [r for r in self.history if r.verdict in ("baseline", "keep")]
        best = scored[-1] if scored else None
        if exit_code != INTERRUPTED and best is not None and self.goal.keep.confirm and self.goal.is_metric_goal:
            self._confirm(best)
        outcome = RunOutcome(exit_code, reason, self.history[0] if self.history else None, best, self.spend(),
                             self.notes)
        state = {TARGET_MET: "target met", BUDGET_SPENT: "budget spent", INTERRUPTED: "interrupted"}[exit_code]
        self.ledger.event(
            "run_stopped", exit_code=exit_code, state=state, reason=reason, elapsed=outcome.spend.seconds,
            best_commit=best.kept_commit if best else None, best_metric=best.metric if best else None,
        )
        return outcome

    def _confirm(self, best: AttemptRecord) -> None:
        """Measure the best kept state once more and note how far it drifted from what was recorded."""
        result = self._check(best.iteration, repeat=self.goal.keep.repeats + 1)
        self.workspace.reset_to(best.kept_commit)
        if result.metric is None or best.metric is None:
            self.ledger.event("confirm", metric=None, drift=None, problem=result.problem)
            self.notes.append(f"confirm: the best state gave no result when measured again ({result.problem})")
            return
        drift = result.metric - best.metric
        self.ledger.event("confirm", metric=result.metric, drift=drift)
        self.notes.append(f"confirm: the best state measured again gives {result.metric:.6g} (drift {drift:+.6g})")
