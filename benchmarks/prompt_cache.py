"""How much of the Claude proposer's input is read from the prompt cache, over a 20-attempt run, in one run.

A real `goalloop run` (subprocess, real `anthropic` client) against tests/loopback_api.py, which computes
cache reads from the requests' own bytes: a request reads the longest prefix, ending at a cache breakpoint,
that an earlier request wrote. The goal is realistic in size: instructions plus about 6 KB of context files
(a module and its notes) in the stable prefix. Each attempt is the turns an agent typically takes: view the
file, run the check, rewrite the knob, finish. The knob goes up every attempt, so every attempt is kept
and the attempts table, the last check's output and the worktree all change from attempt to attempt.

Printed: the share of input tokens that were cache reads, cache_read / (input + cache_read + cache_write),
over all requests and over the first request of each attempt (where the stable prefix alone is reused),
and what the input would cost at claude-sonnet-5-5's rates with and without the cache.

    .venv/bin/python benchmarks/prompt_cache.py [--attempts 20] [--edited-context]

With --edited-context the file being edited is also a context file, as in goals/fix-tests.yaml: the prompt
shows context files as they are in the worktree, so the "stable" part changes whenever an attempt is kept and
only the tools and system prompt are read from the cache at the start of the next attempt.

Target: share >= 0.90.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from loopback_api import LoopbackAPI, Reply, bash, edit, finish, turn  # noqa: E402

from goalloop.proposers.claude import PriceTable  # noqa: E402

PRICED_AS = "claude-sonnet-5-5"
TARGET_SHARE = 0.90
IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def context_module() -> str:
    """About 4 KB of plausible code the goal shows as context."""
    functions = [
        textwrap.dedent(f'''\
        def stage_{i}(values: list[float], weight: float = {i / 10:.1f}) -> list[float]:
            """Stage {i} of the pipeline: scale, clip and smooth the values by a running mean."""
            scaled = [v * weight for v in values]
            clipped = [min(max(v, -{i + 1}.0), {i + 1}.0) for v in scaled]
            return [sum(clipped[max(0, k - 2):k + 1]) / len(clipped[max(0, k - 2):k + 1]) for k in range(len(clipped))]
        ''')
        for i in range(12)
    ]
    return "import knob\n\n\n" + "\n\n".join(functions)


def make_project(root: Path) -> Path:
    repo = root / "proj"
    repo.mkdir()
    files = {
        "knob.py": "X = 1\n",
        "score.py": "import knob\nprint(f'score: {knob.X}')\n",
        "pipeline.py": context_module(),
        "NOTES.md": "# Notes\n\n" + "\n".join(f"- Observation {i}: the knob interacts with stage {i % 12}; "
                                              "larger values have helped so far." for i in range(20)) + "\n",
    }
    for name, content in files.items():
        (repo / name).write_text(content)
    env = {**os.environ, **IDENTITY}
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "init"]):
        subprocess.run(command, cwd=repo, check=True, env=env)
    return repo


def agent() -> Any:
    """A scripted model that takes four turns per attempt and raises the knob each attempt."""
    attempts = 0

    def reply(body: dict[str, Any]) -> Reply:
        nonlocal attempts
        turn_number = len(body["messages"]) // 2
        if turn_number == 0:
            attempts += 1
            return turn(edit("view", "knob.py"))
        if turn_number == 1:
            return turn(bash(f"{sys.executable} score.py"))
        if turn_number == 2:
            return turn(edit("create", "knob.py", file_text=f"X = {attempts + 1}\n"))
        return turn(finish(f"raise X to {attempts + 1}"))

    return reply


def prompt_tokens(usages: list[dict[str, int]]) -> int:
    return sum(u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] for u in usages)


def share(usages: list[dict[str, int]]) -> float:
    read = sum(u["cache_read_input_tokens"] for u in usages)
    total = prompt_tokens(usages)
    return read / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--edited-context", action="store_true",
                        help="also show knob.py (the edited file) as context; the stable prefix then changes "
                        "on every keep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LoopbackAPI([agent()] * (args.attempts * 4)) as api:
        root = Path(tmp)
        make_project(root)
        goal = {
            "repo": "proj",
            "instructions": "Raise the score printed by score.py by changing X in knob.py. " * 3,
            "context": ["pipeline.py", "NOTES.md"] + (["knob.py"] if args.edited_context else []),
            "editable": ["knob.py"],
            "check": {"run": f"{sys.executable} score.py", "metric": r"score: (\S+)"},
            "budget": {"iterations": args.attempts},
            "proposer": {"kind": "claude", "model": PRICED_AS},
        }
        (root / "goal.yaml").write_text(yaml.safe_dump(goal, sort_keys=False))
        env = {**os.environ, **api.env(), "NO_COLOR": "1"}
        run = subprocess.run([sys.executable, "-m", "goalloop", "run", "goal.yaml", "--home", "home", "-q"],
                             cwd=root, env=env, capture_output=True, text=True)
        if run.returncode != 1:
            sys.exit(f"the run ended with exit {run.returncode}, not 1 (budget spent):\n{run.stdout}\n{run.stderr}")

    usages = api.usages
    openers = [u for body, u in zip(api.requests, usages) if len(body["messages"]) == 1]
    rates = PriceTable.load().rates(PRICED_AS, datetime.now(timezone.utc).date())
    assert rates is not None
    cached_cost = sum(u["input_tokens"] * rates.input + u["cache_creation_input_tokens"] * rates.cache_write
                      + u["cache_read_input_tokens"] * rates.cache_read for u in usages) / 1e6
    uncached_cost = prompt_tokens(usages) * rates.input / 1e6
    overall = share(usages)
    print(f"{len(openers)} attempts, {len(usages)} requests, "
          f"{sum(u['cache_read_input_tokens'] for u in usages):,} of {prompt_tokens(usages):,} input tokens "
          "read from the cache")
    print(f"cache read share, all requests:            {overall:.3f}  (target >= {TARGET_SHARE:.2f})")
    print(f"cache read share, first request of attempt: {share(openers):.3f}")
    print(f"input cost at {PRICED_AS} rates: ${cached_cost:.4f} with the cache, ${uncached_cost:.4f} without "
          f"({cached_cost / uncached_cost:.2f}x)")
    if overall < TARGET_SHARE:
        sys.exit(1)


if __name__ == "__main__":
    main()
