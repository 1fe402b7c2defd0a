"""The Claude proposer's own cost per attempt, against a Messages API that answers at once, in ms.

A real `goalloop run` (subprocess, sys.executable, the real `anthropic` client) against tests/loopback_api.py
on 127.0.0.1, whose model takes two turns an attempt: one edit (the editor's `create` of knob.py with a new
value) and one finish. The check is `echo score: 1` (never improves, so nothing is kept). The proposer's
cost of an attempt is the time from its `proposing` phase to its `checking` phase in events.jsonl: the
prompt handed over, two HTTP requests and their answers, the edit, the transcript and the cost written.
Printed: the median over the attempts after the first 5 (start-up: the client's first connection), and the
same for a command proposer making the same edit with `/bin/sh`, for scale. No target yet.

    .venv/bin/python benchmarks/claude_cost.py [--attempts 40] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_runs import IDENTITY, make_repo, only_run  # noqa: E402
from loopback_api import LoopbackAPI, Reply, edit, finish, turn  # noqa: E402

SKIP = 5


def model() -> Any:
    """One edit, then finish: the least an attempt can be."""
    edits = 0

    def reply(body: dict[str, Any]) -> Reply:
        nonlocal edits
        if len(body["messages"]) == 1:
            edits += 1
            return turn(edit("create", "knob.py", file_text=f"X = {edits}\n"))
        return turn(finish(f"set X to {edits}"))

    return reply


def proposing_ms(run_dir: Path) -> list[float]:
    """Milliseconds from each attempt's `proposing` phase to its `checking` phase."""
    began: dict[int, datetime] = {}
    spent = []
    for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") != "phase" or not event.get("iteration"):
            continue
        when = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
        if event["phase"] == "proposing":
            began[event["iteration"]] = when
        elif event["phase"] == "checking" and event["iteration"] in began:
            spent.append((when - began.pop(event["iteration"])).total_seconds() * 1000)
    return spent


def run(root: Path, proposer: dict, attempts: int, env: dict[str, str]) -> list[float]:
    repo = make_repo(root / "proj", {"knob.py": "X = 0\n"})
    goal = {"repo": str(repo), "instructions": "Change X in knob.py.", "editable": ["knob.py"],
            "check": {"run": "echo score: 1", "metric": r"^score: (\S+)"}, "budget": {"iterations": attempts},
            "proposer": proposer}
    (root / "goal.yaml").write_text(yaml.safe_dump(goal, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "goalloop", "run", "goal.yaml", "--home", "home", "-q"], cwd=root,
                          env={**os.environ, **IDENTITY, **env, "NO_COLOR": "1"}, capture_output=True, text=True)
    if done.returncode != 1:
        sys.exit(f"the run ended with exit {done.returncode}, not 1 (budget spent):\n{done.stdout}\n{done.stderr}")
    return proposing_ms(only_run(root / "home"))[SKIP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="15 attempts")
    options = parser.parse_args()
    attempts = 15 if options.quick else options.attempts
    with tempfile.TemporaryDirectory(prefix="goalloop-claude-cost-") as tmp:
        with LoopbackAPI([model()] * (attempts * 2)) as api:
            claude = run(Path(tmp) / "claude", {"kind": "claude", "model": "claude-sonnet-5-5"}, attempts, api.env())
        command = run(Path(tmp) / "command", {"kind": "command", "run": 'echo "X = $GOALLOOP_ITERATION" > knob.py'},
                      attempts, {})
    print(f"python {sys.executable}; {attempts} attempts a run (first {SKIP} left out), loopback Messages API")
    print(f"claude proposer   {statistics.median(claude):7.1f} ms/attempt proposing (one edit, one finish: "
          f"2 requests)")
    print(f"command proposer  {statistics.median(command):7.1f} ms/attempt proposing (the same edit by /bin/sh)")


if __name__ == "__main__":
    main()
