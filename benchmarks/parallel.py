"""How well `parallel: N` scales: attempts per minute with N slots against N times the rate with one, in one run.

Both runs are real `goalloop run`s (the CLI in a subprocess) on the same tmp repository, with a scripted
proposer (instant) and a check that sleeps (default 2 s), so the rate measures the round machinery: N
worktrees reset, N proposals committed and checked at once, rows recorded, the branch moved. The rate is
attempts divided by the loop's own elapsed time from the baseline's row to the last row (from results'
`elapsed` in events.jsonl), so start-up and the baseline are not counted on either side.

    .venv/bin/python benchmarks/parallel.py [--parallel 8] [--attempts 16] [--sleep 2]

Prints both rates and efficiency = rate(N) / (N * rate(1)). Target: efficiency >= 0.80.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
SCORE_PY = """\
import sys, time
import knob
time.sleep(float(sys.argv[1]))
print(f"score: {knob.X}")
"""


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "knob.py").write_text("X = 0\n", encoding="utf-8")
    (root / "score.py").write_text(SCORE_PY, encoding="utf-8")
    env = {**os.environ, **IDENTITY}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    return root


def attempts_per_minute(tmp: Path, repo: Path, parallel: int, attempts: int, sleep: float) -> float:
    """Run the goal with `parallel` slots; attempts per minute of the loop's own elapsed time."""
    name = f"bench-p{parallel}"
    steps = [{"description": f"X={i}", "files": {"knob.py": f"X = {i}\n"}} for i in range(1, attempts + 1)]
    goal = {
        "name": name, "repo": str(repo), "parallel": parallel,
        "check": {"run": f"{sys.executable} score.py {sleep}", "metric": r"^score: (\S+)", "timeout": "5m"},
        "budget": {"iterations": attempts},
        "proposer": {"kind": "scripted", "steps": steps},
    }
    goal_path = tmp / f"{name}.yaml"
    goal_path.write_text(yaml.safe_dump(goal, sort_keys=False), encoding="utf-8")
    home = tmp / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "goalloop", "run", str(goal_path), "--home", str(home), "-q"],
        capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    if proc.returncode != 1:  # no target: the iteration budget ends the run
        raise SystemExit(f"run with parallel {parallel} ended with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    run_dir = next(p for p in (home / "runs").iterdir() if p.name.startswith(name))
    rows = [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines()) if e["event"] == "attempt"]
    assert len(rows) == attempts + 1, f"expected {attempts} attempts and the baseline, got {len(rows)} rows"
    seconds = rows[-1]["elapsed"] - rows[0]["elapsed"]
    return attempts / seconds * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--attempts", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds the check sleeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="goalloop-bench-parallel-") as folder:
        tmp = Path(folder)
        repo = make_repo(tmp / "repo")
        one = attempts_per_minute(tmp, repo, 1, args.attempts, args.sleep)
        many = attempts_per_minute(tmp, repo, args.parallel, args.attempts, args.sleep)
    efficiency = many / (args.parallel * one)
    print(f"check sleeps {args.sleep:g}s, {args.attempts} attempts each")
    print(f"parallel 1: {one:7.2f} attempts/min")
    print(f"parallel {args.parallel}: {many:7.2f} attempts/min")
    print(f"efficiency rate({args.parallel}) / ({args.parallel} x rate(1)) = {efficiency:.3f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
