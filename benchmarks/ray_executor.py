"""Checks on Ray against checks in threads, and what shipping an attempt of a big repository costs, in one run.

1. The same 4-slot goal (scripted proposals, a check that sleeps 2 s) run twice through the real CLI:
   `executor: threads` and `executor: {kind: ray}` on a local cluster this script starts. Rate: attempts
   divided by the loop's own elapsed time from the baseline's row to the last row (events.jsonl), so
   start-up, connecting to Ray and the baseline are not counted on either side; the two kinds alternate,
   --repeats times each, and the medians are compared. Target: ray / threads >= 0.85 on one machine.
2. The per-attempt cost of shipping a commit of a 20,000-file repository: RayChecks runs a check that
   does nothing (`true`) for a series of attempt commits (each changes one file), on that repository and
   on a one-file one; the difference of the medians is what the big tree costs per attempt (the diff made
   and applied, the scratch checkout reset and cleaned). The first check of a slot, which extracts the
   base tree on the worker, is shown apart.

    .venv/bin/python benchmarks/ray_executor.py [--attempts 16] [--sleep 2] [--repeats 3] [--files 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
SCORE_PY = """\
import sys, time
import knob
time.sleep(float(sys.argv[1]))
print(f"score: {knob.X}")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **IDENTITY}, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def attempts_per_minute(tmp: Path, repo: Path, executor: dict, attempts: int, sleep: float) -> float:
    name = f"bench-{executor.get('kind', 'threads')}-{len(list(tmp.glob('bench-*.yaml')))}"
    steps = [{"description": f"X={i}", "files": {"knob.py": f"X = {i}\n"}} for i in range(1, attempts + 1)]
    goal = {"name": name, "repo": str(repo), "parallel": 4, "executor": executor,
            "check": {"run": f"{sys.executable} score.py {sleep}", "metric": r"^score: (\S+)", "timeout": "5m"},
            "budget": {"iterations": attempts}, "proposer": {"kind": "scripted", "steps": steps}}
    goal_path = tmp / f"{name}.yaml"
    goal_path.write_text(yaml.safe_dump(goal, sort_keys=False), encoding="utf-8")
    home = tmp / "home"
    proc = subprocess.run([sys.executable, "-m", "goalloop", "run", str(goal_path), "--home", str(home), "-q"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 1:
        raise SystemExit(f"the {name} run ended with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    run_dir = next(p for p in (home / "runs").iterdir() if p.name.startswith(name))
    rows = [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines()) if e["event"] == "attempt"]
    return attempts / (rows[-1]["elapsed"] - rows[0]["elapsed"]) * 60


def shipping_seconds(tmp: Path, cluster, repo: Path, changes: int) -> tuple[float, list[float]]:
    """Seconds RayChecks takes for a do-nothing check: the first (base extracted) and the later ones."""
    from goalloop.executors import CheckJob
    from goalloop.executors.ray import RayChecks
    from goalloop.ledger import Ledger

    base = git(repo, "rev-parse", "HEAD")
    run_dir = tmp / f"run-{repo.name}"
    run_dir.mkdir()
    ledger = Ledger(run_dir)
    checks = RayChecks(cluster, ledger, repo, base, f"bench-{repo.name}")
    first_file = sorted(p for p in git(repo, "ls-files").splitlines())[0]
    seconds = []
    for number in range(changes + 1):
        if number:
            (repo / first_file).write_text(f"change {number}\n", encoding="utf-8")
            git(repo, "commit", "-q", "-am", f"attempt {number}")
        job = CheckJob(command="true", timeout=60, metric_pattern=None, metric_file=False, prefix="check",
                       log_dir=run_dir / f"{number:04d}", worktree=repo, goal_env={}, pid_file=run_dir / "child.pgid",
                       slot=0, iteration=number)
        job.log_dir.mkdir()
        started = time.monotonic()
        result = checks.run(job)
        seconds.append(time.monotonic() - started)
        if result.process.exit_code != 0:
            raise SystemExit(f"the shipped check failed: {result.problem} {result.process.excerpt()}")
    ledger.close()
    return seconds[0], seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds the check sleeps")
    parser.add_argument("--files", type=int, default=20_000, help="files in the big repository")
    parser.add_argument("--changes", type=int, default=8, help="attempt commits shipped per repository")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each executor, alternated")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from goalloop.executors.ray import connect

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    try:
        with tempfile.TemporaryDirectory(prefix="goalloop-bench-ray-") as folder:
            tmp = Path(folder)
            repo = make_repo(tmp / "repo", {"knob.py": "X = 0\n", "score.py": SCORE_PY})
            on_ray_goal = {"kind": "ray", "address": cluster.address, "num_cpus": 1, "scratch": str(tmp / "scratch")}
            rates: dict[str, list[float]] = {"threads": [], "ray": []}
            for _ in range(args.repeats):  # alternated, so a busy spell of the machine hits both sides
                rates["threads"].append(attempts_per_minute(tmp, repo, {"kind": "threads"}, args.attempts, args.sleep))
                rates["ray"].append(attempts_per_minute(tmp, repo, on_ray_goal, args.attempts, args.sleep))
            threads, on_ray = statistics.median(rates["threads"]), statistics.median(rates["ray"])
            print(f"4 slots, check sleeps {args.sleep:g}s, {args.attempts} attempts each, median of {args.repeats} runs")
            print(f"threads: {threads:7.2f} attempts/min")
            print(f"ray:     {on_ray:7.2f} attempts/min")
            print(f"ray / threads = {on_ray / threads:.3f}  (target >= 0.85)")

            config = SimpleNamespace(address=cluster.address, num_cpus=1, num_gpus=0, resources={}, fetch_from=None,
                                     scratch=str(tmp / "scratch"), retries=1)
            joined = connect(config, 1)
            big = make_repo(tmp / "big", {f"d{n // 100:03d}/f{n:05d}.txt": f"file {n}\n" * 8 for n in range(args.files)})
            small = make_repo(tmp / "small", {"f.txt": "file\n"})
            tar_bytes = len(subprocess.run(["git", "-C", str(big), "archive", "--format=tar", "HEAD"],
                                           capture_output=True, check=True).stdout)
            big_first, big_later = shipping_seconds(tmp, joined, big, args.changes)
            small_first, small_later = shipping_seconds(tmp, joined, small, args.changes)
            ray.shutdown()
            per_attempt = statistics.median(big_later) - statistics.median(small_later)
            print(f"shipping a commit of a {args.files:,}-file repository (base tar {tar_bytes / 1e6:.1f} MB, once a run):")
            print(f"  first check of a slot on a node (base extracted): {big_first:.2f}s (1-file repo {small_first:.2f}s)")
            print(f"  each later check: median {statistics.median(big_later):.3f}s vs {statistics.median(small_later):.3f}s"
                  f" for a 1-file repo: {per_attempt * 1000:.0f} ms an attempt for the big tree")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
