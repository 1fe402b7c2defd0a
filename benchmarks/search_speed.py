"""The search proposer's wall time per attempt over a bare Optuna loop calling the same check, in one run.

A (goalloop): `goalloop run` (subprocess, sys.executable) of a search goal, TPE with a seed, one float knob
X in knob.py, the check `python score.py` printing `score: X` (maximised). The cost of attempt i is the
growth of the ledger's `elapsed` from row i-1 to row i.
B (the floor): what a user would write instead, in one process: an in-memory Optuna study with the same
sampler and seed, the baseline added as a known trial as goalloop does, then per trial ask, write the
value into knob.py, run the check with subprocess.run, parse the score, tell.
A and B are run alternately (A, B, B, A, ...), each a fresh repository and `--attempts` attempts; the first
10 attempts of each run are left out (start-up), then the medians per attempt and their ratio are printed,
with the check's own time within B (its subprocess.run) for scale, and whether both followed the same
trajectory (the same metric at every attempt).

    .venv/bin/python benchmarks/search_speed.py [--attempts 60] [--pairs 3] [--quick]

Target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_runs import IDENTITY, attempt_rows, make_repo, only_run

SCORE_PY = "import knob\nprint(f'score: {knob.X}')\n"
KNOB = re.compile(r"^X = (\S+)$", re.M)
CHECK = f"{sys.executable} score.py"
SEED = 0
SKIP = 10
CHECK_TIMES: list[float] = []
TARGET = 1.3


def knob_repo(root: Path) -> Path:
    return make_repo(root, {"knob.py": "X = 0.5\n", "score.py": SCORE_PY})


def goalloop_run(folder: Path, attempts: int) -> tuple[list[float], list[float]]:
    """(seconds per attempt, metric per attempt) of a goalloop search run."""
    repo, home = folder / "repo", folder / "home"
    knob_repo(repo)
    goal = {"repo": str(repo), "check": {"run": CHECK, "metric": r"^score: (\S+)"},
            "target": {"direction": "maximize"}, "budget": {"iterations": attempts},
            "proposer": {"kind": "search", "sampler": "tpe", "seed": SEED,
                         "params": {"x": {"file": "knob.py", "pattern": KNOB.pattern, "low": 0.0, "high": 1.0}}}}
    (folder / "goal.yaml").write_text(yaml.safe_dump(goal))
    done = subprocess.run([sys.executable, "-m", "goalloop", "run", str(folder / "goal.yaml"), "--home", str(home)],
                          cwd=folder, env={**os.environ, **IDENTITY}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 1:
        sys.exit(f"goalloop run exited {done.returncode}, not 1 (budget spent):\n{done.stderr[-2000:]}")
    rows = attempt_rows(only_run(home))
    costs = [rows[n]["elapsed"] - rows[n - 1]["elapsed"] for n in range(1, attempts + 1)]
    return costs, [rows[n]["metric"] for n in range(1, attempts + 1)]


def bare_run(folder: Path, attempts: int) -> tuple[list[float], list[float]]:
    """(seconds per attempt, metric per attempt) of the bare Optuna loop; the check's own times go to
    CHECK_TIMES."""
    import optuna

    from goalloop.goal import SearchParam
    from goalloop.proposers.search import format_float

    repo = knob_repo(folder / "bare")
    param = SearchParam(file="knob.py", pattern=KNOB.pattern, low=0.0, high=1.0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def check() -> float:
        started = time.perf_counter()
        done = subprocess.run(CHECK, shell=True, cwd=repo, capture_output=True, text=True, timeout=60)
        CHECK_TIMES.append(time.perf_counter() - started)
        return float(re.search(r"^score: (\S+)", done.stdout, re.M).group(1))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED, n_startup_trials=5))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, value=check(),
                                              distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}))
    costs, metrics = [], []
    for _ in range(attempts):
        started = time.perf_counter()
        trial = study.ask()
        text = format_float(trial.suggest_float("x", 0.0, 1.0), param)
        (repo / "knob.py").write_text(KNOB.sub(f"X = {text}", (repo / "knob.py").read_text()))
        value = check()
        study.tell(trial, value)
        costs.append(time.perf_counter() - started)
        metrics.append(value)
    return costs, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="30 attempts, 2 pairs")
    options = parser.parse_args()
    attempts, pairs = (30, 2) if options.quick else (options.attempts, options.pairs)
    a_costs, b_costs, same = [], [], True
    with tempfile.TemporaryDirectory(prefix="goalloop-search-speed-") as tmp:
        for n in range(pairs):
            order = [goalloop_run, bare_run] if n % 2 == 0 else [bare_run, goalloop_run]
            results = {}
            for runner in order:
                folder = Path(tmp) / f"{n}-{runner.__name__}"
                folder.mkdir()
                results[runner] = runner(folder, attempts)
            a_costs += results[goalloop_run][0][SKIP:]
            b_costs += results[bare_run][0][SKIP:]
            same &= [f"{m:.6g}" for m in results[goalloop_run][1]] == [f"{m:.6g}" for m in results[bare_run][1]]
    a, b = statistics.median(a_costs), statistics.median(b_costs)
    print(f"python {sys.executable}; {pairs} pairs of runs, {attempts} attempts each (first {SKIP} left out)")
    print(f"goalloop search   {1000 * a:7.1f} ms/attempt")
    print(f"bare Optuna loop  {1000 * b:7.1f} ms/attempt")
    print(f"the check alone   {1000 * statistics.median(CHECK_TIMES):7.1f} ms (within the bare loop)")
    print(f"ratio             {a / b:7.2f}   target <= {TARGET}: {'met' if a / b <= TARGET else 'NOT met'}")
    print(f"same trajectory (the metric of every attempt): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
