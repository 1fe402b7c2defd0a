"""A proposer command that fails the same way every time: named after a few attempts, and the run ends.

An agent CLI that is not installed (exit 127), cannot be started (exit 126, e.g. a prompt in argv over
Linux's 128 KiB limit), is not logged in, or sits waiting for a browser login fails every attempt
identically; left alone it would spend the whole budget and the night on nothing. `FailureWatch` reads
each failed proposal's exit code and output, and after `REPEATS` identical failures of a kind it knows
in a row gives the `InfrastructureError` (exit 3, resumable) that names the failure and its fix.
Other failures are left to the loop: they are recorded and the next prompt says they keep happening.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from goalloop.errors import InfrastructureError

REPEATS = 3
"""Identical failures of a known kind in a row that end the run."""


@dataclass(frozen=True)
class Known:
    what: str
    fix: str


_LOGIN = re.compile(
    # the CLIs' own messages, where they print them: at the start of a line (after an "Error:" or the like)
    # or as Claude Code's JSON result; a tool's or test's output quoted inside a line never counts
    r'(?:^|"result":\s*")(?:(?:api )?error:\s*)?'
    r"(?:(?:not logged in|invalid api key) · (?:please run /login|fix external api key)"  # Claude Code
    r"|api error: 401\b.*authentication_error"                                          # Claude Code
    r"|litellm\.authenticationerror\b|the api provider is not able to authenticate you"  # Aider
    r"|unexpected status 401 unauthorized"                                               # Codex
    r"|not logged in\b|missing (?:an )?api key\b|no api key (?:found|provided|set)\b)",    # other agent CLIs
    re.IGNORECASE | re.MULTILINE,
)
_BROWSER_WAIT = re.compile(r"waiting .{0,40}(browser|log ?in)|open(ing)? .{0,30}browser .{0,30}log ?in", re.IGNORECASE)


def classify(exit_code: int | None, timed_out: bool, output: str) -> Known | None:
    """The known way this failed, if it is one that repeats every attempt until a person fixes it."""
    tail = output[-4000:]
    if exit_code == 127:
        return Known("the command was not found (exit 127)",
                     "install the program, or put the folder holding it on PATH before starting goalloop "
                     "(the command runs with /bin/sh in the worktree, with your PATH)")
    if exit_code == 126 and "argument list too long" in tail.lower():
        return Known("the prompt does not fit in an argument: Argument list too long (exit 126)",
                     'pass the prompt on stdin or by file, never in argv: `< "$GOALLOOP_PROMPT_FILE"`, or use '
                     "proposer kind claude-code, codex or aider, which do")
    if exit_code == 126:
        return Known("the command could not be executed (exit 126)", "make the script executable (chmod +x) "
                     "or run it through its interpreter")
    if timed_out and _BROWSER_WAIT.search(tail):
        return Known("the agent waited for a browser login until it timed out",
                     "give it an API key: export the key variable it reads and name it under env.pass "
                     "(the kinds claude-code, codex and aider pass theirs by themselves)")
    if _LOGIN.search(tail):
        return Known("the agent is not logged in or its API key was refused",
                     "export a valid key in the environment goalloop starts from (secret-looking variables "
                     "reach a command only when env.pass names them; the kinds claude-code, codex and aider "
                     "pass their key variables by themselves)")
    return None


class FailureWatch:
    """Counts identical known failures in a row; safe to use from the threads of a parallel round."""

    def __init__(self, repeats: int = REPEATS) -> None:
        self.repeats = repeats
        self._streak: list[str] = []
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        with self._lock:
            self._streak.clear()

    def failed(self, exit_code: int | None, timed_out: bool, output: str, last_line: str) -> InfrastructureError | None:
        """Note a failed proposal; the error that ends the run when it is the same known failure `repeats` times."""
        known = classify(exit_code, timed_out, output)
        with self._lock:
            if known is None:
                self._streak.clear()
                return None
            if self._streak and self._streak[-1] != known.what:
                self._streak.clear()
            self._streak.append(known.what)
            if len(self._streak) < self.repeats:
                return None
        return InfrastructureError(
            f"the proposer failed the same way {self.repeats} times in a row: {known.what}"
            + (f": {last_line}" if last_line else ""),
            fix=known.fix + "; then `goalloop resume`",
        )
