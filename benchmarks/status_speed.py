"""How long `goalloop status` and `goalloop runs` take on a run of 10,000 attempts.

Writes a synthetic run folder (run.json, events.jsonl, results.tsv) through goalloop's own Ledger, then
times the two commands as a user runs them (a fresh process each time, interpreter start included) and,
for scale, `python -c pass`. Target: well under a second.

    python benchmarks/status_speed.py [--attempts 10000]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goalloop.ledger import AttemptRecord, Ledger, RunMeta, utc_now


def make_run(home: Path, attempts: int) -> None:
    meta = RunMeta(run_id="bench-20260101-000000", goal_name="bench", goal_path="/dev/null", repo="/nonexistent",
                   base_commit="0" * 40, branch="goalloop/bench-20260101-000000", worktree="/nonexistent",
                   created_at=utc_now(), metric_goal=True, direction="maximize", target=None)
    ledger = Ledger.create(home / "runs" / meta.run_id, meta, "check: {run: true}\n")
    rng = random.Random(0)
    best = 0.0
    for n in range(attempts + 1):
        value = rng.random()
        verdict = "baseline" if n == 0 else ("keep" if value > best else rng.choice(["discard", "crash", "rejected"]))
        best = max(best, value) if verdict in ("baseline", "keep") else best
        ledger.record(AttemptRecord(iteration=n, verdict=verdict, description=f"attempt {n}: try something",
                                    commit=f"{n:040x}", metric=value, seconds=1.0, elapsed=float(n)))
    ledger.close()


def timed(args: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        make_run(home, options.attempts)
        print(f"run of {options.attempts:,} attempts written in {time.perf_counter() - started:.1f}s")
        python = timed([sys.executable, "-c", "pass"])
        status = timed([sys.executable, "-m", "goalloop", "status", "--home", str(home)])
        runs = timed([sys.executable, "-m", "goalloop", "runs", "--home", str(home)])
        print(f"python -c pass      {python * 1000:7.0f} ms (interpreter start)")
        print(f"goalloop status     {status * 1000:7.0f} ms   target < 1000 ms: {'met' if status < 1 else 'NOT met'}")
        print(f"goalloop runs       {runs * 1000:7.0f} ms   target < 1000 ms: {'met' if runs < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
