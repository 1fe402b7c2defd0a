"""Bring git and the ledger back into agreement after a run stopped at any point (kill -9 included).

The ledger row of an attempt is written before the branch moves, and its commit and ref before the row,
so a stopped run can be in one of a few states, each repaired here:

- an attempt committed (its ref exists) but not judged: Ctrl-C, SIGTERM or SIGHUP stopped it (the loop
  commits what the proposal left) or a kill did. It is set aside: its commit moves to
  `refs/goalloop/<run-id>/unjudged/<n>-<time>`, its folder to `attempts/NNNN.unjudged-<time>/`, an
  `attempt_set_aside` event says so, and the attempt is proposed again; the spend its proposal reported
  is charged to the row of the attempt proposed in its place, so the budget pays for both;
- a proposal that was still editing the worktree when the run died: its files are committed first, then
  set aside as above, so nothing a proposer wrote is lost and nothing unjudged counts as an attempt;
- a recorded keep whose branch did not move: the branch is moved;
- a parallel round killed mid-way: every slot's worktree is handled as above (round.json says which
  attempt each slot was proposing); an attempt number below one already recorded (the round's rows were
  cut part-way) is recorded as lost instead, so attempt numbers stay contiguous;
- a worktree that was deleted is recreated at the last kept commit; a proposal that had finished when
  that happened (its proposal.json was saved, it has no commit) is set aside with its spend;
- lock files a killed git left in the run's own metadata and refs are removed (logged), once no live git
  process works there; the user's own locks are never looked at;
- finally every worktree is put back exactly at the last kept commit, and what the dead run left running
  in every slot is killed first.

Unjudged attempts are not re-checked: a verdict needs the proposal's context, which died with the process;
proposing afresh from the kept state costs one proposal and judges what is committed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from goalloop.check import child_pid_files, kill_leftover_group
from goalloop.git_objects import remove_stale_temp_objects
from goalloop.ledger import SET_ASIDE_EVENT, AttemptRecord, Ledger
from goalloop.proposers.base import Proposal
from goalloop.workspace import Workspace

PROPOSAL_FILE = "proposal.json"
ROUND_FILE = "round.json"


def save_proposal(attempt_dir: Path, proposal: Proposal) -> None:
    """Keep what a proposal reported (its cost above all) until its row is written; nothing for one known
    to have cost nothing (a missing file charges nothing either)."""
    if proposal.cost_usd == 0 and proposal.tokens == 0:
        return
    reported = {key: value for key, value in asdict(proposal).items() if key != "files"}
    (attempt_dir / PROPOSAL_FILE).write_text(json.dumps(reported), encoding="utf-8")


def _saved_proposal(attempt_dir: Path) -> Proposal:
    try:
        return Proposal(**json.loads((attempt_dir / PROPOSAL_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return Proposal(cost_usd=None)


def with_set_aside_spend(attempt_dir: Path, proposal: Proposal) -> Proposal:
    """`proposal` charged also with what the earlier tries of the same attempt spent, those a fault of the
    machine set aside unjudged (`NNNN.unjudged-<time>/`): the budget pays for every try."""
    earlier = [_saved_proposal(folder) for folder in _set_aside_folders(attempt_dir.parent).get(attempt_dir.name, [])]
    usd = [p.cost_usd for p in earlier if p.cost_usd is not None]
    tokens = [p.tokens for p in earlier if p.tokens is not None]
    if not usd and not tokens:
        return proposal
    return replace(proposal, cost_usd=(proposal.cost_usd or 0.0) + sum(usd) if usd else proposal.cost_usd,
                   tokens=(proposal.tokens or 0) + sum(tokens) if tokens else proposal.tokens)


_SET_ASIDE_FOLDERS: dict[Path, dict[str, list[Path]]] = {}


def _set_aside_folders(attempts: Path) -> dict[str, list[Path]]:
    """Attempt folder name -> its set-aside tries (`NNNN.unjudged-<time>/`, oldest first), listed once a
    process (the folder holds one entry an attempt; set_aside is the only writer and starts it afresh)."""
    if attempts not in _SET_ASIDE_FOLDERS:
        found: dict[str, list[Path]] = {}
        for entry in sorted(attempts.glob("*.unjudged-*")):
            found.setdefault(entry.name.split(".unjudged-", 1)[0], []).append(entry)
        _SET_ASIDE_FOLDERS[attempts] = found
    return _SET_ASIDE_FOLDERS[attempts]


def write_round(run_dir: Path, iterations: dict[int, int], parents: dict[int, tuple[int, str]] | None = None) -> None:
    """Note which attempt each slot of a round is proposing (and, in a tree search, from which parent: its
    attempt number and commit), so a resume can name what it left and commit it on the right parent."""
    parents = parents or {}
    slots = {str(k): v if k not in parents else {"iteration": v, "parent": parents[k][0], "commit": parents[k][1]}
             for k, v in iterations.items()}
    (run_dir / ROUND_FILE).write_text(json.dumps(slots), encoding="utf-8")


def _read_round(run_dir: Path) -> tuple[dict[int, int], dict[int, tuple[int, str]]]:
    """(slot -> attempt, slot -> (parent attempt, parent commit)) of the round under way when the run stopped."""
    iterations: dict[int, int] = {}
    parents: dict[int, tuple[int, str]] = {}
    try:
        for key, value in json.loads((run_dir / ROUND_FILE).read_text(encoding="utf-8")).items():
            if isinstance(value, dict):
                iterations[int(key)] = int(value["iteration"])
                parents[int(key)] = (int(value["parent"]), str(value["commit"]))
            else:
                iterations[int(key)] = int(value)
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}, {}
    return iterations, parents


def reconcile(workspaces: list[Workspace], ledger: Ledger, history: list[AttemptRecord],
              base_commit: str, on_set_aside: Callable[[dict[str, Any]], None] | None = None) -> list[AttemptRecord]:
    """Repair git and the ledger after an unclean stop; return the full history, lost attempts included.

    `workspaces` are the run's slots (one unless the run is parallel); each is reopened and reset.
    `on_set_aside` hears of each attempt set aside to be proposed again (the fields of its event).
    """
    for pid_file in child_pid_files(ledger.run_dir):
        kill_leftover_group(pid_file)
    for iteration in ledger.drop_rows_not_in({r.iteration for r in history}):
        ledger.event("row_without_event_dropped", iteration=iteration)
    for workspace in workspaces:
        for lock in workspace.remove_stale_locks():
            ledger.event("stale_lock_removed", path=str(lock))
        for note in workspace.reopen(base_commit):
            ledger.event("worktree_repaired", worktree=str(workspace.worktree), note=note)
    for temp in remove_stale_temp_objects(workspaces[0].common_dir):
        ledger.event("stale_temp_object_removed", path=str(temp))
    first = workspaces[0]
    history = list(history)
    kept = next((r for r in reversed(history) if r.verdict in ("baseline", "keep")), None)
    kept_commit = kept.kept_commit if kept else base_commit
    recorded = {r.iteration for r in history}
    refs = first.attempt_refs()
    lost: dict[int, tuple[str | None, str]] = {
        n: (refs[n], "stopped before it was judged") for n in refs if n not in recorded and n > 0
    }

    proposing, parents = _read_round(ledger.run_dir)
    if len(workspaces) == 1 and not parents:
        proposing = {}
    lost_parents: dict[int, int] = {}
    for slot, workspace in enumerate(workspaces):
        head = workspace.head()
        parent, start = parents.get(slot, (None, kept_commit))
        if (head in (start, kept_commit, base_commit) or head in refs.values()) and not workspace.has_uncommitted_changes():
            continue  # at a kept state, or at an attempt's own commit: nothing here is only in the worktree
        if any(workspace.holds_exactly(sha) for sha, _ in lost.values() if sha):
            continue  # a search attempt killed in its check: HEAD at its parent, its files committed already
        if not history:  # without a baseline there was no proposal yet: the changes are the check's
            continue
        iteration = proposing.get(slot)
        if iteration is None or iteration in recorded or iteration in lost:
            iteration = max([r.iteration for r in history] + list(lost), default=0) + 1
        commit = workspace.commit_attempt(iteration, start, f"goalloop {workspace.run_id} #{iteration}: lost")
        if commit.sha:
            lost[iteration] = (commit.sha, "killed while proposing")
            if parent is not None:
                lost_parents[iteration] = parent

    if history:  # a finished proposal whose commit never happened (its worktree vanished): its cost counts
        for iteration in _proposed_unrecorded(ledger, recorded | set(lost)):
            lost[iteration] = (None, "stopped after proposing, before the change was committed")
    last = max(recorded, default=0)
    if history and lost:  # a parallel round cut while writing its rows leaves a number below the last row
        for iteration in range(1, last):
            if iteration not in recorded and iteration not in lost:
                lost[iteration] = (None, "killed while proposing, before it changed anything")
    for slot, iteration in proposing.items():  # a tree's attempt lost after its commit: its parent is known
        if slot in parents and iteration in lost:
            lost_parents.setdefault(iteration, parents[slot][0])
    for iteration in sorted(lost):
        sha, how = lost[iteration]
        if iteration > last and history:
            aside = set_aside(first, ledger, iteration, sha, how)
            if on_set_aside is not None:
                on_set_aside(aside)
        else:
            history.append(_lost(ledger, iteration, sha, kept_commit, how, lost_parents.get(iteration)))

    if kept and first.branch_head() != kept_commit:
        first.move_branch(kept_commit)
    for workspace in workspaces:
        workspace.reset_to(kept_commit)
    return history


def set_aside(workspace: Workspace, ledger: Ledger, iteration: int, sha: str | None, how: str) -> dict[str, Any]:
    """Set unjudged attempt `iteration` aside (its ref, its folder) so that it is proposed again; say so in
    the ledger and return what the event says."""
    folder = ledger.run_dir / "attempts" / f"{iteration:04d}"
    proposal = _saved_proposal(folder)
    stamp = _free_stamp(workspace, folder, iteration, bool(sha))
    ref = workspace.move_aside(iteration, sha, stamp) if sha else None
    moved = None
    if folder.is_dir():
        moved = folder.with_name(f"{folder.name}.unjudged-{stamp}")
        folder.rename(moved)
        _SET_ASIDE_FOLDERS.clear()
    fields = {"iteration": iteration, "how": how, "ref": ref, "folder": moved.name if moved else None,
              "description": proposal.description, "cost_usd": proposal.cost_usd, "tokens": proposal.tokens}
    ledger.event(SET_ASIDE_EVENT, **fields)
    return fields


def _free_stamp(workspace: Workspace, folder: Path, iteration: int, with_ref: bool) -> str:
    """The `<time>` a set-aside is named by (seconds), unused by an earlier one: a run stopped twice in the same
    second (a resume killed at once) sets the same attempt aside again, then as `<time>-2`, `<time>-3`..."""
    now, n = str(int(time.time())), 1
    while True:
        stamp = now if n == 1 else f"{now}-{n}"
        if not folder.with_name(f"{folder.name}.unjudged-{stamp}").exists() and not (
                with_ref and workspace.ref_exists(workspace.aside_ref(iteration, stamp))):
            return stamp
        n += 1


def _proposed_unrecorded(ledger: Ledger, known: set[int]) -> list[int]:
    """Attempts with a saved proposal.json but neither a row nor a commit."""
    found = []
    for saved in (ledger.run_dir / "attempts").glob(f"*/{PROPOSAL_FILE}"):
        name = saved.parent.name
        if name.isdigit() and int(name) > 0 and int(name) not in known:
            found.append(int(name))
    return sorted(found)


def _lost(ledger: Ledger, iteration: int, sha: str | None, kept_commit: str, how: str,
          parent: int | None = None) -> AttemptRecord:
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
        parent=parent,
    )
    ledger.record(record)
    return record
