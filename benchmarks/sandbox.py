"""The sandbox's cost per check, as a ratio to the same check run without it, in one run.

Each check is goalloop's own `run_check` on a real run layout (a repository, a worktree, a run folder with
a holdout to hide), timed end to end: process start, the check, its exit, the metric read. Two checks:
  - the example goal's (`python examples/forecast/score.py`, metric from stdout), a typical small check;
  - `true`, which does nothing, so what is left is the sandbox's fixed cost (namespaces, mounts).
Sandboxed (A) and plain (B) runs are interleaved A/B, B/A, ... so a noisy machine slows both alike; the
medians and their ratio are printed, and the fixed cost in milliseconds.

    .venv/bin/python benchmarks/sandbox.py [--checks 20]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from goalloop.check import run_check
from goalloop.sandbox import Bubblewrap, RunLayout, unavailable

SOURCE = Path(__file__).resolve().parents[1]
WARMUP = 2


def make_layout(root: Path) -> tuple[Path, RunLayout]:
    """A repository holding examples/, its worktree under workspaces/, and a run folder under runs/."""
    repo = root / "proj"
    shutil.copytree(SOURCE / "examples", repo / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "holdout").mkdir()
    (repo / "holdout" / "answers.csv").write_text("1,2,3\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "examples"], cwd=repo, check=True)
    worktree = root / "workspaces" / "bench"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree)], cwd=repo, check=True)
    (root / "runs" / "bench").mkdir(parents=True)
    layout = RunLayout(checkout=repo, run_folders=root / "runs", worktrees=root / "workspaces",
                       state=root / "runs" / "bench" / "sandbox", git_dir=repo / ".git",
                       holdout_paths=("holdout",), home=root / "home")
    (root / "home").mkdir()
    return worktree, layout


def time_check(command: str, worktree: Path, log_dir: Path, wrap, metric: str | None) -> float:  # noqa: ANN001
    started = time.perf_counter()
    result = run_check(command, cwd=worktree, env={"PATH": "/usr/bin:/bin"}, timeout=60, log_dir=log_dir,
                       metric_pattern=metric, wrap=wrap)
    elapsed = time.perf_counter() - started
    if result.problem or result.process.exit_code != 0:
        sys.exit(f"the check failed: {result.problem or result.process.excerpt()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20, help="timed checks per side and kind")
    args = parser.parse_args()
    problem = unavailable()
    if problem is not None:
        sys.exit(f"bubblewrap cannot run here: {problem.problem}\n  fix: {problem.fix}")
    settings = SimpleNamespace(network=False, ro=[], rw=[], hide=[], checkout="hidden")
    kinds = {
        "example check": (f"{shlex.quote(sys.executable)} examples/forecast/score.py", r"^val_mae:\s*(\S+)"),
        "empty check (true)": ("true", None),
    }
    with tempfile.TemporaryDirectory(prefix="goalloop-bench-sandbox-", dir="/var/tmp") as tmp:
        worktree, layout = make_layout(Path(tmp))
        sandbox = Bubblewrap(settings, layout, Path(tmp))  # type: ignore[arg-type]
        log_dir = Path(tmp) / "runs" / "bench" / "logs"
        print(f"{args.checks} checks a side, interleaved; medians (python {sys.version.split()[0]}, "
              f"{subprocess.run(['bwrap', '--version'], capture_output=True, text=True).stdout.strip()})")
        for name, (command, metric) in kinds.items():
            plain: list[float] = []
            boxed: list[float] = []
            for n in range(args.checks + WARMUP):
                sides = [(plain, None), (boxed, sandbox.check(worktree))]
                for samples, wrap in (sides if n % 2 == 0 else sides[::-1]):
                    seconds = time_check(command, worktree, log_dir, wrap, metric)
                    if n >= WARMUP:
                        samples.append(seconds)
            a, b = statistics.median(boxed), statistics.median(plain)
            print(f"  {name:20} sandboxed {a * 1000:8.1f} ms   plain {b * 1000:8.1f} ms   "
                  f"ratio {a / b:5.2f}   (+{(a - b) * 1000:.1f} ms a check)")


if __name__ == "__main__":
    main()
