"""Greedy against the tree strategies of `search:`, on a deceptive landscape and on a plain convex bowl.

Every run is a real `goalloop run` (the CLI in a subprocess, sys.executable) on a tmp repository holding
`bits.txt`, a string of N bits, all zero at the start. The proposer is a command (awk) that flips one random
bit of whatever state its worktree holds (the parent the loop picked); the bit depends only on the seed and
the attempt number, so every strategy sees the same stream of mutations. The check (awk) prints the score.

    trap   N = 10 bits: the first 7 are traps, the last 3 lead on. From the start (score 0) one trap bit
           scores 10 and is a dead end (every change of it scores 0); a good bit scores 5, two 10, three
           15 (the target) as long as no trap bit is set. A greedy run whose first improvement is a trap
           (7 times in 10) is stuck there for good; a tree can come back to the start.
    bowl   N = 10 bits, the score is the number of ones (OneMax, a convex bowl); target 10. Any proposal
           from the best state is the right thing to do, so exploring costs attempts.

For each strategy and landscape, over the seeds: how many runs reached the target within the budget, and
the median number of attempts to reach it (over the runs that did; for the bowl, with every run reaching
it, also the ratio to greedy's median). One table, measured in one run:

    .venv/bin/python benchmarks/tree_search.py [--seeds 20] [--trap-budget 60] [--bowl-budget 200] [--jobs 2]

Targets: a tree strategy reaches the trap's target in at least 2x as many seeds as greedy, and takes at
most 1.2x greedy's median attempts on the bowl.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
BITS = 10
TRAPS = 7

SCORES = {  # awk, not Python: the check runs every attempt and should cost little beside the loop itself
    "trap": (f"awk '{{t = 0; g = 0; for (i = 1; i <= {BITS}; i++) if (i <= {TRAPS}) t += substr($0, i, 1); "
             "else g += substr($0, i, 1); print \"score: \" (g == 0 ? (t == 1 ? 10 : 0) : (t ? 0 : 5 * g))}' bits.txt"),
    "bowl": "awk '{print \"score: \" gsub(/1/, \"1\")}' bits.txt",
}
TARGETS = {"trap": 5 * (BITS - TRAPS), "bowl": BITS}

MUTATE = """\
awk -v seed="$BENCH_SEED" -v n="$GOALLOOP_ITERATION" 'BEGIN {
  srand(seed * 100003 + n); getline bits < "bits.txt"; close("bits.txt")
  i = int(rand() * length(bits)) + 1; flip = substr(bits, i, 1) == "0" ? "1" : "0"
  print substr(bits, 1, i - 1) flip substr(bits, i + 1) > "bits.txt"
  print "flip bit " i - 1 " of the state of attempt " ENVIRON["GOALLOOP_PARENT"] }'
"""

STRATEGIES = {
    "greedy": None,
    "best-first (top-k, k: 1)": {"strategy": "top-k", "k": 1},
    "epsilon-greedy (0.1)": {"strategy": "epsilon-greedy"},
    "softmax (0.1)": {"strategy": "softmax"},
}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **IDENTITY})


def attempts_to_target(root: Path, landscape: str, search: dict | None, seed: int, budget: int) -> int | None:
    """One goalloop run; the attempt that reached the target, or None."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    (repo / "bits.txt").write_text("0" * BITS + "\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "start")
    (root / "mutate.sh").write_text(MUTATE)
    goal = {"name": "bench", "repo": "repo", "editable": ["bits.txt"],
            "check": {"run": SCORES[landscape], "metric": r"score: (\S+)"},
            "target": {"value": TARGETS[landscape]}, "budget": {"iterations": budget},
            "proposer": {"kind": "command", "run": f"sh {root / 'mutate.sh'}"}}
    if search is not None:
        goal["search"] = {**search, "seed": seed}
    (root / "goal.yaml").write_text(yaml.safe_dump(goal))
    run = subprocess.run([sys.executable, "-m", "goalloop", "run", "goal.yaml", "--home", str(root / "home"), "-q"],
                         cwd=root, capture_output=True, text=True, env={**os.environ, "BENCH_SEED": str(seed)})
    if run.returncode not in (0, 1):
        raise SystemExit(f"goalloop run exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
    found = list((root / "home" / "runs").glob("*/results.tsv"))
    if not found:
        raise SystemExit(f"goalloop run left no results.tsv:\n{run.stdout}\n{run.stderr}")
    results = found[0]
    for line in results.read_text().splitlines()[2:]:
        cells = line.split("\t")
        if cells[2] and float(cells[2]) >= TARGETS[landscape]:
            return int(cells[0])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trap-budget", type=int, default=60)
    parser.add_argument("--bowl-budget", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    args = parser.parse_args()
    budgets = {"trap": args.trap_budget, "bowl": args.bowl_budget}
    jobs = [(name, landscape, seed) for landscape in ("trap", "bowl") for name in STRATEGIES for seed in range(args.seeds)]
    with tempfile.TemporaryDirectory(prefix="goalloop-tree-bench-") as tmp:
        def one(job: tuple[str, str, int]) -> int | None:
            name, landscape, seed = job
            root = Path(tmp) / f"{jobs.index(job)}"
            return attempts_to_target(root, landscape, STRATEGIES[name], seed, budgets[landscape])

        with ThreadPoolExecutor(args.jobs) as pool:
            found = dict(zip(jobs, pool.map(one, jobs)))

    def column(name: str, landscape: str) -> tuple[int, float | None]:
        reached = [found[(name, landscape, s)] for s in range(args.seeds) if found[(name, landscape, s)] is not None]
        return len(reached), statistics.median(reached) if reached else None

    print(f"{args.seeds} seeds; trap: {BITS} bits, {TRAPS} traps, target {TARGETS['trap']}, budget {args.trap_budget} "
          f"attempts; bowl: OneMax over {BITS} bits, target {TARGETS['bowl']}, budget {args.bowl_budget} attempts")
    print(f"{'strategy':<26} {'trap reached':>12} {'x greedy':>9} {'median':>7}   {'bowl reached':>12} {'median':>7} "
          f"{'x greedy':>9}")
    greedy_trap, _ = column("greedy", "trap")
    _, greedy_bowl = column("greedy", "bowl")
    for name in STRATEGIES:
        (trap_n, trap_med), (bowl_n, bowl_med) = column(name, "trap"), column(name, "bowl")
        ratio = f"{trap_n / greedy_trap:.2f}" if greedy_trap else "-"
        slower = f"{bowl_med / greedy_bowl:.2f}" if bowl_med and greedy_bowl else "-"
        print(f"{name:<26} {f'{trap_n}/{args.seeds}':>12} {ratio:>9} {trap_med if trap_med is not None else '-':>7}   "
              f"{f'{bowl_n}/{args.seeds}':>12} {bowl_med if bowl_med is not None else '-':>7} {slower:>9}")


if __name__ == "__main__":
    main()
