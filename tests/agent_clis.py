"""Helpers for driving the real agent CLIs (Claude Code, Codex, Aider) through `goalloop run`.

The CLIs are found on PATH, or where `.ci/run` installs them: `.tools/npm/node_modules/.bin/` (npm) and
`.tools/aider/bin/` (aider in its own venv). A test that needs one that is absent skips, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import subprocess

import pytest

from conftest import CliResult, make_repo, write_goal
from test_core_loop import PY

TOOLS = Path(__file__).resolve().parent.parent / ".tools"
WHERE = {
    "claude": TOOLS / "npm" / "node_modules" / ".bin" / "claude",
    "codex": TOOLS / "npm" / "node_modules" / ".bin" / "codex",
    "aider": TOOLS / "aider" / "bin" / "aider",
}
INSTALL = {
    "claude": "npm install --prefix .tools/npm @anthropic-ai/claude-code (or bash .ci/run)",
    "codex": "npm install --prefix .tools/npm @openai/codex (or bash .ci/run)",
    "aider": "python3 -m venv .tools/aider && .tools/aider/bin/pip install aider-chat (or bash .ci/run)",
}


def cli_or_skip(name: str) -> str:
    """The path of the real CLI `name`, or skip the test with how to install it."""
    found = shutil.which(name)
    if found:
        return found
    if WHERE[name].exists():
        return str(WHERE[name])
    pytest.skip(f"{name} is not installed (neither on PATH nor in {WHERE[name].parent}): {INSTALL[name]}")


BUGGY_CALC = "def add(a, b):\n    return a - b\n"
FIXED_CALC = "def add(a, b):\n    return a + b\n"
WRONG_CALC = "def add(a, b):\n    return a * b\n"

# The check: does add() add? It also notes whether an API key reached it (goalloop's own check runs
# without GOALLOOP_PROMPT_FILE; a check the agent runs itself inherits the agent's environment).
TEST_CALC_PY = """\
import json, os, pathlib
import calc
if "GOALLOOP_PROMPT_FILE" not in os.environ:
    seen = sorted(k for k in os.environ if k.endswith(("API_KEY", "AUTH_TOKEN")))
    with open(os.environ["SEEN_LOG"], "a") as log:
        log.write(json.dumps(seen) + "\\n")
ok = calc.add(2, 3) == 5
print("all passed" if ok else f"add(2, 3) gave {calc.add(2, 3)}")
raise SystemExit(0 if ok else 1)
"""


def calc_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"calc.py": BUGGY_CALC, "test_calc.py": TEST_CALC_PY})


def check_command() -> str:
    return f"{PY} test_calc.py"


def calc_goal(proposer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    goal = {"instructions": "Make the failing test in test_calc.py pass by fixing calc.py.",
            "check": {"run": check_command()}, "editable": ["calc.py"],
            "budget": {"iterations": 3}, "proposer": proposer}
    goal.update(extra)
    return goal


def worktree_of(home: Path) -> Path:
    """The worktree of the only run under `home` (the loopback's scripted model needs it while running)."""
    spaces = [p for p in (home / "workspaces").iterdir() if p.is_dir()]
    assert len(spaces) == 1, spaces
    return spaces[0]


def without_keys(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment minus every API key and base URL, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_AUTH_TOKEN", "_OAUTH_TOKEN", "_BASE_URL", "_API_BASE"))}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}


def stdout_json_lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def goalloop(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> CliResult:
    """`goalloop ARGS` in a subprocess with exactly `env` (conftest.run_cli adds to the test's own)."""
    proc = subprocess.run([sys.executable, "-m", "goalloop", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "COLUMNS": "200", "NO_COLOR": "1"}, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_calc_goal(tmp_path: Path, proposer: dict[str, Any], env: dict[str, str], **extra: Any) -> CliResult:
    goal_path = write_goal(tmp_path / "goal.yaml", {"repo": "proj", **calc_goal(proposer, **extra)})
    return goalloop("run", str(goal_path), "--home", str(tmp_path / "home"), cwd=tmp_path, env=env)


# -- under the sandbox ------------------------------------------------------------------------------------
HOLDOUT_SECRET = "HOLDOUT-ANSWER-4417"
NETRC_SECRET = "hunter2-netrc-4417"
HOLDOUT_CHECK_PY = """\
answer = open("holdout/answers.txt").read().split()[-1]
print(f"holdout: {1.0 if answer.startswith('HOLDOUT') else 0.0}")
"""


@contextmanager
def outside_tmp(netrc_secret: str) -> Iterator[Path]:
    """A folder outside /tmp (the sandbox's /tmp is its own) with a fake $HOME, `user/`, holding a ~/.netrc."""
    root = Path(tempfile.mkdtemp(prefix="goalloop-sandbox-", dir="/var/tmp"))
    (root / "user").mkdir()
    (root / "user" / ".netrc").write_text(f"machine api.example.com login me password {netrc_secret}\n")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def place() -> Iterator[Path]:
    with outside_tmp(NETRC_SECRET) as root:
        yield root


def run_guarded_calc_goal(place: Path, proposer: dict[str, Any], env: dict[str, str], sandbox: bool) -> CliResult:
    """The calc goal on a repo that also holds a holdout (its files hidden from the proposer), run with
    HOME at the fake one and `sandbox: true` or no sandbox. The check's key log is the one path it writes
    outside the worktree, so the sandbox names it under rw."""
    make_repo(place / "proj", {"calc.py": BUGGY_CALC, "test_calc.py": TEST_CALC_PY,
                               "holdout.py": HOLDOUT_CHECK_PY, "holdout/answers.txt": f"the answer: {HOLDOUT_SECRET}\n"})
    key_log = Path(env["SEEN_LOG"])
    key_log.touch()
    extra: dict[str, Any] = {"holdout": {"run": f"{PY} holdout.py", "metric": r"^holdout: (\S+)",
                                         "files": ["holdout/**"]}, "budget": {"iterations": 1}}
    if sandbox:
        extra["sandbox"] = {"rw": [str(key_log)]}
    goal_path = write_goal(place / "goal.yaml", {"repo": "proj", **calc_goal(proposer, **extra)})
    return goalloop("run", str(goal_path), "--home", str(place / "home"), cwd=place,
                    env={**env, "HOME": str(place / "user")})
