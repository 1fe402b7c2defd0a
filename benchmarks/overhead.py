"""The runner's own cost per attempt, as a ratio to the bare git floor for the same work, in one run.

What is timed (A, goalloop): everything an attempt costs the runner but the proposer and the check:
    Workspace.commit_attempt + Ledger.record + (Workspace.keep | Workspace.reset_to), alternately, with
    Workspace.start_undo before the ledger row of an attempt not kept and Ledger.sync before a keep, as the
    loop calls them (the row of an attempt not kept reaches the disk in the next batch).
What it is divided by (B, the floor): the least git can do for the same attempt, as plain subprocesses in a
second worktree of the same repository:
    git add -A; git commit -q -m ...; git update-ref refs/x/<n> HEAD; git reset -q --hard <kept>.
Both sides get the same 1-3 edited files per attempt (written before the clock starts: that is the
proposer's work), on a generated repository of 20,000 small files in a tmp dir. The two are interleaved
A/B, B/A, ... so a noisy machine slows both alike; the medians per attempt and their ratio are printed,
then where A's time goes, git subcommand by subcommand, against the floor's commands.

    .venv/bin/python benchmarks/overhead.py [--files 20000] [--attempts 15]

Target: ratio <= 1.0.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from goalloop.ledger import AttemptRecord, Ledger, RunMeta, utc_now
from goalloop.workspace import RepoTarget, Workspace

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
WARMUP = 2


class TimedWorkspace(Workspace):
    """The real Workspace; every git call it makes is also timed by subcommand (a few µs of bookkeeping)."""

    calls: dict[str, list[float]]

    def _run(self, *args: str, input: str | None = None, strip: bool = True) -> str:
        started = time.perf_counter()
        try:
            return super()._run(*args, input=input, strip=strip)
        finally:
            name = args[0] + (" -p" if args[0] == "diff-tree" and "-p" in args else "")
            self.calls.setdefault(name, []).append(time.perf_counter() - started)


def make_repo(root: Path, files: int) -> str:
    """A repository of `files` small files in folders of 200; returns its first commit."""
    root.mkdir(parents=True)
    env = {**os.environ, **IDENTITY}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    for i in range(files):
        folder = root / f"pkg{i // 200:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i % 200:03d}.py").write_text(f"# module {i}\nVALUE = {i}\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "generated"], cwd=root, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def edit(worktree: Path, paths: list[str], attempt: int) -> None:
    """The proposer's part (not timed): append a line to each chosen file."""
    for rel in paths:
        with open(worktree / rel, "a", encoding="utf-8") as out:
            out.write(f"CHANGED_IN_ATTEMPT = {attempt}\n")


class Goalloop:
    """Side A: the real Workspace and Ledger."""

    def __init__(self, tmp: Path, repo: Path, base: str) -> None:
        run_id = "bench-overhead"
        run_dir = tmp / "runs" / run_id
        meta = RunMeta(run_id=run_id, goal_name="bench", goal_path=str(tmp / "goal.yaml"), repo=str(repo),
                       base_commit=base, branch=f"goalloop/{run_id}", worktree=str(tmp / "ws" / run_id),
                       created_at=utc_now(), metric_goal=True, direction="maximize", target=None)
        self.ledger = Ledger.create(run_dir, meta, "check: {run: 'true'}\n")
        TimedWorkspace.calls = {}
        self.space = TimedWorkspace.create(RepoTarget(repo, base), tmp / "ws" / run_id, run_id,
                                           run_dir / "git-exclude")
        self.worktree = self.space.worktree
        self.kept = base
        self.ledger_seconds: list[float] = []

    def attempt(self, n: int, keep: bool) -> float:
        started = time.perf_counter()
        commit = self.space.commit_attempt(n, self.kept, f"goalloop bench #{n}: edit")
        assert commit.sha is not None
        if not keep:
            self.space.start_undo()
        mark = time.perf_counter()
        self.ledger.record(AttemptRecord(
            iteration=n, verdict="keep" if keep else "discard", description="edit", commit=commit.sha,
            metric=float(n), passed=True, seconds=1.0, added_lines=commit.added_lines,
            kept_commit=commit.sha if keep else self.kept,
        ), wait=False)
        if keep:  # as the loop does: the rows are on disk before the branch moves
            self.ledger.sync()
        self.ledger_seconds.append(time.perf_counter() - mark)
        if keep:
            self.space.keep(commit.sha, self.kept)
            self.kept = commit.sha
        else:
            self.space.reset_to(self.kept)
        return time.perf_counter() - started


class Floor:
    """Side B: bare git commands in a second worktree of the same repository."""

    def __init__(self, tmp: Path, repo: Path, base: str) -> None:
        self.worktree = tmp / "floor"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(self.worktree), base], cwd=repo,
                       check=True)
        self.env = {**os.environ, **IDENTITY}
        self.kept = base
        self.calls: dict[str, list[float]] = defaultdict(list)

    def _git(self, *args: str) -> str:
        started = time.perf_counter()
        proc = subprocess.run(["git", *args], cwd=self.worktree, env=self.env, check=True, capture_output=True,
                              text=True)
        self.calls[args[0]].append(time.perf_counter() - started)
        return proc.stdout.strip()

    def attempt(self, n: int, keep: bool) -> float:
        started = time.perf_counter()
        self._git("add", "-A")
        self._git("commit", "-q", "-m", f"floor #{n}")
        self._git("update-ref", f"refs/x/{n}", "HEAD")
        if keep:
            self.kept = f"refs/x/{n}"
        self._git("reset", "-q", "--hard", self.kept)
        return time.perf_counter() - started


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--attempts", type=int, default=15, help="measured attempts on each side")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="goalloop-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        started = time.perf_counter()
        base = make_repo(repo, args.files)
        version = subprocess.run(["git", "--version"], check=True, capture_output=True, text=True).stdout.split()[-1]
        print(f"repo: {args.files:,} files generated in {time.perf_counter() - started:.1f}s "
              f"(git {version}, {os.cpu_count()} cpus)")
        a, b = Goalloop(tmp, repo, base), Floor(tmp, repo, base)
        rng = random.Random(args.seed)
        everything = [f"pkg{i // 200:03d}/mod{i % 200:03d}.py" for i in range(args.files)]
        times_a: list[float] = []
        times_b: list[float] = []
        for n in range(1, WARMUP + args.attempts + 1):
            paths = rng.sample(everything, rng.randint(1, 3))
            keep = n % 2 == 1
            sides = [(a, times_a), (b, times_b)] if n % 2 else [(b, times_b), (a, times_a)]
            for side, times in sides:
                edit(side.worktree, paths, n)
                seconds = side.attempt(n, keep)
                if n > WARMUP:
                    times.append(seconds)
        a.ledger.close()

        med_a, med_b = median_ms(times_a), median_ms(times_b)
        ratio = med_a / med_b
        print(f"attempts: {args.attempts} measured on each side (after {WARMUP} warm-up), interleaved A/B, B/A")
        print(f"A goalloop (commit_attempt + ledger row + keep|reset_to): median {med_a:7.1f} ms/attempt")
        print(f"B git floor (add, commit, update-ref, reset --hard):        median {med_b:7.1f} ms/attempt")
        print(f"ratio A/B: {ratio:.2f}  (target <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'})")

        print("\nwhere A's time goes (median ms per call x calls per attempt):")
        per_attempt = (WARMUP + args.attempts)
        rows = [(name, median_ms(v), len(v) / per_attempt) for name, v in TimedWorkspace.calls.items()
                if name not in ("branch", "worktree")]
        rows.append(("ledger (sync if kept)", median_ms(a.ledger_seconds), 1.0))
        for name, ms, count in sorted(rows, key=lambda r: -r[1] * r[2]):
            print(f"  A  {name:24} {ms:7.1f} ms x {count:.1f} = {ms * count:7.1f} ms")
        print("  (and, not listed: the listing of ignored files, run beside `add` in commit_attempt and beside\n"
              "   `status` in keep|reset_to, with that `status`)")
        print("the floor's commands:")
        for name, values in sorted(b.calls.items(), key=lambda kv: -median_ms(kv[1])):
            print(f"  B  git {name:20} {median_ms(values):7.1f} ms x {len(values) / per_attempt:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
