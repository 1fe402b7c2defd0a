"""What running a command through goalloop costs over `subprocess.run`, as ratios measured in one run.

A (goalloop): `run_check` (and `run_process`, which the command proposer and the Claude bash tool use):
a new session, output to log files, the wait, the sweep for leftover processes, the metric read.
B (the floor): `subprocess.run(command, shell=True, timeout=60)` with output to the same kind of files
(and, for reference, without a timeout: a plain blocking wait).
Commands: `true` (the fixed cost alone) and a short sleep (where a polling wait shows: it wakes late).
A and B are interleaved A/B, B/A, ... so a noisy machine slows both alike; medians and ratios printed.

    .venv/bin/python benchmarks/check_overhead.py [--runs 60]

Target: ratio <= 1.2 for `true`, <= 1.05 for the sleep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from goalloop.check import run_check, run_process

COMMANDS = {"true": "true", "sleep 0.05": "sleep 0.05"}


def goalloop_check(command: str, folder: Path) -> float:
    started = time.perf_counter()
    run_check(command, cwd=folder, env=dict(os.environ), timeout=60, log_dir=folder / "logs", metric_pattern=None)
    return time.perf_counter() - started


def goalloop_process(command: str, folder: Path) -> float:
    started = time.perf_counter()
    run_process(command, cwd=folder, env=dict(os.environ), timeout=60, stdout_path=folder / "p.out",
                stderr_path=folder / "p.err")
    return time.perf_counter() - started


def floor(command: str, folder: Path, timeout: float | None = 60) -> float:
    started = time.perf_counter()
    with open(folder / "b.out", "wb") as out, open(folder / "b.err", "wb") as err:
        subprocess.run(command, shell=True, cwd=folder, env=dict(os.environ), stdout=out, stderr=err,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return time.perf_counter() - started


def floor_without_timeout(command: str, folder: Path) -> float:
    return floor(command, folder, timeout=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'command':<12} {'side':<24} {'median ms':>10} {'ratio':>7}")
        for name, command in COMMANDS.items():
            sides = [("run_check", goalloop_check), ("run_process", goalloop_process), ("subprocess", floor),
                     ("subprocess, no timeout", floor_without_timeout)]
            times: dict[str, list[float]] = {label: [] for label, _ in sides}
            for _ in range(3):  # warm-up
                for _, side in sides:
                    side(command, folder)
            for n in range(args.runs):
                for label, side in sides if n % 2 == 0 else reversed(sides):
                    times[label].append(side(command, folder))
            base = statistics.median(times["subprocess"])
            for label, samples in times.items():
                median = statistics.median(samples)
                print(f"{name:<12} {label:<24} {median * 1000:>10.2f} {median / base:>7.2f}")


if __name__ == "__main__":
    main()
