"""How long `goalloop validate` and `goalloop run` take to answer each hostile goal file, and their memory.

The corpus is the one tests/test_hostile_goals.py generates (anchor bombs, deep nesting, 50 MB files, NUL,
bad variable names, surrogates, catastrophic regexes, /dev/zero, a FIFO, path escapes, bools, NaN, dates,
non-UTF-8), imported from there. Each file is answered by a fresh `python -m goalloop validate` and a fresh
`python -m goalloop run --home TMP` (sys.executable); a valid goal's validate is timed alongside,
interleaved, so a noisy machine slows both alike. Printed per case: the median seconds of each command
and its ratio to the valid goal's validate, the peak memory of either (wait4) and the exit codes; then, for each
command, the worst and the median answer against the 2 s target and the peak memory against 200 MB.

    .venv/bin/python benchmarks/hostile_goals.py [--repeats 3] [--only bomb,deep]

Target (issue 18): every answer in under 2 s and 200 MB, exit 2.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import git, make_repo  # noqa: E402
from test_hostile_goals import BASE, CASES, MAX_RSS_MIB, MEASURE  # noqa: E402

TARGET_SECONDS = 2.0


def timed(*args: str, cwd: Path) -> tuple[float, float, int]:
    """(seconds, peak MiB, exit code) of one fresh `python -m goalloop ARGS`.

    Started by the test's small measuring parent (MEASURE): Linux keeps a process's peak memory across
    exec, so a child forked from this process, which held a 50 MB case, would report at least that much."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", MEASURE, "600", sys.executable, "-m", "goalloop", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    seconds = time.monotonic() - started
    code, peak_kib = json.loads(proc.stdout)
    return seconds, peak_kib / 1024, code


def project(root: Path) -> Path:
    """The repository the test's corpus sits in (see the `project` fixture there)."""
    repo = make_repo(root / "proj", {"score.py": "import knob\nprint(f'score: {knob.X}')\n",
                                     "knob.py": "X = 1\n", "src/a.py": "A = 1\n"})
    os.symlink("/etc/passwd", repo / "leak")
    git(repo, "add", "leak")
    git(repo, "commit", "-q", "-m", "symlink")
    os.mkfifo(repo / "pipe")
    (repo / "big.md").write_text("z" * (3 << 20), encoding="utf-8")
    return repo


def summary(command: str, medians: list[float], ratios: list[float], peaks: list[float]) -> str:
    return (f"{command:8} worst {max(medians):5.2f} s, median {statistics.median(medians):5.2f} s "
            f"(target {TARGET_SECONDS:g} s: worst/target {max(medians) / TARGET_SECONDS:.2f}; worst as a ratio to a "
            f"valid goal's validate {max(ratios):.2f}, median {statistics.median(ratios):.2f}); "
            f"peak {max(peaks):4.0f} MiB (target {MAX_RSS_MIB} MiB: {max(peaks) / MAX_RSS_MIB:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated name fragments")
    args = parser.parse_args()
    wanted = [c for c in CASES if not args.only or any(part in c.name for part in args.only.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        repo = project(Path(tmp))
        valid = repo / "valid.yaml"
        valid.write_text(BASE, encoding="utf-8")
        print(f"{'case':40} {'validate':>8} {'ratio':>6} {'run':>6} {'ratio':>6} {'MiB':>6} exits")
        medians: dict[str, list[float]] = {"validate": [], "run": []}
        ratios: dict[str, list[float]] = {"validate": [], "run": []}
        peaks: dict[str, list[float]] = {"validate": [], "run": []}
        not_two, valid_seconds = [], []
        for case in wanted:
            goal = repo / f"{case.name}.yaml"
            goal.write_bytes(case.content())
            seconds: dict[str, list[float]] = {"validate": [], "run": []}
            base, codes = [], set()
            for _ in range(args.repeats):
                for command, argv in (("validate", ("validate", str(goal))),
                                      ("run", ("run", str(goal), "--home", str(Path(tmp) / "home")))):
                    took, peak, code = timed(*argv, cwd=repo)
                    seconds[command].append(took)
                    peaks[command].append(peak)
                    codes.add(code)
                base.append(timed("validate", str(valid), cwd=repo)[0])
            valid_seconds.extend(base)
            goal.unlink()
            for command in medians:
                medians[command].append(statistics.median(seconds[command]))
                ratios[command].append(medians[command][-1] / statistics.median(base))
            if codes != {2}:
                not_two.append(case.name)
            print(f"{case.name:40} {medians['validate'][-1]:8.2f} {ratios['validate'][-1]:6.2f} "
                  f"{medians['run'][-1]:6.2f} {ratios['run'][-1]:6.2f} "
                  f"{max(peaks['validate'][-args.repeats:] + peaks['run'][-args.repeats:]):6.0f} {sorted(codes)}")
        print(f"{len(wanted)} cases, median of {args.repeats} each; a valid goal's validate took "
              f"{statistics.median(valid_seconds):.2f} s (median):")
        for command in medians:
            print(summary(command, medians[command], ratios[command], peaks[command]))
        print(f"cases not answered with exit 2: {', '.join(not_two) or 'none'}")


if __name__ == "__main__":
    main()
