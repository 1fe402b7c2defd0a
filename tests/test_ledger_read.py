"""Reading a ledger back: every row, the events in order, the attempt under way, a torn last line.

The reader skips the phase events an attempt row followed (most of a long run's lines); these tests pin
what it must still return. The ledger is written by the real Ledger, as a run writes it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from goalloop.ledger import AttemptRecord, Ledger, RunMeta, read_run, utc_now
from goalloop.report.standing import in_progress


def new_ledger(tmp_path: Path) -> Ledger:
    meta = RunMeta(run_id="r-1", goal_name="g", goal_path="/dev/null", repo="/nonexistent", base_commit="0" * 40,
                   branch="goalloop/r-1", worktree="/nonexistent", created_at=utc_now(), metric_goal=True,
                   direction="maximize", target=None)
    return Ledger.create(tmp_path / "runs" / "r-1", meta, "check: {run: 'true'}\n")


def names(events: list[dict]) -> list[str]:
    return [f"{e['event']} {e.get('iteration', '')}".strip() for e in events]


def test_phases_before_a_row_are_skipped_and_the_rest_keep_their_order(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    ledger.event("run_started")
    ledger.event("phase", slot=0, iteration=0, phase="checking")
    ledger.record(AttemptRecord(0, "baseline", "baseline", metric=1.0, elapsed=1.0))
    ledger.event("phase", slot=0, iteration=1, phase="proposing")
    ledger.event("phase", slot=0, iteration=1, phase="checking")
    ledger.record(AttemptRecord(1, "discard", "try", metric=0.5, elapsed=2.0, tokens=None, cost_usd=None))
    ledger.event("phase", slot=0, iteration=2, phase="proposing")
    ledger.event("run_stopped", exit_code=130, state="interrupted", reason="interrupted")
    ledger.event("run_resumed")
    ledger.event("phase", slot=0, iteration=2, phase="proposing")
    ledger.event("phase", slot=0, iteration=2, phase="checking")
    ledger.close()

    record = read_run(ledger.run_dir)
    assert [(a.iteration, a.verdict, a.metric, a.tokens, a.cost_usd) for a in record.attempts] == [
        (0, "baseline", 1.0, 0, 0.0), (1, "discard", 0.5, None, None)]
    assert names(record.events) == ["run_started", "attempt 0", "attempt 1", "phase 2", "run_stopped",
                                    "run_resumed", "phase 2", "phase 2"]
    assert record.stop is None, "resumed after the stop"
    now = datetime.now(timezone.utc)
    [under_way] = in_progress(record, now)
    assert (under_way.iteration, under_way.phase) == (2, "checking")


def test_a_torn_last_line_and_fields_of_a_newer_version_are_read_past(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    ledger.record(AttemptRecord(0, "baseline", "baseline", metric=1.0))
    ledger.close()
    events = ledger.run_dir / "events.jsonl"
    newer = {"iteration": 1, "verdict": "keep", "description": "d", "metric": 2.0, "parent": 0, "event": "attempt",
             "ts": utc_now()}
    with events.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(newer) + "\n")
        stream.write('{"iteration": 2, "verdict": "disc')
    record = read_run(ledger.run_dir)
    assert [(a.iteration, a.verdict, a.metric) for a in record.attempts] == [(0, "baseline", 1.0), (1, "keep", 2.0)]
    assert record.kept is not None and record.kept.iteration == 1
