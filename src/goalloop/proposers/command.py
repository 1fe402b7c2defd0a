"""The command proposer: an external agent CLI (Claude Code, Codex, Aider, a script) edits the worktree.

The command runs with /bin/sh in the worktree, in its own process group, with:
  GOALLOOP_PROMPT_FILE       the full prompt (instructions, attempts so far, the last check's output)
  GOALLOOP_WORKTREE          the worktree (also the working directory)
  GOALLOOP_ITERATION         the attempt number (1, 2, ...)
  GOALLOOP_RUN_DIR           the run's record folder
  GOALLOOP_SLOT              the worker slot (0 unless the run is parallel: 0 to parallel - 1)
  GOALLOOP_ROUND_SIZE        how many candidates this round proposes at once (1 unless parallel)
  GOALLOOP_PARENT            the attempt whose kept state the worktree holds (0: the baseline); with a
                             tree search (`search:`) it differs from slot to slot and round to round
  GOALLOOP_PARENT_COMMIT     that state's commit
  GOALLOOP_DESCRIPTION_FILE  where the command may write a one-line description of its change
  GOALLOOP_COST_FILE         where the command may write what it spent, as JSON (see `read_cost_file`)
Without a description file, the last non-empty line of its stdout is the description. A non-zero exit or
a timeout is a failed attempt, recorded; never the end of the run, unless it fails the same known way
several times in a row (failures.py). A command that writes no cost file has an unknown cost: recorded
as None and shown "not tracked", never as $0.00.

With `sandbox:` in the goal the command runs inside it, seeing its worktree, the prompt file (read-only),
the description and cost files; the run folder itself stays hidden. `network=True` marks a command that
must reach its model API (an agent CLI), which the sandbox then lets through for the proposer alone.

The presets for Claude Code, Codex and Aider (agents.py) are command proposers that build their own
command line and read the spend from their CLI's own output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from goalloop.goal import CommandProposer as CommandConfig
from goalloop.goal import format_duration
from goalloop.proposers.base import PROMPT_FILE, Proposal, ProposalRequest
from goalloop.proposers.failures import FailureWatch

if TYPE_CHECKING:  # `validate` builds this proposer and runs nothing: it needs none of them
    from goalloop.check import ProcessResult
    from goalloop.ledger import AttemptRecord
    from goalloop.sandbox import Wrap

DESCRIPTION_LIMIT = 200
COST_FILE_LIMIT = 1 << 20


@dataclass(frozen=True)
class Reported:
    """Spend someone reported; None where nobody did."""

    usd: float | None = None
    tokens: int | None = None

    def __add__(self, other: Reported) -> Reported:
        def both(a, b):  # noqa: ANN001, ANN202
            return a if b is None else b if a is None else a + b

        return Reported(both(self.usd, other.usd), both(self.tokens, other.tokens))


@dataclass(frozen=True)
class Invocation:
    """One proposal's command line and the environment added for it."""

    command: str
    env: dict[str, str]


@dataclass(frozen=True)
class AttemptFiles:
    """The files of one proposal, all in its attempt folder (never in the worktree)."""

    prompt: Path
    description: Path
    cost: Path
    stdout: Path
    stderr: Path

    @classmethod
    def under(cls, attempt_dir: Path) -> AttemptFiles:
        return cls(attempt_dir / PROMPT_FILE, attempt_dir / "description.txt", attempt_dir / "cost.json",
                   attempt_dir / "proposer.stdout.log", attempt_dir / "proposer.stderr.log")


class CommandProposer:
    tracks: frozenset[str] = frozenset()
    """What it can report of its spend (see base.unenforced_budgets): a plain command, only what it writes."""
    nests_sandbox = False
    """Whether the command starts a bubblewrap sandbox of its own (Codex does, for each command it runs)."""
    untracked_hint = ("a command proposer's spend is unknown unless its command writes it to $GOALLOOP_COST_FILE "
                      "(README: the cost protocol)")

    def __init__(self, config: CommandConfig, base_env: dict[str, str], *, network: bool = False) -> None:
        self.config = config
        self.base_env = base_env
        self.network = network
        """Whether the command needs the network inside the sandbox (an agent CLI calling its API)."""
        self.watch = FailureWatch()

    # -- what a preset overrides ----------------------------------------------------------------------------
    def invocation(self, request: ProposalRequest, files: AttemptFiles) -> Invocation:
        return Invocation(self.config.run, dict(self.config.env))

    def reported(self, files: AttemptFiles, result: ProcessResult) -> Reported:
        """What the command says it spent, beyond its cost file. A plain command says nothing."""
        return Reported()

    def described(self, files: AttemptFiles) -> str:
        """The description when the command wrote no description file."""
        from goalloop.check import read_capped

        return last_line(read_capped(files.stdout, 8192))

    # -- one proposal -----------------------------------------------------------------------------------------
    def propose(self, request: ProposalRequest) -> Proposal:
        from goalloop.check import child_pid_file, read_capped, run_process

        files = AttemptFiles.under(request.attempt_dir)
        if not files.prompt.is_file():  # the loop wrote it already, unless the proposer is driven on its own
            files.prompt.write_text(request.prompt.text, encoding="utf-8")
        files.cost.unlink(missing_ok=True)
        invocation = self.invocation(request, files)
        env = dict(self.base_env)
        env.update(request.env)
        env.update(invocation.env)
        env.update(
            GOALLOOP_PROMPT_FILE=str(files.prompt),
            GOALLOOP_WORKTREE=str(request.worktree),
            GOALLOOP_ITERATION=str(request.iteration),
            GOALLOOP_RUN_DIR=str(request.run_dir),
            GOALLOOP_SLOT=str(request.slot),
            GOALLOOP_ROUND_SIZE=str(request.round_size),
            GOALLOOP_PARENT=str(request.parent),
            GOALLOOP_PARENT_COMMIT=request.parent_commit,
            GOALLOOP_DESCRIPTION_FILE=str(files.description),
            GOALLOOP_COST_FILE=str(files.cost),
        )
        result = run_process(
            invocation.command,
            cwd=request.worktree,
            env=env,
            timeout=self.config.timeout,
            stdout_path=files.stdout,
            stderr_path=files.stderr,
            pid_file=child_pid_file(request.run_dir, request.slot),
            wrap=self._sandboxed(request, files),
        )
        spent = read_cost_file(files.cost) + self.reported(files, result)
        description = first_line(read_capped(files.description, 4096)) if files.description.exists() else ""
        description = description or self.described(files)
        failed = self._failure(files, result)
        if failed is None:
            self.watch.succeeded()
            return Proposal(description=description or "(the command gave no description)",
                            cost_usd=spent.usd, tokens=spent.tokens)
        proposal = Proposal(description=description, failed=failed, cost_usd=spent.usd, tokens=spent.tokens)
        output = read_capped(files.stdout, 8192) + "\n" + read_capped(files.stderr, 8192)
        stop = self.watch.failed(result.exit_code, result.timed_out, output, _why(files))
        if stop is not None:  # recorded with what this attempt spent, then the run ends (exit 3)
            stop.cost_usd, stop.tokens = proposal.cost_usd, proposal.tokens
            raise stop
        return proposal

    def _sandboxed(self, request: ProposalRequest, files: AttemptFiles) -> Wrap | None:
        if request.sandbox is None:
            return None
        readable, writable = self.sandbox_paths(request, files)
        for path in (files.description, files.cost):
            path.touch()  # bound into the sandbox, so it must exist
        return request.sandbox.wrap(readable=[files.prompt, *readable],
                                    writable=[files.description, files.cost, *writable], network=self.network,
                                    nests=self.nests_sandbox)

    def sandbox_paths(self, request: ProposalRequest, files: AttemptFiles) -> tuple[list[Path], list[Path]]:
        """What the command must read and write beyond its worktree and attempt files, when sandboxed
        (an agent CLI's install folder and state folder); each must exist."""
        return [], []

    def _failure(self, files: AttemptFiles, result: ProcessResult) -> str | None:
        if result.timed_out:
            return f"the command timed out after {format_duration(self.config.timeout)}"
        if result.exit_code != 0:
            return f"the command exited with code {result.exit_code}: {_why(files)}".rstrip(": ")
        return None

    def observe(self, record: AttemptRecord) -> None:
        pass


def read_cost_file(path: Path) -> Reported:
    """The spend a command wrote to $GOALLOOP_COST_FILE: one JSON object, or one per line (summed).

    Each object may hold `cost_usd` (dollars) and `tokens`, or `input_tokens` and `output_tokens`
    (added up). A missing or unreadable file, or a key left out, is unknown (None), never 0.
    """
    if not path.is_file():
        return Reported()
    from goalloop.check import read_capped

    text = read_capped(path, COST_FILE_LIMIT).strip()
    try:
        entries = [json.loads(text)]
    except ValueError:
        try:
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return Reported()
    total = Reported()
    for entry in entries:
        if isinstance(entry, dict):
            total = total + _entry(entry)
    return total


def _entry(entry: dict) -> Reported:
    def number(key: str) -> float | None:
        value = entry.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None

    usd = number("cost_usd")
    tokens = number("tokens")
    if tokens is None:
        parts = [number(key) for key in ("input_tokens", "output_tokens")]
        tokens = sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None
    return Reported(usd, None if tokens is None else int(tokens))


def _why(files: AttemptFiles) -> str:
    from goalloop.check import read_capped

    return last_line(read_capped(files.stderr, 8192)) or last_line(read_capped(files.stdout, 8192))


def first_line(text: str) -> str:
    """The first non-empty line, stripped and cut to DESCRIPTION_LIMIT characters."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:DESCRIPTION_LIMIT]


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")[:DESCRIPTION_LIMIT]
