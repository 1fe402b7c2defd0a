"""Bring git and the ledger back into agreement after a run stopped at any point (kill -9 included).

The ledger row of an attempt is written before the branch moves, and its commit and ref before the row,
so a killed run can be in one of a few states, each repaired here:

- an attempt committed (its ref exists) but not recorded: recorded now as `crash`, reason "lost", with
  the cost its proposal had reported, so the budget counts it and the ref says where it is;
- a proposal that was still editing the worktree when the run died: its files are committed as an
  attempt of their own and recorded as lost, so nothing a proposer wrote is lost;
- a recorded keep whose branch did not move: the branch is moved;
- finally the worktree is put back exactly at the last kept commit.

Lost attempts are not re-checked: a verdict needs the proposal's context, which died with the process.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from goalloop.check import CHILD_PID_FILE, kill_leftover_group
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.proposers.base import Proposal
from goalloop.workspace import Workspace

PROPOSAL_FILE = "proposal.json"


def save_proposal(attempt_dir: Path, proposal: Proposal) -> None:
    """Keep what a proposal reported (its cost above all) until its row is written."""
    (attempt_dir / PROPOSAL_FILE).write_text(json.dumps(asdict(proposal)), encoding="utf-8")


def _saved_proposal(attempt_dir: Path) -> Proposal:
    try:
        return Proposal(**json.loads((attempt_dir / PROPOSAL_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return Proposal(cost_usd=None)


def reconcile(workspace: Workspace, ledger: Ledger, history: list[AttemptRecord], base_commit: str) -> list[AttemptRecord]:
    """Repair git and the ledger after an unclean stop; return the full history, lost attempts included."""
    kill_leftover_group(ledger.run_dir / CHILD_PID_FILE)
    workspace.reopen(base_commit)
    history = list(history)
    kept = next((r for r in reversed(history) if r.verdict in ("baseline", "keep")), None)
    kept_commit = kept.kept_commit if kept else base_commit
    recorded = {r.iteration for r in history}
    refs = workspace.attempt_refs()

    for iteration in sorted(n for n in refs if n not in recorded and n > 0):
        history.append(_lost(ledger, iteration, refs[iteration], kept_commit, "killed before it was judged"))

    head = workspace.head()
    if head not in refs.values() and (head != kept_commit or workspace.has_uncommitted_changes()):
        iteration = max((r.iteration for r in history), default=0) + 1
        if history:  # without a baseline there was no proposal yet: the changes are the check's
            commit = workspace.commit_attempt(iteration, kept_commit, f"goalloop {workspace.run_id} #{iteration}: lost")
            if commit.sha:
                history.append(_lost(ledger, iteration, commit.sha, kept_commit, "killed while proposing"))

    if kept and workspace.branch_head() != kept_commit:
        workspace.move_branch(kept_commit)
    workspace.reset_to(kept_commit)
    return history


def _lost(ledger: Ledger, iteration: int, sha: str, kept_commit: str, how: str) -> AttemptRecord:
    proposal = _saved_proposal(ledger.attempt_dir(iteration))
    record = AttemptRecord(
        iteration=iteration,
        verdict="crash",
        description=proposal.description or f"attempt {iteration}",
        commit=sha,
        cost_usd=proposal.cost_usd,
        tokens=proposal.tokens,
        reason=f"lost: the run was {how}; see refs/goalloop/{ledger.run_dir.name}/{iteration}",
        kept_commit=kept_commit,
    )
    ledger.record(record)
    return record
