"""One attempt in one worktree (a slot): propose, commit, judge. Writes no ledger row and moves no branch.

A round of `parallel: N` runs N of these at once, one per slot, all against the same kept state; the loop
then picks the verdicts and records them. Everything here touches only its own slot's worktree, attempt
folder and process-group file, so slots can run in threads side by side.

Judging, in order: a failed proposal is a `crash`; an empty change, a change to a protected or
non-editable path, a pinned file that changed, or too many added lines is `rejected` without running the
check; otherwise the check runs. A candidate that looks better but makes a guarded figure worse (the
count of tests run, a declared guard) is `rejected` with the figures named. A candidate that looks better
is measured `keep.repeats` times and judged `keep` only if its gain is significant (verdict.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from goalloop import faults, verdict
from goalloop.check import COMMAND_NOT_RUNNABLE, CheckResult, child_pid_file, read_capped
from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.executors import CheckJob, CheckRunner, LocalChecks
from goalloop.goal import Goal
from goalloop.guards import GuardSpec, SlowGuard, broken_guards, count_tests, read_figures, runner_of
from goalloop.reasons import failure_reason
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.proposers.base import PROMPT_FILE, Proposal, ProposalRequest, Proposer, reads_prompt
from goalloop.resume import save_proposal, with_set_aside_spend
from goalloop.sandbox import Bubblewrap, ProposerSandbox
from goalloop.path_rules import PathRules, named_paths
from goalloop.workspace import AttemptCommit, Workspace


@dataclass(frozen=True)
class Slot:
    """A worker: its number and its own worktree (all slots share the run's branch and refs)."""

    index: int
    workspace: Workspace


@dataclass
class Judgement:
    verdict: str
    reason: str = ""
    result: CheckResult | None = None
    metric: float | None = None
    samples: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class Candidate:
    """What one slot produced: the proposal, its commit, its judgement; not yet recorded."""

    iteration: int
    slot: Slot
    proposal: Proposal
    commit: AttemptCommit
    judgement: Judgement
    seconds: float
    told: str
    """What the next prompt shows as the last check's output (or why there was no check)."""
    stopped: BudgetExhausted | InfrastructureError | None = None
    """The proposer stopped the run (budget, infrastructure): recorded first, then raised."""

    @property
    def judged_keep(self) -> bool:
        return self.judgement.verdict == "keep" and self.commit.sha is not None


class Bench:
    """Runs the check and the holdout for a slot through a CheckRunner: in the worktree (inside the sandbox
    when the goal has one), or on a cluster."""

    def __init__(self, goal: Goal, ledger: Ledger, check_env: dict[str, str], sandbox: Bubblewrap | None = None,
                 runner: CheckRunner | None = None) -> None:
        self.goal, self.ledger, self.check_env, self.sandbox = goal, ledger, check_env, sandbox
        self.runner = runner or LocalChecks(check_env, sandbox)
        self.on_phase: Callable[[int, int, str], None] | None = None
        """Told (slot, iteration, phase) when an attempt enters a phase, for a live view."""

    def proposer_sandbox(self, slot: Slot) -> ProposerSandbox | None:
        return ProposerSandbox(self.sandbox, slot.workspace.worktree) if self.sandbox is not None else None

    def phase(self, slot: Slot, iteration: int, phase: str) -> None:
        """Say what the attempt under way is doing: proposing, checking, repeat k of n, holdout check."""
        self.ledger.event("phase", slot=slot.index, iteration=iteration, phase=phase)
        if self.on_phase is not None:
            self.on_phase(slot.index, iteration, phase)

    def goal_env(self, slot: Slot, iteration: int) -> dict[str, str]:
        """The variables goalloop and the goal add to the check's environment."""
        per_slot = {k: v.replace("{slot}", str(slot.index)) for k, v in self.goal.check.env_per_slot.items()}
        return dict(slot.workspace.tool_env(), **per_slot, GOALLOOP_ITERATION=str(iteration))

    def check(self, slot: Slot, iteration: int, repeat: int = 1) -> CheckResult:
        repeats = self.goal.keep.repeats
        self.phase(slot, iteration, "checking" if repeat == 1 else f"repeat {repeat} of {repeats}"
                   if repeat <= repeats else "measuring the best again")
        check = self.goal.check
        slot.workspace.require()
        result = self._run(slot, iteration, check.run, check.timeout, check.metric, check.metric_file,
                           "check" if repeat == 1 else f"check.{repeat}")
        slot.workspace.require()  # a check that deleted its worktree measured nothing: stop, resumably
        # a check that ran out of disk may have failed for that alone: not judged, proposed again on resume
        faults.require_space([self.ledger.attempt_dir(iteration), slot.workspace.worktree], faults.MIN_FREE_BYTES,
                             slot.workspace.run_id,
                             below=faults.NEARLY_FULL_BYTES)
        return result

    def repeat(self, slot: Slot, iteration: int, first: CheckResult) -> list[float]:
        """The first measurement and up to keep.repeats - 1 more; stops early at a crash."""
        samples = [first.metric] if first.metric is not None else []
        for repeat in range(2, self.goal.keep.repeats + 1):
            again = self.check(slot, iteration, repeat)
            if again.metric is None:
                break
            samples.append(again.metric)
        return samples

    def holdout(self, slot: Slot, iteration: int) -> list[float]:
        """The holdout check's metric for the worktree as it is, measured keep.repeats times (stopping at the
        first that gives none); its output is never shown to the proposer."""
        holdout = self.goal.holdout
        samples: list[float] = []
        if holdout is not None:
            self.phase(slot, iteration, "holdout check")
        for repeat in range(1, (self.goal.keep.repeats if holdout else 0) + 1):
            assert holdout is not None
            result = self._run(slot, iteration, holdout.run, holdout.timeout, holdout.metric, False,
                               "holdout" if repeat == 1 else f"holdout.{repeat}")
            if result.metric is None:
                break
            samples.append(result.metric)
        return samples

    def _run(self, slot: Slot, iteration: int, command: str, timeout: float, metric: str | None,
             metric_file: bool, prefix: str) -> CheckResult:
        return self.runner.run(CheckJob(
            command=command, timeout=timeout, metric_pattern=metric, metric_file=metric_file, prefix=prefix,
            log_dir=self.ledger.attempt_dir(iteration), worktree=slot.workspace.worktree,
            goal_env=self.goal_env(slot, iteration), pid_file=child_pid_file(self.ledger.run_dir, slot.index),
            slot=slot.index, iteration=iteration,
        ))


def baseline_judgement(goal: Goal, result: CheckResult, specs: list[GuardSpec]) -> tuple[str, dict[str, float]]:
    """The baseline's reason (why it fails, in a line a person can act on) and its guarded figures.

    Raises the goal's error when the check could not run at all: a command that is not there, or a test
    runner that is not installed, so no budget is spent on a check that cannot say anything."""
    output = result.process.excerpt()
    if result.process.exit_code in COMMAND_NOT_RUNNABLE:
        stderr = read_capped(result.process.stderr_path, 2000)
        raise goal.error(
            ("check", "run"),
            f"the check command could not run (exit {result.process.exit_code}): {failure_reason(stderr)}",
            fix="make sure the command exists in the repository or on PATH, and that scripts are executable",
        )
    runner = runner_of(goal.check.run)
    if runner is not None and count_tests(output) is None and "No module named" in output:
        raise goal.error(("check", "run"), f"the check ran no test: {failure_reason(output)}",
                         fix="install the test runner in the environment the check uses, or name that "
                         "environment's python in check.run (e.g. /path/to/.venv/bin/python -m pytest); "
                         "`goalloop doctor` tries the check without starting a run")
    try:
        figures = read_figures(specs, result.process.stdout_path, output)
    except SlowGuard as exc:
        raise goal.error(guard_key(goal, exc.spec), f"the guard {exc.spec.name} gave no result in time on the "
                         f"baseline: {exc}", fix=SLOW_GUARD_FIX) from None
    if result.crashed:
        return f"check {result.problem}", figures
    if not goal.is_metric_goal and not result.passed:
        return failure_reason(output, f"exit code {result.process.exit_code}"), figures
    return "", figures


GIT_WORD = re.compile(r"\bgit\b", re.IGNORECASE)
SCRIPT_READ_LIMIT = 1 << 20


SLOW_GUARD_FIX = (r"write a pattern that matches the figure's line directly, such as '^peak_mb:\s*(\S+)' "
                  "(a repeated choice such as (a|aa)+ backtracks on a long line)")


def guard_key(goal: Goal, spec: GuardSpec) -> tuple[str, int, str]:
    """Where a declared guard sits in the goal: ("guards", index, "metric")."""
    index = next((i for i, g in enumerate(goal.guards) if (g.name, g.metric) == (spec.name, spec.pattern)), 0)
    return "guards", index, "metric"


def told(result: CheckResult) -> str:
    """The check's output as the next prompt shows it."""
    excerpt = result.process.excerpt()
    return f"The check {result.problem}.\n{excerpt}" if result.crashed else excerpt


class Attempter:
    """Runs one attempt in a slot against a fixed kept state; safe to call from several threads at once."""

    def __init__(self, goal: Goal, ledger: Ledger, proposer: Proposer, rules: PathRules, bench: Bench) -> None:
        self.goal, self.ledger, self.proposer, self.rules, self.bench = goal, ledger, proposer, rules, bench
        self.guards = verdict.guard_specs(goal)
        self._fast_path: bool | None = None
        """Whether attempts whose files are known may skip git's scan (decided at the first one)."""

    def attempt(self, slot: Slot, request: ProposalRequest, kept: AttemptRecord, pins: dict[str, str]) -> Candidate:
        """`kept` is the state to beat: the run's kept state, or with a tree strategy the attempt's parent."""
        started = time.monotonic()
        iteration = request.iteration
        attempt_dir = request.attempt_dir
        if reads_prompt(self.proposer):
            (attempt_dir / PROMPT_FILE).write_text(request.prompt.text, encoding="utf-8")
        self.bench.phase(slot, iteration, "proposing")
        stopped: BudgetExhausted | InfrastructureError | None = None
        try:
            proposal = self.proposer.propose(request)
        except BudgetExhausted as exc:  # record what the cut-short attempt wrote and spent, then stop
            stopped = exc
            proposal = Proposal(failed=f"stopped: {exc.reason}", cost_usd=exc.cost_usd, tokens=exc.tokens)
        except InfrastructureError as exc:  # the same, then end the run resumably (exit 3)
            stopped = exc
            proposal = Proposal(failed=f"stopped: {exc.message}", cost_usd=exc.cost_usd, tokens=exc.tokens)
        save_proposal(attempt_dir, proposal)
        proposal = with_set_aside_spend(attempt_dir, proposal)
        description = proposal.description or f"attempt {iteration}"
        workspace = slot.workspace
        parent, message = request.parent_commit or kept.kept_commit, f"goalloop {workspace.run_id} #{iteration}: {description}"
        known = proposal.files is not None and self._may_skip_the_scan(workspace.worktree)
        commit = workspace.commit_known(iteration, parent, message, proposal.files or {}) if known else None
        if commit is None:
            commit = workspace.commit_attempt(iteration, parent, message)
        if commit.patch:
            (attempt_dir / "diff.patch").write_text(commit.patch, encoding="utf-8")
        with workspace.writing_meanwhile():
            judged, said = self._judge(slot, iteration, proposal, commit, kept, pins, request.history)
        if judged.verdict != "keep":
            workspace.start_undo()
        return Candidate(iteration, slot, proposal, commit, judged, time.monotonic() - started, said, stopped)

    def _may_skip_the_scan(self, worktree: Path) -> bool:
        """The fast path leaves HEAD and the index at the kept commit while the check runs: only for checks
        that read the worktree here (not Ray's, which ships HEAD's commit) and whose command, and the
        scripts it names, never mention git (which could look at HEAD, the index or a stash)."""
        if self._fast_path is None:
            commands = [self.goal.check.run] + ([self.goal.holdout.run] if self.goal.holdout else [])
            self._fast_path = getattr(self.bench.runner, "runs_in_worktree", False) and \
                not any(GIT_WORD.search(text) for text in _with_named_scripts(commands, worktree))
        return self._fast_path

    def _judge(self, slot: Slot, iteration: int, proposal: Proposal, commit: AttemptCommit, kept: AttemptRecord,
               pins: dict[str, str], history: tuple[AttemptRecord, ...]) -> tuple[Judgement, str]:
        if proposal.failed:
            return _refuse("crash", f"proposal failed: {proposal.failed}", "The proposal failed")
        if commit.sha is None:
            return _refuse("rejected", "empty change", "The attempt changed nothing, so it was rejected")
        violations = self.rules.violations([c.path for c in commit.changed])
        violations += [f"{path} (protected)" for path in verdict.tampered_files(slot.workspace.worktree, pins)
                       if f"{path} (protected)" not in violations]
        if violations:
            return _refuse("rejected", "changed " + ", ".join(violations),
                           "The attempt was rejected without running the check")
        limit = self.goal.keep.max_added_lines
        if limit is not None and commit.added_lines > limit:
            return _refuse("rejected", f"adds {commit.added_lines} lines (keep.max_added_lines: {limit})",
                           "The attempt was rejected without running the check: a simpler change is wanted")
        result = self.bench.check(slot, iteration)
        said = told(result)
        if result.crashed:
            why = f"check {result.problem}"
            if result.process.exit_code not in (0, None):  # the same exit code can hide different failures
                why += f": {failure_reason(result.process.excerpt())}"
            return Judgement("crash", why, result), said
        if not self._better(result, kept):
            why = "not better than the kept state"
            if not self.goal.is_metric_goal:
                why = "check failed: " + failure_reason(result.process.excerpt(),
                                                        f"exit code {result.process.exit_code}")
            return Judgement("discard", why, result, result.metric), said
        try:
            figures = read_figures(self.guards, result.process.stdout_path, result.process.excerpt())
        except SlowGuard as exc:
            where = "{}[{}].{}".format(*guard_key(self.goal, exc.spec))
            why = f"the guard {exc.spec.name} is broken for this attempt: {exc} (fix {where} in the goal)"
            return Judgement("rejected", why, result, result.metric), f"{said}\nThe attempt was rejected: {why}."
        broken = broken_guards(self.guards, figures, kept.figures)
        if broken:
            return Judgement("rejected", "; ".join(broken), result, result.metric, figures=figures), \
                f"{said}\nThe attempt was rejected: {'; '.join(broken)}."
        if not self.goal.is_metric_goal or self.goal.keep.repeats == 1:
            return Judgement("keep", "", result, result.metric, figures=figures), said
        samples = self.bench.repeat(slot, iteration, result)
        if len(samples) < self.goal.keep.repeats:
            return Judgement("crash", f"check crashed when measured again ({len(samples)} of "
                             f"{self.goal.keep.repeats} runs)", result, None, samples), said
        median = verdict.median(samples)
        gained, why_not = verdict.significant_gain(self.goal, samples, kept, history)
        if not gained:
            return Judgement("discard", f"looked better once; measured {len(samples)} times, the {why_not}",
                             result, median, samples), said
        return Judgement("keep", "", result, median, samples, figures), said

    def _better(self, result: CheckResult, kept: AttemptRecord) -> bool:
        if not self.goal.is_metric_goal:
            return result.passed and not kept.passed
        return result.metric is not None and verdict.beats(self.goal, result.metric, kept.metric)


def _with_named_scripts(commands: list[str], worktree: Path) -> list[str]:
    """The commands and the text of every file in the worktree that a word of them names (up to 1 MiB)."""
    texts = list(commands)
    for rel in sorted({rel for command in commands for rel in named_paths(command, worktree)}):
        path = worktree / rel
        try:
            if path.is_file() and path.stat().st_size <= SCRIPT_READ_LIMIT:
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return texts


def _refuse(verdict_name: str, reason: str, said: str) -> tuple[Judgement, str]:
    return Judgement(verdict_name, reason), f"{said}: {reason}."
