"""What watching the files git ignores costs an attempt (ignored_watch.py), against the `git status` the undo
runs anyway, in one run.

A repository whose check left N ignored files in a `build/` folder (100 files a subfolder) is put back by a
reset, as after every check; then the proposer's turn: the stamp taken after the reset and the compare
before the check are what the watch adds. Both are timed with `git status --porcelain --ignored` on the same
worktree for scale (git's own scan, in C), interleaved, medians.

    .venv/bin/python benchmarks/ignored_watch.py [--files 1000 5000 9000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from goalloop import ignored_watch


def make_repo(root: Path, files: int) -> None:
    root.mkdir()
    (root / ".gitignore").write_text("build/\n")
    (root / "main.py").write_text("print('score: 1')\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    for n in range(files):
        folder = root / "build" / f"part{n // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"out{n}.o").write_bytes(b"object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 5000, 9000])
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    print(f"{'ignored files':>13} {'watch ms':>9} {'git status ms':>14} {'ratio':>6} {'us a file':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for files in options.files:
            root = Path(tmp) / f"repo{files}"
            make_repo(root, files)
            watch, status = [], []
            for _ in range(options.repeats):
                started = time.perf_counter()
                before = ignored_watch.stamp(root, {"build/"})
                assert before is not None and ignored_watch.rewritten(root, before) == []
                watch.append(time.perf_counter() - started)
                started = time.perf_counter()
                subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=root, check=True, capture_output=True)
                status.append(time.perf_counter() - started)
            w, s = statistics.median(watch), statistics.median(status)
            print(f"{files:13,} {w * 1000:9.1f} {s * 1000:14.1f} {w / s:6.2f} {w / files * 1e6:10.2f}")
    print(f"past {ignored_watch.WATCH_LIMIT:,} files nothing is stamped (the watch costs one walk that stops there)")


if __name__ == "__main__":
    main()
