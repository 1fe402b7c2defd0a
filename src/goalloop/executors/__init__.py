"""Where a check runs: in the slot's worktree on this machine, or as a task on a Ray cluster.

The loop proposes, commits and records on the machine that runs goalloop; only the check (and the
holdout) of an attempt can run elsewhere. `Bench` (attempt.py) describes each run of a check as a
`CheckJob` and hands it to a `CheckRunner`: `LocalChecks` runs it in the worktree, `RayChecks`
(executors/ray.py, the only module that imports ray) ships the worktree's commit to a worker and runs it
there. Both return the same `CheckResult`, with the logs in the attempt's folder on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from goalloop.check import CheckResult, run_check

if TYPE_CHECKING:
    from goalloop.sandbox import Bubblewrap


@dataclass(frozen=True)
class CheckJob:
    """One run of the check or the holdout for one slot: what to run, on which worktree, where logs go."""

    command: str
    timeout: float
    metric_pattern: str | None
    metric_file: bool
    """Read the metric from the JSON file the check writes to $GOALLOOP_METRIC_FILE."""
    prefix: str
    """Names the logs: check, check.2 (a repeat), holdout."""
    log_dir: Path
    """The attempt's folder on this machine."""
    worktree: Path
    goal_env: dict[str, str]
    """The variables goalloop and the goal set (per slot, iteration, git ignore rules), without the
    environment they are laid over: that is this machine's locally and the worker's on a cluster."""
    pid_file: Path
    slot: int
    iteration: int


class CheckRunner(Protocol):
    def run(self, job: CheckJob) -> CheckResult:
        """Run the check and judge what it produced; failures of the check are results, not exceptions."""
        ...


class LocalChecks:
    """Runs each check in the slot's own worktree, with this machine's environment (secrets dropped),
    inside the goal's sandbox when it has one."""

    runs_in_worktree = True
    """The check reads the worktree itself, so an attempt whose files are known may be committed while its
    check runs, and need not be HEAD (the search fast path, workspace.py)."""

    def __init__(self, check_env: dict[str, str], sandbox: Bubblewrap | None = None) -> None:
        self.check_env, self.sandbox = check_env, sandbox

    def run(self, job: CheckJob) -> CheckResult:
        metric_file = job.log_dir / f"{job.prefix}.metric.json" if job.metric_file else None
        wrap = None
        if self.sandbox is not None:
            wrap = self.sandbox.holdout(job.worktree) if job.prefix.startswith("holdout") else \
                self.sandbox.check(job.worktree, metric_file)
        return run_check(
            job.command, cwd=job.worktree, env=dict(self.check_env, **job.goal_env), timeout=job.timeout,
            log_dir=job.log_dir, metric_pattern=job.metric_pattern, prefix=job.prefix, pid_file=job.pid_file,
            metric_file=metric_file, wrap=wrap,
        )
