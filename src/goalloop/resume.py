"""Bring git and the ledger back into agreement after a run stopped at any point (kill -9 included).

The ledger row of an attempt is written before the branch moves, and its commit and ref before the row,
so a killed run can be in one of a few states, each repaired here:

- an attempt committed (its ref exists) but not recorded: recorded now as `crash`, reason "lost", with
  the cost its proposal had reported, so the budget counts it and the ref says where it is;
- a proposal that was still editing the worktree when the run died: its files are committed as an
  attempt of their own and recorded as lost, so nothing a proposer wrote is lost;
- a recorded keep whose branch did not move: the branch is moved;
- a parallel round killed mid-way: every slot's worktree is handled as above (round.json says which
  attempt each slot was proposing), and an attempt number the round used without leaving a commit is
  recorded as lost too, so attempt numbers stay contiguous;
- a worktree that was deleted is recreated at the last kept commit; a proposal that had finished when
  that happened (its proposal.json was saved, it has no commit) is recorded as lost with its cost;
- lock files a killed git left in the run's own metadata and refs are removed (logged), once no live git
  process works there; the user's own locks are never looked at;
- finally every worktree is put back exactly at the last kept commit, and what the dead run left running
  in every slot is killed first.

Lost attempts are not re-checked: a verdict needs the proposal's context, which died with the process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from goalloop.check import child_pid_files, kill_leftover_group
from goalloop.ledger import AttemptRecord, Ledger
from goalloop.proposers.base import Proposal
from goalloop.workspace import Workspace

PROPOSAL_FILE = "proposal.json"
ROUND_FILE = "round.json"


def save_proposal(attempt_dir: Path, proposal: Proposal) -> None:
    """Keep what a proposal reported (its cost above all) until its row is written."""
    (attempt_dir / PROPOSAL_FILE).write_text(json.dumps(asdict(proposal)), encoding="utf-8")


def _saved_proposal(attempt_dir: Path) -> Proposal:
    try:
        return Proposal(**json.loads((attempt_dir / PROPOSAL_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return Proposal(cost_usd=None)


def with_set_aside_spend(attempt_dir: Path, proposal: Proposal) -> Proposal:
    """`proposal` charged also with what the earlier tries of the same attempt spent, those a fault of the
    machine set aside unjudged (`NNNN.unjudged-<time>/`): the budget pays for every try."""
    earlier = [_saved_proposal(folder) for folder in sorted(attempt_dir.parent.glob(f"{attempt_dir.name}.unjudged-*"))]
    usd = [p.cost_usd for p in earlier if p.cost_usd is not None]
    tokens = [p.tokens for p in earlier if p.tokens is not None]
    if not usd and not tokens:
        return proposal
    return replace(proposal, cost_usd=(proposal.cost_usd or 0.0) + sum(usd) if usd else proposal.cost_usd,
                   tokens=(proposal.tokens or 0) + sum(tokens) if tokens else proposal.tokens)


def write_round(run_dir: Path, iterations: dict[int, int]) -> None:
    """Note which attempt each slot of a parallel round is proposing, so a resume can name what it left."""
    (run_dir / ROUND_FILE).write_text(json.dumps({str(k): v for k, v in iterations.items()}), encoding="utf-8")


def _read_round(run_dir: Path) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in json.loads((run_dir / ROUND_FILE).read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def reconcile(workspaces: list[Workspace], ledger: Ledger, history: list[AttemptRecord],
              base_commit: str) -> list[AttemptRecord]:
    """Repair git and the ledger after an unclean stop; return the full history, lost attempts included.

    `workspaces` are the run's slots (one unless the run is parallel); each is reopened and reset.
    """
    for pid_file in child_pid_files(ledger.run_dir):
        kill_leftover_group(pid_file)
    for workspace in workspaces:
        for lock in workspace.remove_stale_locks():
            ledger.event("stale_lock_removed", path=str(lock))
        for note in workspace.reopen(base_commit):
            ledger.event("worktree_repaired", worktree=str(workspace.worktree), note=note)
    first = workspaces[0]
    history = list(history)
    kept = next((r for r in reversed(history) if r.verdict in ("baseline", "keep")), None)
    kept_commit = kept.kept_commit if kept else base_commit
    recorded = {r.iteration for r in history}
    refs = first.attempt_refs()
    lost: dict[int, tuple[str | None, str]] = {
        n: (refs[n], "killed before it was judged") for n in refs if n not in recorded and n > 0
    }

    proposing = _read_round(ledger.run_dir) if len(workspaces) > 1 else {}
    for slot, workspace in enumerate(workspaces):
        head = workspace.head()
        if (head == kept_commit or head in refs.values()) and not workspace.has_uncommitted_changes():
            continue  # at the kept state, or at an attempt's own commit: nothing here is only in the worktree
        if not history:  # without a baseline there was no proposal yet: the changes are the check's
            continue
        iteration = proposing.get(slot)
        if iteration is None or iteration in recorded or iteration in lost:
            iteration = max([r.iteration for r in history] + list(lost), default=0) + 1
        commit = workspace.commit_attempt(iteration, kept_commit, f"goalloop {workspace.run_id} #{iteration}: lost")
        if commit.sha:
            lost[iteration] = (commit.sha, "killed while proposing")

    if history:  # a finished proposal whose commit never happened (its worktree vanished): its cost counts
        for iteration in _proposed_unrecorded(ledger, recorded | set(lost)):
            lost[iteration] = (None, "stopped after proposing, before the change was committed")
    if history and lost:  # a parallel round killed mid-way can leave a slot with nothing to show: a gap
        for iteration in range(1, max(lost)):
            if iteration not in recorded and iteration not in lost:
                lost[iteration] = (None, "killed while proposing, before it changed anything")
    for iteration in sorted(lost):
        sha, how = lost[iteration]
        history.append(_lost(ledger, iteration, sha, kept_commit, how))

    if kept and first.branch_head() != kept_commit:
        first.move_branch(kept_commit)
    for workspace in workspaces:
        workspace.reset_to(kept_commit)
    return history


def _proposed_unrecorded(ledger: Ledger, known: set[int]) -> list[int]:
    """Attempts with a saved proposal.json but neither a row nor a commit."""
    found = []
    for saved in (ledger.run_dir / "attempts").glob(f"*/{PROPOSAL_FILE}"):
        name = saved.parent.name
        if name.isdigit() and int(name) > 0 and int(name) not in known:
            found.append(int(name))
    return sorted(found)


def _lost(ledger: Ledger, iteration: int, sha: str | None, kept_commit: str, how: str) -> AttemptRecord:
    proposal = with_set_aside_spend(ledger.attempt_dir(iteration), _saved_proposal(ledger.attempt_dir(iteration)))
    record = AttemptRecord(
        iteration=iteration,
        verdict="crash",
        description=proposal.description or f"attempt {iteration}",
        commit=sha,
        cost_usd=proposal.cost_usd,
        tokens=proposal.tokens,
        reason=f"lost: the run was {how}" + (f"; see refs/goalloop/{ledger.run_dir.name}/{iteration}" if sha else ""),
        kept_commit=kept_commit,
    )
    ledger.record(record)
    return record
