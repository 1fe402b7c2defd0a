"""The command proposer: an external agent CLI (Claude Code, Codex, Aider, a script) edits the worktree.

The command runs with /bin/sh in the worktree, in its own process group, with:
  GOALLOOP_PROMPT_FILE       the full prompt (instructions, attempts so far, the last check's output)
  GOALLOOP_WORKTREE          the worktree (also the working directory)
  GOALLOOP_ITERATION         the attempt number (1, 2, ...)
  GOALLOOP_RUN_DIR           the run's record folder
  GOALLOOP_SLOT              the worker slot (0 unless the run is parallel: 0 to parallel - 1)
  GOALLOOP_ROUND_SIZE        how many candidates this round proposes at once (1 unless parallel)
  GOALLOOP_DESCRIPTION_FILE  where the command may write a one-line description of its change
Without a description file, the last non-empty line of its stdout is the description. A non-zero exit or
a timeout is a failed attempt, recorded; never the end of the run.

With `sandbox:` in the goal the command runs inside it, seeing its worktree, the prompt file (read-only)
and the description file; the run folder itself stays hidden. `network=True` marks a command that must
reach its model API (an agent CLI), which the sandbox then lets through for the proposer alone.
"""

from __future__ import annotations

from pathlib import Path

from goalloop.check import child_pid_file, read_capped, run_process
from goalloop.goal import CommandProposer as CommandConfig
from goalloop.goal import format_duration
from goalloop.ledger import AttemptRecord
from goalloop.proposers.base import Proposal, ProposalRequest
from goalloop.sandbox import Wrap

DESCRIPTION_LIMIT = 200


class CommandProposer:
    def __init__(self, config: CommandConfig, base_env: dict[str, str], *, network: bool = False) -> None:
        self.config = config
        self.base_env = base_env
        self.network = network
        """Whether the command needs the network inside the sandbox (an agent CLI calling its API)."""

    def propose(self, request: ProposalRequest) -> Proposal:
        prompt_file = request.attempt_dir / "prompt.md"
        prompt_file.write_text(request.prompt.text, encoding="utf-8")
        description_file = request.attempt_dir / "description.txt"
        env = dict(self.base_env)
        env.update(request.env)
        env.update(self.config.env)
        env.update(
            GOALLOOP_PROMPT_FILE=str(prompt_file),
            GOALLOOP_WORKTREE=str(request.worktree),
            GOALLOOP_ITERATION=str(request.iteration),
            GOALLOOP_RUN_DIR=str(request.run_dir),
            GOALLOOP_SLOT=str(request.slot),
            GOALLOOP_ROUND_SIZE=str(request.round_size),
            GOALLOOP_DESCRIPTION_FILE=str(description_file),
        )
        result = run_process(
            self.config.run,
            cwd=request.worktree,
            env=env,
            timeout=self.config.timeout,
            stdout_path=request.attempt_dir / "proposer.stdout.log",
            stderr_path=request.attempt_dir / "proposer.stderr.log",
            pid_file=child_pid_file(request.run_dir, request.slot),
            wrap=self._sandboxed(request, prompt_file, description_file),
        )
        description = _first_line(read_capped(description_file, 4096)) if description_file.exists() else ""
        if not description:
            description = _last_line(read_capped(result.stdout_path, 8192))
        if result.timed_out:
            return Proposal(description=description, failed=f"the command timed out after {format_duration(self.config.timeout)}")
        if result.exit_code != 0:
            why = _last_line(read_capped(result.stderr_path, 8192)) or _last_line(read_capped(result.stdout_path, 8192))
            return Proposal(description=description, failed=f"the command exited with code {result.exit_code}: {why}".rstrip(": "))
        return Proposal(description=description or "(the command gave no description)")

    def observe(self, record: AttemptRecord) -> None:
        pass

    def _sandboxed(self, request: ProposalRequest, prompt_file: Path, description_file: Path) -> Wrap | None:
        if request.sandbox is None:
            return None
        description_file.touch()  # bound into the sandbox, so it must exist
        return request.sandbox.wrap(readable=[prompt_file], writable=[description_file], network=self.network)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:DESCRIPTION_LIMIT]


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")[:DESCRIPTION_LIMIT]
