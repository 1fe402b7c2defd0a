"""How long `goalloop validate` takes to answer each hostile goal file, as a ratio to a valid goal, in one run.

The corpus is the one tests/test_hostile_goals.py generates (anchor bombs, deep nesting, 50 MB files, NUL,
bad variable names, surrogates, catastrophic regexes, /dev/zero, a FIFO, path escapes, bools, NaN, dates,
non-UTF-8). Each file is answered by a fresh `python -m goalloop validate` (sys.executable); a valid goal's
validate is timed alongside, interleaved, so a noisy machine slows both alike. Printed per case: the median
seconds, the ratio to the valid goal's median, the peak memory (wait4) and the exit code.

    .venv/bin/python benchmarks/hostile_goals.py [--repeats 3] [--only bomb,deep]

Target: every answer in under 2 s and 200 MB; an answer costs about what a valid goal's validate costs.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import git, make_repo  # noqa: E402
from test_hostile_goals import BASE, CASES  # noqa: E402


def timed(goal: Path, cwd: Path) -> tuple[float, float, int]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "validate", str(goal)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.monotonic() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated name fragments")
    args = parser.parse_args()
    wanted = [c for c in CASES if not args.only or any(part in c.name for part in args.only.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "proj", {"score.py": "import knob\nprint(f'score: {knob.X}')\n",
                                              "knob.py": "X = 1\n", "src/a.py": "A = 1\n"})
        os.symlink("/etc/passwd", repo / "leak")
        git(repo, "add", "leak")
        git(repo, "commit", "-q", "-m", "symlink")
        os.mkfifo(repo / "pipe")
        (repo / "big.md").write_text("z" * (3 << 20), encoding="utf-8")
        valid = repo / "valid.yaml"
        valid.write_text(BASE, encoding="utf-8")
        print(f"{'case':40} {'seconds':>8} {'ratio':>6} {'MiB':>6} exit")
        worst = 0.0
        for case in wanted:
            goal = repo / f"{case.name}.yaml"
            goal.write_bytes(case.content())
            mine, base, peaks, codes = [], [], [], []
            for _ in range(args.repeats):
                seconds, peak, code = timed(goal, repo)
                mine.append(seconds)
                peaks.append(peak)
                codes.append(code)
                base.append(timed(valid, repo)[0])
            goal.unlink()
            ratio = statistics.median(mine) / statistics.median(base)
            worst = max(worst, statistics.median(mine))
            print(f"{case.name:40} {statistics.median(mine):8.2f} {ratio:6.2f} {max(peaks):6.0f} {sorted(set(codes))}")
        print(f"slowest answer: {worst:.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
