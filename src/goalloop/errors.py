"""The errors goalloop shows to its users.

Every error raised on purpose is a `GoalloopError`: it carries a message written for the person at the
terminal (what went wrong, where, and how to fix it) and the exit code the CLI ends with. The CLI prints
the message and exits; it never shows a traceback for these.
"""

from __future__ import annotations


def shown(message: str, fix: str | None) -> list[list[str | tuple[str, str]]]:
    """How an error is shown: `error: what` and, when there is one, `  fix: how`, as lines of plain and
    (text, style) chunks (the CLI prints them with rich, the entry point's fast path without)."""
    lines: list[list[str | tuple[str, str]]] = [[("error:", "bold red"), f" {message}"]]
    return lines + [["  ", ("fix:", "bold"), f" {fix}"]] if fix else lines


class GoalloopError(Exception):
    """An error whose message is meant to be read by the user."""

    exit_code = 3

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class GoalError(GoalloopError):
    """The goal file is invalid: bad YAML, a wrong key or value, a repo or base that does not exist."""

    exit_code = 2


class UsageError(GoalloopError):
    """The command line is wrong: an unknown run id, conflicting options."""

    exit_code = 2


class InfrastructureError(GoalloopError):
    """The run cannot go on (git failed, the disk is full, the API refuses the key). It stays resumable."""

    exit_code = 3
    cost_usd: float | None = 0.0
    """What the attempt under way had spent when this happened, so the budget still counts it."""
    tokens: int | None = 0


class LockHeld(InfrastructureError):
    """Another live goalloop process holds the run or the goal."""


class BudgetExhausted(Exception):
    """A budget is spent, or the next step would pass it. Ends the run cleanly with exit 1."""

    def __init__(self, reason: str, *, cost_usd: float | None = 0.0, tokens: int | None = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cost_usd = cost_usd
        """What the attempt that was cut short had already spent."""
        self.tokens = tokens
