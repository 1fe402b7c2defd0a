"""How long `goalloop status`, `goalloop runs` and `goalloop validate` take, the first two on a run of
10,000 attempts.

Writes a synthetic run folder (run.json, goal.yaml, budget.json, events.jsonl, results.tsv, standing.json)
through goalloop's own Ledger, as a run writes it (two phase events and a row an attempt; the ledger's fsyncs
are skipped while writing it, which changes nothing that is read), then times each command as a user runs it
(a fresh process each time, interpreter start included) against `python -c pass`, interleaved, medians.
goalloop's modules are byte-compiled first, as an installed copy is (PYTHONDONTWRITEBYTECODE would otherwise
make every start compile them again).

    status, runs          target: at most 150 ms more than `python -c pass` (issue 16)
    status, typer app     the same command through the typer app (the path -h and errors take): for scale
    status, no summary    standing.json deleted, as for a run from before it: every event read
    validate              a metric goal with a command proposer, in a small repository: the same target, out of
                          reach while the goal is validated by pydantic, whose import alone takes most of it
                          (then the goal's models, PyYAML, regex, pathspec, git rev-parse and ls-tree)
    validate, typer app   the same through the typer app (taken in CI, or for text rich would print otherwise)
    pydantic import       `import pydantic.main` alone, the garbage collector off as validate runs: for scale
    validate, search      goals/example.yaml (a search goal): its knobs are checked against the repository
                          (Optuna, and numpy under it, are loaded only when a run opens the study)

    .venv/bin/python benchmarks/status_speed.py [--attempts 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import goalloop as goalloop_package
from goalloop.goal import parse_goal
from goalloop.ledger import AttemptRecord, Ledger, RunMeta, utc_now
from goalloop.tally import SUMMARY_FILE, save_budget

TARGET_MS = 150
TARGETED = ("status", "runs", "validate")
REPO = Path(__file__).resolve().parent.parent


def make_run(home: Path, attempts: int, keep_summary: bool = True) -> None:
    meta = RunMeta(run_id="bench-20260101-000000", goal_name="bench", goal_path="/dev/null", repo="/nonexistent",
                   base_commit="0" * 40, branch="goalloop/bench-20260101-000000", worktree="/nonexistent",
                   created_at=utc_now(), metric_goal=True, direction="maximize", target=None)
    goal = ("instructions: raise the score\nproposer: {kind: command, run: 'true'}\n"
            "check: {run: 'python score.py', metric: 'score: (\\S+)'}\nbudget: {iterations: %d, time: 8h}\n" % attempts)
    ledger = Ledger.create(home / "runs" / meta.run_id, meta, goal)
    save_budget(str(ledger.run_dir), parse_goal(goal, Path("bench.yaml")).budget)
    if not keep_summary:
        ledger._tally = None  # as before the summary existed
    rng = random.Random(0)
    best = 0.0
    for n in range(attempts + 1):
        value = rng.random()
        for phase in ("proposing", "checking")[n == 0:]:
            ledger.event("phase", slot=0, iteration=n, phase=phase)
        verdict = "baseline" if n == 0 else ("keep" if value > best else rng.choice(["discard", "crash", "rejected"]))
        best = max(best, value) if verdict in ("baseline", "keep") else best
        ledger.record(AttemptRecord(iteration=n, verdict=verdict, description=f"attempt {n}: try something",
                                    commit=f"{n:040x}", metric=value, seconds=1.0, elapsed=float(n)))
    ledger.close()


def make_goal(folder: Path) -> Path:
    """A small repository and a metric goal on it with a command proposer, as `validate` is typed on."""
    folder.mkdir()
    (folder / "score.py").write_text("print('score: 1')\n", encoding="utf-8")
    (folder / "goal.yaml").write_text("instructions: raise the score\ncheck: {run: 'python3 score.py', metric: "
                                      "'^score: (\\S+)'}\nkeep: {repeats: 3}\nbudget: {iterations: 20, time: 1h}\n"
                                      "proposer: {kind: command, run: 'true'}\n", encoding="utf-8")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)
    return folder / "goal.yaml"


def ledger_cost(attempts: int, rounds: int) -> tuple[float, float]:
    """Milliseconds an attempt of the ledger's own writes (two phase events and a row), with the summary kept
    and without it, interleaved `rounds` times, medians."""
    costs: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            for keep in (True, False):
                started = time.perf_counter()
                make_run(Path(tmp) / f"{n}-{keep}", attempts, keep_summary=keep)
                costs[keep].append((time.perf_counter() - started) * 1000 / attempts)
    return statistics.median(costs[True]), statistics.median(costs[False])


def timed(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """The median wall time of each command, run in turn `repeats` times."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, args in commands.items():
            started = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True, cwd=REPO)
            times[name].append(time.perf_counter() - started)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        synced, os.fsync = os.fsync, lambda fd: None  # a synthetic ledger need not survive a power cut
        try:
            make_run(home, options.attempts)
            print(f"python {sys.executable}; a run of {options.attempts:,} attempts written in "
                  f"{time.perf_counter() - started:.1f}s")
            kept, bare_cost = ledger_cost(2000, 5)
        finally:
            os.fsync = synced
        print(f"the ledger's writes (fsync off), ms an attempt: {kept:.3f} keeping the summary, {bare_cost:.3f} "
              f"without it ({kept / bare_cost:.2f}x, +{kept - bare_cost:.3f} ms)")
        compileall.compile_dir(str(Path(goalloop_package.__file__).parent), quiet=1)
        goalloop = [sys.executable, "-m", "goalloop"]
        typer_app = [sys.executable, "-c", "from goalloop.cli import main; main()"]
        bare = home / "bare"
        shutil.copytree(home / "runs", bare / "runs")
        for summary in (bare / "runs").glob(f"*/{SUMMARY_FILE}"):
            summary.unlink()
        goal = make_goal(home / "repo")
        times = timed({"python -c pass": [sys.executable, "-c", "pass"],
                       "status": [*goalloop, "status", "--home", str(home)],
                       "runs": [*goalloop, "runs", "--home", str(home)],
                       "status, typer app": [*typer_app, "status", "--home", str(home)],
                       "status, no summary": [*goalloop, "status", "--home", str(bare)],
                       "validate": [*goalloop, "validate", str(goal)],
                       "validate, typer app": [*typer_app, "validate", str(goal)],
                       "pydantic import": [sys.executable, "-c", "import gc; gc.disable(); import pydantic.main"],
                       "validate, search": [*goalloop, "validate", "goals/example.yaml"]}, options.repeats)
        python = times.pop("python -c pass")
        print(f"load average {os.getloadavg()[0]:.2f}; medians of {options.repeats}")
        print(f"{'python -c pass':20} {python * 1000:7.0f} ms (interpreter start)")
        for name, seconds in times.items():
            more = (seconds - python) * 1000
            verdict = f"target <= +{TARGET_MS} ms: {'met' if more <= TARGET_MS else 'NOT met'}"
            print(f"{name:20} {seconds * 1000:7.0f} ms   {more:+6.0f} ms   {verdict if name in TARGETED else ''}")

if __name__ == "__main__":
    main()
