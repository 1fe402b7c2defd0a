"""Which concrete parts a goal asks for: its proposer, where its checks run, and the sandbox they need.

Used by the cli package only, which stays the one place that picks concrete classes.
"""

from __future__ import annotations
import os
from pathlib import Path
from typing import TYPE_CHECKING
from goalloop.environment import without_secrets
from goalloop.errors import InfrastructureError
from goalloop.goal import Goal, load_goal
from goalloop.goal.paths import check_named_files
from goalloop.path_rules import PathRules
from goalloop.repo_target import RepoTarget, resolve_repo

if TYPE_CHECKING:  # `validate` comes here too: it runs no check and writes no record
    from goalloop.executors import CheckRunner
    from goalloop.ledger import Ledger, RunMeta
    from goalloop.proposers.base import Proposer


def _prepare(goal_file: Path) -> tuple[Goal, RepoTarget, PathRules]:
    """Everything that can be checked before anything is created on disk."""
    goal = load_goal(goal_file)
    target = resolve_repo(goal)
    check_named_files(goal, target.root)
    goal.instructions_text()
    _require_sandbox(goal)
    return goal, target, PathRules.for_goal(goal, target)


def _require_sandbox(goal: Goal) -> None:
    """A goal with `sandbox:` runs only where bubblewrap works: never silently without it."""
    if goal.sandbox is None:
        return
    from goalloop.sandbox import unavailable

    if goal.executor.kind == "ray":
        raise goal.error(("executor", "kind"), "the sandbox is not applied to checks on a Ray cluster",
                         fix="delete sandbox:, or run the checks on this machine (executor: {kind: threads})")
    problem = unavailable()
    if problem is not None:
        raise goal.error(("sandbox",), problem.problem, fix=problem.fix)
    for key in ("ro", "rw", "hide"):
        for index, raw in enumerate(getattr(goal.sandbox, key)):
            path = Path(os.path.expanduser(raw))
            path = path if path.is_absolute() else goal.source.resolve().parent / path
            if not any(c in raw for c in "*?[") and not path.exists():
                raise goal.error(("sandbox", key, index), f"{path} does not exist",
                                 fix="create it, or give a path that exists (relative to the goal file)")


def make_proposer(goal: Goal, target: RepoTarget, rules: PathRules | None = None) -> Proposer:
    """The concrete proposer for the goal; validates what it can against the repository at base (`rules`:
    the goal's path rules, when the caller has them already)."""
    config = goal.proposer
    if config.kind == "scripted":
        from goalloop.proposers.scripted import ScriptedProposer

        return ScriptedProposer(config)
    if config.kind == "command":
        from goalloop.proposers.command import CommandProposer

        return CommandProposer(config, without_secrets(os.environ, goal.env.pass_))
    if config.kind in ("claude-code", "codex", "aider"):
        from goalloop.proposers.agents import AGENTS

        return AGENTS[config.kind](config, goal, dict(os.environ))
    if config.kind == "claude":
        from goalloop.proposers.claude import ClaudeProposer

        return ClaudeProposer(config, goal, dict(os.environ))
    from goalloop.proposers.search import SearchProposer

    return SearchProposer(config, goal, target, rules)


def connect_cluster(goal: Goal) -> object | None:
    """With `executor: {kind: ray}`, join the cluster before anything is created (exit 3 if it cannot)."""
    if goal.executor.kind != "ray":
        return None
    try:
        from goalloop.executors import ray as ray_executor
    except ModuleNotFoundError as exc:
        if exc.name != "ray" and not str(exc.name).startswith("ray."):
            raise
        raise InfrastructureError(f"{goal.where('executor', 'kind')}: executor.kind is ray, but Ray is not installed",
                                  fix="pip install 'goalloop[ray]' (the same Ray version as the cluster's)") from None
    return ray_executor.connect(goal.executor, goal.parallel)


def make_checks(goal: Goal, cluster: object | None, ledger: Ledger, meta: RunMeta) -> CheckRunner | None:
    """Where the run's checks go: None (the slots' worktrees, here) or the joined Ray cluster."""
    if cluster is None:
        return None
    from goalloop.executors.ray import RayChecks

    return RayChecks(cluster, ledger, Path(meta.repo), meta.base_commit, meta.run_id, tuple(goal.env.pass_))
