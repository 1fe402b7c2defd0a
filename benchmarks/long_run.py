"""Whether an attempt costs the same at attempt 10,000 as at attempt 100: ratios measured within one run.

A real `goalloop run` (subprocess, sys.executable) per proposer, on a small repository, with a check that
never improves (`echo score: 1`, so every attempt after the baseline is a discard), patience unset and
budget.iterations N:
  command   `echo $GOALLOOP_ITERATION > n.txt` (a process a proposal, a prompt written every attempt)
  search    the search proposer, random sampler, one float knob
The cost of attempt i is the growth of the ledger's `elapsed` from row i-1 to row i (everything the runner
does for the attempt: the proposal, git, the check, the ledger, the prompt). Printed: the median cost over
attempts 100-200 and over the last 100 (N-100 .. N) and their ratio, and the median of the last 100 of each thousand (growth shows as a trend,
load as a jump). Target: <= 1.05.

TPE's own cost grows with the trials (it models all of them each time it samples): measured apart,
in-process, as the median ask + tell of an in-memory study at trials 100-200 and near 1,000 and 2,000.

    .venv/bin/python benchmarks/long_run.py [--attempts 10000] [--proposers command,search] [--quick]
    .venv/bin/python benchmarks/long_run.py --profile PATH   # also writes a cProfile of the search run
    .venv/bin/python benchmarks/long_run.py --from-run RUN_DIR  # the same figures from a run folder, even one
                                                                 # still going (its last 100 attempts so far)

--quick: 1,000 attempts (windows 100-200 and 900-1,000) and TPE up to 1,000 trials.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_runs import IDENTITY, costs_of, make_repo, only_run

WINDOW = 100
EARLY = 100
TARGET = 1.05


def goal(kind: str, attempts: int, repo: Path) -> dict:
    proposers = {
        "command": {"kind": "command", "run": 'echo "$GOALLOOP_ITERATION" > n.txt'},
        "search": {"kind": "search", "sampler": "random", "seed": 0,
                   "params": {"x": {"file": "knob.py", "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}},
    }
    return {"repo": str(repo), "check": {"run": "echo score: 1", "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": attempts}, "proposer": proposers[kind]}


def run(kind: str, attempts: int, folder: Path, profile: Path | None) -> list[float]:
    """Run the goal; the cost of each attempt 1..N in seconds (index 0 is attempt 1)."""
    repo, home = folder / kind / "repo", folder / kind / "home"
    make_repo(repo, {"knob.py": "X = 0.5\n", "n.txt": "0\n"})
    goal_path = folder / kind / "goal.yaml"
    goal_path.write_text(yaml.safe_dump(goal(kind, attempts, repo)))
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [sys.executable, *profiler, "-m", "goalloop", "run", str(goal_path), "--home", str(home)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env={**os.environ, **IDENTITY}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != (0 if profile else 1):  # under cProfile the exit code is lost
        sys.exit(f"{kind}: goalloop run exited {done.returncode}, not 1 (budget spent):\n{done.stderr[-2000:]}")
    print(f"  {kind}: {attempts:,} attempts in {time.perf_counter() - started:.0f}s", flush=True)
    return costs_of(only_run(home))


def window(costs: list[float], first: int, last: int) -> float:
    """The median cost of attempts first+1 .. last."""
    return statistics.median(costs[first:last])


def tpe_costs(trials: int) -> dict[int, float]:
    """TPE's own median ask + tell in ms (in-memory study, one float), at trials 100-200 and the last 100 of
    each thousand."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    spent: list[float] = []
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, 1.0 + 0 * x)
        spent.append(time.perf_counter() - started)
    ends = [EARLY + WINDOW, *range(1000, trials + 1, 1000)]
    return {end: 1000 * statistics.median(spent[end - WINDOW:end]) for end in ends}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--proposers", default="command,search")
    parser.add_argument("--tpe-trials", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1,000 attempts and 1,000 TPE trials")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the search run here")
    parser.add_argument("--from-run", type=Path, help="print the figures of this run folder and stop")
    options = parser.parse_args()
    if options.from_run:
        costs = costs_of(options.from_run)
        early, late = window(costs, EARLY, EARLY + WINDOW), window(costs, len(costs) - WINDOW, len(costs))
        print(f"{options.from_run.name}: {len(costs):,} attempts; ms/attempt 100-200 {1000 * early:.1f}, "
              f"{len(costs) - WINDOW:,}-{len(costs):,} {1000 * late:.1f}; ratio {late / early:.3f}")
        return
    attempts = 1000 if options.quick else options.attempts
    tpe_trials = 1000 if options.quick else options.tpe_trials
    if attempts < EARLY + 2 * WINDOW and not options.profile:
        sys.exit(f"--attempts must be at least {EARLY + 2 * WINDOW}")
    print(f"python {sys.executable}; {attempts:,} attempts a run, check `echo score: 1` (never improves)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="goalloop-long-run-") as tmp:
        for kind in options.proposers.split(","):
            costs = run(kind, attempts, Path(tmp), options.profile if kind == "search" else None)
            early, late = window(costs, EARLY, EARLY + WINDOW), window(costs, attempts - WINDOW, attempts)
            rows.append((kind, early, late))
            print(f"  {kind}: median ms/attempt over the last {WINDOW} of each thousand (a trend shows growth; a "
                  "jump in one window, load): " + " ".join(f"{1000 * window(costs, end - WINDOW, end):.1f}"
                                                          for end in range(1000, attempts + 1, 1000)), flush=True)
    print(f"\n{'proposer':10} {'ms/attempt 100-200':>20} {f'ms/attempt {attempts - WINDOW:,}-{attempts:,}':>24} {'ratio':>7}")
    for kind, early, late in rows:
        verdict = "met" if late / early <= TARGET else "NOT met"
        print(f"{kind:10} {1000 * early:20.1f} {1000 * late:24.1f} {late / early:7.3f}   target <= {TARGET}: {verdict}")
    tpe = tpe_costs(tpe_trials)
    first = tpe[EARLY + WINDOW]
    print("\nTPE's own ask + tell (in-memory study, one float), median ms over 100 trials ending at:")
    for end, ms in tpe.items():
        print(f"  trial {end:>6,}: {ms:7.2f} ms  ({ms / first:.1f}x trials 100-200)")


if __name__ == "__main__":
    main()
