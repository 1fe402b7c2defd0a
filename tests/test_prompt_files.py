"""Prompt files: none for a proposer that reads no prompt (search), one written once an attempt for one that
does (a command).

The run is the real CLI in a subprocess, with a Python audit hook that logs every file it opens for writing,
so a prompt written twice to the same path shows up even though the folder holds one file.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from conftest import make_repo
from test_core_loop import METRIC, PY

WRITES_LOGGED = """\
import os, runpy, sys
log = open(os.environ["WRITES_LOG"], "a", buffering=1)
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and isinstance(args[1], str) and set(args[1]) & set("wax+"):
        log.write(os.fspath(args[0]) + "\\n")
sys.addaudithook(hook)
sys.argv = ["goalloop", *sys.argv[1:]]
runpy.run_module("goalloop", run_name="__main__")
"""


def run_logging_writes(tmp_path: Path, goal: dict) -> tuple[int, Path, Counter[str]]:
    """Run the goal through the CLI; return the exit code, the run folder and how often each file was opened
    for writing by the goalloop process."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0.5\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    goal_path = tmp_path / "goal.yaml"
    goal_path.write_text(yaml.safe_dump({"repo": str(repo), **goal}), encoding="utf-8")
    wrapper, log = tmp_path / "logged.py", tmp_path / "writes.log"
    wrapper.write_text(WRITES_LOGGED)
    home = tmp_path / "home"
    env = {"WRITES_LOG": str(log), "PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(wrapper), "run", str(goal_path), "--home", str(home)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    (run_dir,) = [p for p in (home / "runs").iterdir() if (p / "run.json").is_file()]
    return done.returncode, run_dir, Counter(log.read_text().splitlines())


def prompt_writes(writes: Counter[str]) -> dict[str, int]:
    return {path: n for path, n in writes.items() if Path(path).name == "prompt.md"}


def test_a_search_run_writes_no_prompt(tmp_path: Path) -> None:
    goal = {"check": {"run": f"{PY} score.py", "metric": METRIC}, "budget": {"iterations": 4},
            "proposer": {"kind": "search", "sampler": "random", "seed": 1,
                         "params": {"x": {"file": "knob.py", "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}}}
    _, run_dir, writes = run_logging_writes(tmp_path, goal)
    attempts = sorted((run_dir / "attempts").iterdir())
    assert [p.name for p in attempts] == ["0000", "0001", "0002", "0003", "0004"]
    assert all((p / "check.stdout.log").is_file() for p in attempts), "the attempts ran their checks"
    assert not list(run_dir.rglob("prompt.md"))
    assert prompt_writes(writes) == {}


def test_a_command_run_writes_each_prompt_once(tmp_path: Path) -> None:
    script = tmp_path / "propose.py"
    script.write_text("import os, pathlib\n"
                      "assert '# Attempts so far' in pathlib.Path(os.environ['GOALLOOP_PROMPT_FILE']).read_text()\n"
                      "n = int(os.environ['GOALLOOP_ITERATION'])\n"
                      "pathlib.Path('knob.py').write_text(f'X = {n + 1}\\n')\n")
    goal = {"check": {"run": f"{PY} score.py", "metric": METRIC}, "budget": {"iterations": 3},
            "proposer": {"kind": "command", "run": f"{PY} {script}"}}
    exit_code, run_dir, writes = run_logging_writes(tmp_path, goal)
    assert exit_code == 1
    written = prompt_writes(writes)
    assert sorted(Path(path).parent.name for path in written) == ["0001", "0002", "0003"]
    assert set(written.values()) == {1}, f"a prompt written more than once: {written}"
    assert "| 2 | keep | 3 |" in (run_dir / "attempts" / "0003" / "prompt.md").read_text()
