"""The loop: a baseline, then attempts until the target is met or a budget is spent.

Each attempt: build the prompt, let the proposer edit the worktree, commit what it did (every attempt gets
its own ref), judge it (reject a rule breach without running the check; otherwise run the check and
compare with the kept state), write the ledger row, and only then move the branch or reset the worktree.

Ends with exit 0 (target met), 1 (a budget spent) or 130 (interrupted, resumable). Failures of a proposal
or of the check are verdicts, not exceptions; only an InfrastructureError or a GoalError ends a run early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from goalloop.check import CHILD_PID_FILE, COMMAND_NOT_RUNNABLE, CheckResult, read_capped, run_check
from goalloop.errors import BudgetExhausted
from goalloop.goal import Goal
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.prompt import build_prompt
from goalloop.proposers.base import Proposal, ProposalRequest, Proposer, Spend
from goalloop.resume import save_proposal
from goalloop.workspace import AttemptCommit, PathRules, Workspace

TARGET_MET, BUDGET_SPENT, INTERRUPTED = 0, 1, 130


@dataclass
class RunOutcome:
    exit_code: int
    reason: str
    baseline: AttemptRecord | None
    best: AttemptRecord | None
    spend: Spend


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
    ) -> None:
        self.goal, self.workspace, self.ledger, self.proposer, self.rules = goal, workspace, ledger, proposer, rules
        self.check_env = check_env
        self.history = list(history or [])
        self.last_output = last_output
        self.on_record = on_record or (lambda record: None)
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
                reason = self.spend().exhausted(self.goal.budget)
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

    def _read_at_base(self, path: str) -> str | None:
        return self.workspace.read_at(self.history[0].commit or "", path) if self.history else None

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._started

    # -- steps --------------------------------------------------------------------------------------------
    def _baseline(self) -> None:
        base = self.workspace.branch_head()
        result = self._check(0)
        if result.process.exit_code in COMMAND_NOT_RUNNABLE:
            stderr = read_capped(result.process.stderr_path, 2000).strip().splitlines()
            raise self.goal.error(
                ("check", "run"),
                f"the check command could not run (exit {result.process.exit_code}): {stderr[-1] if stderr else ''}",
                fix="make sure the command exists in the repository or on PATH, and that scripts are executable",
            )
        self.workspace.reset_to(base)
        self._record(AttemptRecord(
            iteration=0, verdict="baseline", description="baseline", commit=base, metric=result.metric,
            passed=result.passed, seconds=result.seconds, reason=self._problem(result), kept_commit=base,
        ))

    def _attempt(self, iteration: int) -> AttemptRecord:
        started = time.monotonic()
        kept_commit = self.kept.kept_commit
        attempt_dir = self.ledger.attempt_dir(iteration)
        prompt = build_prompt(self.goal, self.rules, self.workspace.worktree, self._read_at_base, self.history,
                              self.last_output)
        (attempt_dir / "prompt.md").write_text(prompt.text, encoding="utf-8")
        stopped: BudgetExhausted | None = None
        try:
            proposal = self.proposer.propose(ProposalRequest(
                iteration=iteration, worktree=self.workspace.worktree, prompt=prompt, attempt_dir=attempt_dir,
                run_dir=self.ledger.run_dir, rules=self.rules, budget=self.goal.budget, spend=self.spend(),
                history=tuple(self.history), env=self.workspace.tool_env(),
            ))
        except BudgetExhausted as exc:  # record what the cut-short attempt wrote and spent, then stop
            stopped = exc
            proposal = Proposal(failed=f"stopped: {exc.reason}", cost_usd=exc.cost_usd, tokens=exc.tokens)
        save_proposal(attempt_dir, proposal)
        description = proposal.description or f"attempt {iteration}"
        commit = self.workspace.commit_attempt(
            iteration, kept_commit, f"goalloop {self.workspace.run_id} #{iteration}: {description}"
        )
        if commit.patch:
            (attempt_dir / "diff.patch").write_text(commit.patch, encoding="utf-8")
        verdict, reason, result = self._judge(iteration, proposal, commit)
        if commit.removed_ignored:
            reason = f"{reason}; removed files git ignores: {', '.join(commit.removed_ignored[:5])}".lstrip("; ")
        record = AttemptRecord(
            iteration=iteration, verdict=verdict, description=description, commit=commit.sha,
            metric=result.metric if result else None, passed=bool(result and result.passed),
            seconds=time.monotonic() - started, cost_usd=proposal.cost_usd, tokens=proposal.tokens,
            added_lines=commit.added_lines, reason=reason,
            kept_commit=commit.sha if verdict == "keep" and commit.sha else kept_commit,
        )
        self._record(record)
        if verdict == "keep" and commit.sha:
            self.workspace.keep(commit.sha, kept_commit)
        else:
            self.workspace.reset_to(kept_commit)
        self.proposer.observe(record)
        if stopped:
            raise stopped
        return record

    def _judge(self, iteration: int, proposal: Proposal, commit: AttemptCommit) -> tuple[str, str, CheckResult | None]:
        """The verdict, the reason for it, and the check's result when the check ran."""
        if proposal.failed:
            self.last_output = f"The proposal failed: {proposal.failed}"
            return "crash", f"proposal failed: {proposal.failed}", None
        if commit.sha is None:
            self.last_output = "The attempt changed nothing, so it was rejected."
            return "rejected", "empty change", None
        violations = self.rules.violations([c.path for c in commit.changed])
        if violations:
            self.last_output = "The attempt was rejected without running the check: it changed " + ", ".join(violations)
            return "rejected", "changed " + ", ".join(violations), None
        result = self._check(iteration)
        if result.crashed:
            return "crash", f"check {result.problem}", result
        if self._better(result):
            return "keep", "", result
        return "discard", "not better than the kept state", result

    def _check(self, iteration: int) -> CheckResult:
        env = dict(self.check_env, **self.workspace.tool_env(), GOALLOOP_ITERATION=str(iteration))
        result = run_check(
            self.goal.check.run, cwd=self.workspace.worktree, env=env, timeout=self.goal.check.timeout,
            log_dir=self.ledger.attempt_dir(iteration), metric_pattern=self.goal.check.metric,
            pid_file=self.ledger.run_dir / CHILD_PID_FILE,
        )
        self.last_output = result.process.excerpt()
        if result.crashed:
            self.last_output = f"The check {result.problem}.\n{self.last_output}"
        return result

    # -- verdict rules ------------------------------------------------------------------------------------
    def _better(self, result: CheckResult) -> bool:
        kept = self.kept
        if not self.goal.is_metric_goal:
            return result.passed and not kept.passed
        if result.metric is None:
            return False
        if kept.metric is None:
            return True
        if self.goal.target.direction == "maximize":
            return result.metric > kept.metric
        return result.metric < kept.metric

    def _meets_target(self, record: AttemptRecord) -> bool:
        if not self.goal.is_metric_goal:
            return record.passed
        target = self.goal.target.value
        if target is None or record.metric is None:
            return False
        return record.metric >= target if self.goal.target.direction == "maximize" else record.metric <= target

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
        outcome = RunOutcome(exit_code, reason, self.history[0] if self.history else None,
                             scored[-1] if scored else None, self.spend())
        state = {TARGET_MET: "target met", BUDGET_SPENT: "budget spent", INTERRUPTED: "interrupted"}[exit_code]
        self.ledger.event(
            "run_stopped", exit_code=exit_code, state=state, reason=reason, elapsed=outcome.spend.seconds,
            best_commit=outcome.best.kept_commit if outcome.best else None,
            best_metric=outcome.best.metric if outcome.best else None,
        )
        return outcome
