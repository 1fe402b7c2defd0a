"""What the benchmarks that drive `goalloop run` share: a small repository and the cost of each attempt."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def make_repo(root: Path, files: dict[str, str]) -> Path:
    """A git repository at `root` with `files` committed on main."""
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    env = {**os.environ, **IDENTITY}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return root


def attempt_rows(run_dir: Path) -> dict[int, dict]:
    """Iteration -> its `attempt` event, for every row recorded so far."""
    rows = {}
    with open(run_dir / "events.jsonl", encoding="utf-8") as events:
        for line in events:
            if '"event": "attempt"' in line:
                event = json.loads(line)
                rows[event["iteration"]] = event
    return rows


def costs_of(run_dir: Path) -> list[float]:
    """The cost in seconds of each attempt recorded so far (index 0 is attempt 1): the growth of the
    ledger's `elapsed` from the row before."""
    elapsed = {n: row["elapsed"] for n, row in attempt_rows(run_dir).items()}
    return [elapsed[n] - elapsed[n - 1] for n in range(1, max(elapsed) + 1) if n in elapsed and n - 1 in elapsed]


def only_run(home: Path) -> Path:
    (run_dir,) = [p for p in (home / "runs").iterdir() if (p / "run.json").is_file()]
    return run_dir
