"""The Proposer protocol: what a proposer is given, what it returns, and the run's spend it must respect.

A proposer edits files in `request.worktree` and returns a `Proposal` (a one-line description, and its
cost). It never commits, never runs the check and never reports a metric: the loop does all three. A
proposer that fails returns `Proposal(failed=...)` instead of raising; it raises only `BudgetExhausted`
(the next model call would pass a budget) or an `InfrastructureError` (the run cannot go on).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from goalloop.goal import Budget, format_duration

if TYPE_CHECKING:  # `validate` imports this module, and needs none of them
    from goalloop.ledger import AttemptRecord
    from goalloop.path_rules import PathRules
    from goalloop.sandbox import ProposerSandbox


PROMPT_FILE = "prompt.md"
"""attempts/NNNN/prompt.md: the prompt the proposer was given, written by the loop just before it proposes."""


@dataclass(frozen=True)
class Prompt:
    """The prompt, split so that the long part that rarely changes is an identical prefix every time."""

    stable: str
    """Role, rules, goal, instructions and context files: the same from attempt to attempt."""
    recent: str
    """The attempts so far and the last check's output: what changes every attempt."""

    @property
    def text(self) -> str:
        return f"{self.stable}\n\n{self.recent}".strip() + "\n"


@dataclass
class Spend:
    """What a run has used so far, resumes included.

    `usd` and `tokens` add up what was reported; an attempt whose cost (or tokens) nobody reported counts
    in `untracked_usd` (or `untracked_tokens`) instead, never as 0.
    """

    iterations: int = 0
    seconds: float = 0.0
    tokens: int = 0
    usd: float = 0.0
    untracked_usd: int = 0
    """Attempts whose cost is unknown."""
    untracked_tokens: int = 0
    """Attempts whose token count is unknown."""

    @classmethod
    def of(cls, records: Iterable[AttemptRecord], seconds: float) -> Spend:
        """The spend of these ledger rows (the baseline costs nothing and is not an attempt)."""
        spend = cls(seconds=seconds)
        for record in records:
            spend.add(record)
        return spend

    def add(self, record: AttemptRecord) -> None:
        """Count one more ledger row (the baseline costs nothing and is not an attempt)."""
        if record.iteration <= 0:
            return
        self.iterations += 1
        self.tokens += record.tokens or 0
        self.usd += record.cost_usd or 0.0
        self.untracked_usd += record.cost_usd is None
        self.untracked_tokens += record.tokens is None

    @property
    def usd_text(self) -> str:
        """`$1.23`, `cost not tracked` (no attempt reported one) or `$1.23 + 2 attempts not tracked`."""
        return _tracked(f"${self.usd:.2f}", self.iterations, self.untracked_usd, "cost ")

    @property
    def tokens_text(self) -> str:
        return _tracked(f"{self.tokens:,} tokens", self.iterations, self.untracked_tokens, "tokens ")

    def exhausted(self, budget: Budget) -> str | None:
        """Why no further attempt may start, or None."""
        if budget.iterations is not None and self.iterations >= budget.iterations:
            return f"iteration budget spent ({self.iterations} of {budget.iterations})"
        if budget.time is not None and self.seconds >= budget.time:
            return f"time budget spent ({format_duration(self.seconds)} of {format_duration(budget.time)})"
        if budget.tokens is not None and self.tokens >= budget.tokens:
            return f"token budget spent ({self.tokens:,} of {budget.tokens:,})"
        if budget.usd is not None and self.usd >= budget.usd:
            return f"dollar budget spent (${self.usd:.2f} of ${budget.usd:.2f})"
        return None


@dataclass(frozen=True)
class ProposalRequest:
    """Everything a proposer is given for one attempt."""

    iteration: int
    worktree: Path
    prompt: Prompt
    attempt_dir: Path
    """Where the proposer may write its own log files (attempts/NNNN/)."""
    run_dir: Path
    rules: PathRules
    budget: Budget
    spend: Spend
    """Spent before this attempt (before its round, with `parallel`); a proposer that pays per call must not
    start a call that would pass the budget."""
    history: Sequence[AttemptRecord] = ()
    """The ledger rows before this attempt (before its round, with `parallel`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables to add to the environment of anything the proposer runs in the worktree."""
    slot: int = 0
    """The worker slot (0 to parallel - 1): each slot has its own worktree and its own check."""
    round_size: int = 1
    """How many candidates this round proposes at once, from the same kept state and the same history."""
    sandbox: ProposerSandbox | None = None
    """With `sandbox:` in the goal: every command the proposer runs must run through `sandbox.wrap(...)`."""
    parent: int = 0
    """The attempt whose kept state this one starts from (0: the baseline); the worktree is at its commit."""
    parent_commit: str = ""
    """That state's commit; empty: the run's kept commit."""


def _tracked(known: str, attempts: int, untracked: int, what: str = "") -> str:
    if attempts and untracked == attempts:
        return f"{what}not tracked"
    return f"{known} + {untracked} attempt{'s' if untracked > 1 else ''} not tracked" if untracked else known


@dataclass
class Proposal:
    """What a proposer did. Its files are in the worktree; `failed` says why it produced nothing usable."""

    description: str = ""
    failed: str | None = None
    cost_usd: float | None = None
    """What the proposal cost in dollars; None when nobody reported it (never 0 for "unknown")."""
    tokens: int | None = None
    """Model tokens it used (input, cache and output); None when nobody reported them."""
    files: dict[str, str] | None = None
    """Set only by a proposer that knows every change it made: each file it wrote (path relative to the
    worktree -> its whole new text), and nothing else changed. Lets the attempt be committed without a
    scan of the worktree; None (the default) for a proposer whose changes git must find."""


SPEND_KINDS = frozenset({"usd", "tokens"})


def unenforced_budgets(budget: Budget, proposer: object) -> list[str]:
    """Warnings for budget.usd / budget.tokens that this proposer cannot report against.

    A proposer says what it reports in `tracks` ("usd", "tokens"; all by default) and why not in
    `untracked_hint`."""
    tracks = getattr(proposer, "tracks", SPEND_KINDS)
    hint = getattr(proposer, "untracked_hint", "this proposer does not report it")
    limits = {"usd": budget.usd, "tokens": budget.tokens}
    return [f"budget.{name} cannot be enforced: {hint}; the run stops on its other budgets only"
            for name, limit in limits.items() if limit is not None and name not in tracks]


def reads_prompt(proposer: object) -> bool:
    """Whether the proposer reads `request.prompt` (True unless it says `reads_prompt = False`). For one that
    does not (the search proposer), the loop builds no prompt and writes no prompt.md."""
    return bool(getattr(proposer, "reads_prompt", True))


NO_PROMPT = Prompt("", "")
"""The prompt given to a proposer that reads none."""


class Proposer(Protocol):
    def propose(self, request: ProposalRequest) -> Proposal:
        """Edit files in `request.worktree` towards the goal."""
        ...

    def observe(self, record: AttemptRecord) -> None:
        """Learn the verdict of an attempt (after it is recorded)."""
        ...
