"""`goalloop validate GOAL.yaml` prints validation.py's lines from the entry point (quick.py) without the typer
app, rich, GitPython or Optuna (a search goal's knobs are checked without it); what it prints must be what the typer app
prints, byte for byte and with the same exit code, for every kind of goal, odd text and mistakes included:
the typer path (goalloop.cli.main, forked from a helper) is the reference, the entry point a user runs is
under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_repo, write_goal
from forked_cli import ForkedCli
from terminal import on_terminal
from goalloop import quick

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
SCRIPT = Path(sys.executable).with_name("goalloop")
CHECK = {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"}


@pytest.fixture(scope="module")
def typer_cli(tmp_path_factory: pytest.TempPathFactory):
    runner = ForkedCli(tmp_path_factory.mktemp("forked-output"))
    yield runner
    runner.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"score.py": "import knob\nprint(f'score: {knob.X}')\n", "knob.py": "X = 1\n",
                                         "tests/test_a.py": "def test(): pass\n"})


def fast(*args: str, cwd: Path) -> tuple[int, str, str]:
    """`goalloop ARGS` through the installed script, as a user types it."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "goalloop"]
    proc = subprocess.run([*command, *args], cwd=cwd, env=ENV, capture_output=True, text=True, errors="replace",
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def same(typer_cli: ForkedCli, cwd: Path, *args: str, answered_fast: bool = True) -> str:
    """`goalloop ARGS` both ways must print the same; returns what the typer app printed (stdout and stderr)."""
    reference = typer_cli(*args, cwd=cwd)
    assert fast(*args, cwd=cwd) == (reference.exit_code, reference.stdout, reference.stderr), args
    here = os.getcwd()
    os.chdir(cwd)
    try:
        answered = (quick.answer(list(args)), "", 0)
    except quick.Refused as refused:  # the fast path said what is wrong
        answered = ("", refused.text, refused.exit_code)
    finally:
        os.chdir(here)
    answered = tuple(shown(part) if isinstance(part, str) else part for part in answered)
    if answered_fast:
        assert answered == (reference.stdout, reference.stderr, reference.exit_code), \
            f"{args}: the fast path did not answer"
    else:
        assert answered == (None, "", 0), f"{args}: the fast path answered what it cannot be sure of"
    return reference.stdout + reference.stderr


def shown(text: str) -> str:
    """`text` as the entry point writes it (a lone surrogate of a file name escaped) and the test reads it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def goal(repo: Path, name: str = "g", **fields: object) -> Path:
    return write_goal(repo / "goals" / f"{name}.yaml",
                      {"check": CHECK, "proposer": {"kind": "command", "run": "true"}, **fields})


def test_the_kinds_of_goal_print_what_the_typer_app_prints(typer_cli: ForkedCli, repo: Path) -> None:
    text = same(typer_cli, repo, "validate", str(goal(repo, keep={"repeats": 3})))
    assert text.startswith(f"ok {repo}/goals/g.yaml: goal g\n") and "target     none" in text
    assert "warning" not in text
    text = same(typer_cli, repo, "validate", "./goals/g.yaml")
    assert text.startswith("ok goals/g.yaml: goal g\n") and "`goalloop doctor goals/g.yaml`" in text
    many = goal(repo, "many", check={"run": "pytest -q tests && nosuchprogram"}, holdout={"run": "true", "metric": "x (\\S+)"},
                protected=["tests/**", "nothing/*"], editable=["knob.py"], parallel=2,
                budget={"iterations": 5, "time": "1h", "tokens": 1000, "usd": 2.5}, target={"direction": "minimize"})
    text = same(typer_cli, repo, "validate", str(many))
    assert "2 candidates at once" in text and "nosuchprogram` is not on PATH" in text
    assert "'nothing/*' matches no file" in text and "budget.usd cannot be enforced" in text
    search = goal(repo, "search", proposer={"kind": "search", "params": {
        "x": {"file": "knob.py", "pattern": r"^X = (\S+)", "low": 0, "high": 10, "int": True}}})
    assert "proposer   search" in same(typer_cli, repo, "validate", str(search))
    ray = goal(repo, "ray", executor={"kind": "ray", "num_gpus": 1, "resources": {"imagenet": 1}})
    assert "each asking for 1 CPU, 1 GPU, 1 imagenet" in same(typer_cli, repo, "validate", str(ray))
    sandboxed = goal(repo, "sandboxed", sandbox={"network": "proposer"})
    same(typer_cli, repo, "validate", str(sandboxed), answered_fast=quick.answer(["validate", str(sandboxed)]) is not None)


@pytest.mark.parametrize(("fields", "answered_fast"), [
    ({"editable": ["knob.py", "src\\*.py"]}, True),  # a backslash inside a line rich prints as written
    ({"protected": ["tests\\"]}, False),  # not a pattern git reads: the typer app says so
    ({"check": {"run": "python3 score.py \\"}}, True),  # a backslash before the closing backtick
    ({"editable": ["[abc].py"]}, False),  # a bracket: rich's markup
    ({"editable": [":thumbs_up:", "knob.py"], "check": {"run": "python3 score.py :x:"}}, False),  # an emoji code
    ({"name": "speedup", "instructions": "emoji :smile: only in prose"}, True),  # never printed
    ({"check": {"run": "printf 'a\tb' && python3 score.py"}}, False),  # a tab: rich expands it
])
def test_odd_text_prints_as_rich_prints_it(typer_cli: ForkedCli, repo: Path, fields: dict, answered_fast: bool) -> None:
    same(typer_cli, repo, "validate", str(goal(repo, **fields)), answered_fast=answered_fast)


def test_a_goal_file_whose_name_rich_would_read_as_markup(typer_cli: ForkedCli, repo: Path) -> None:
    path = goal(repo, "odd[bold]")
    assert "odd[bold].yaml" in same(typer_cli, repo, "validate", str(path), answered_fast=False)


def test_a_goal_file_name_that_is_not_utf8(typer_cli: ForkedCli, repo: Path) -> None:
    """Shown with the byte escaped, as the typer app shows it, for the goal and for a mistake in it."""
    path = goal(repo, os.fsdecode(b"g\xff"))
    assert "g\\udcff.yaml: goal g" in same(typer_cli, repo, "validate", str(path))
    bad = write_goal(repo / "goals" / os.fsdecode(b"b\xff.yaml"), {"check": CHECK, "proposer": {"kind": "command"}})
    assert "b\\udcff.yaml:" in same(typer_cli, repo, "validate", str(bad))


def test_a_line_ending_in_a_backslash(typer_cli: ForkedCli, repo: Path, tmp_path: Path) -> None:
    """rich's escaping doubles a backslash that ends a chunk: the typer app prints it."""
    (tmp_path / "data\\").mkdir()
    path = goal(repo, sandbox={"ro": [str(tmp_path / "data\\")]})
    same(typer_cli, repo, "validate", str(path), answered_fast=False)


def test_mistakes_are_said_as_the_typer_app_says_them(typer_cli: ForkedCli, repo: Path) -> None:
    bad = write_goal(repo / "goals" / "bad.yaml", {"check": CHECK, "proposer": {"kind": "command"}})
    text = same(typer_cli, repo, "validate", str(bad))
    assert text.startswith(f"error: {bad}:") and "\n  fix: add `run:` under proposer:" in text
    several = write_goal(repo / "goals" / "several.yaml", {"check": {"run": "x", "metric_file": "yes please"},
                                                          "budget": {"iterations": 0}, "proposer": {"kind": "command"}})
    assert same(typer_cli, repo, "validate", str(several)).count("fix:") == 3
    same(typer_cli, repo, "validate", str(repo / "goals" / "nosuch.yaml"))
    assert "did you mean 'main'?" in same(typer_cli, repo, "validate", str(goal(repo, base="mian")))
    backtracks = goal(repo, "backtracks", check={"run": "python3 score.py", "metric": "(a+)+$"})
    assert "repeat inside a repeat" in same(typer_cli, repo, "validate", str(backtracks))
    listed = write_goal(repo / "goals" / "listed.yaml", {"check": CHECK, "guards": [{"name": 1}], "proposer": {
        "kind": "command", "run": "x"}})
    assert "guards[0]" in same(typer_cli, repo, "validate", str(listed), answered_fast=False)  # rich's markup


def test_in_ci_a_mistake_is_annotated_by_the_typer_app(typer_cli: ForkedCli, repo: Path) -> None:
    bad = write_goal(repo / "goals" / "bad.yaml", {"check": CHECK, "proposer": {"kind": "command"}})
    proc = subprocess.run([sys.executable, "-m", "goalloop", "validate", str(bad)], cwd=repo, capture_output=True,
                          text=True, env={**ENV, "CI": "true"}, timeout=60)
    assert proc.returncode == 2 and proc.stdout.startswith("::error ") and "file=goals/bad.yaml" in proc.stdout, proc.stdout
    assert quick.in_ci([]) is False


def test_other_arguments_are_the_typer_apps(typer_cli: ForkedCli, repo: Path) -> None:
    for args in (["validate"], ["validate", "-h"], ["validate", "a.yaml", "b.yaml"], ["validate", "--bogus"],
                 ["validate", ""]):
        same(typer_cli, repo, *args, answered_fast=False)


PROBE = ("import atexit, sys\n"
         "probe = sys.argv.pop(1)\n"
         "heavy = {'typer', 'rich.console', 'rich.markup', 'git', 'optuna', 'numpy',\n"
         "         'goalloop.check', 'goalloop.ledger', 'goalloop.sandbox', 'goalloop.processes'}\n"
         "atexit.register(lambda: open(probe, 'w').write(str(sorted(heavy & set(sys.modules)))))\n"
         "from goalloop.quick import main\n"
         "main()\n")
TYPER_APP = "from goalloop.cli import main\nmain()\n"


def test_off_a_terminal_validate_imports_none_of_the_heavy_libraries(repo: Path, tmp_path: Path) -> None:
    probe = tmp_path / "imported.txt"
    search = goal(repo, "search", proposer={"kind": "search", "params": {
        "x": {"file": "knob.py", "pattern": r"^X = (\S+)", "low": 0, "high": 10, "int": True}}})
    for path in (goal(repo, keep={"repeats": 3}), goal(repo, "agent", proposer={"kind": "aider", "program": "true",
                                                                             "model": "ollama/x"}), search):
        proc = subprocess.run([sys.executable, "-c", PROBE, str(probe), "validate", str(path)], env=ENV, cwd=repo,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stdout + proc.stderr
        assert probe.read_text() == "[]", path


@pytest.mark.parametrize("terminal", [{"TERM": "xterm-256color"}, {"TERM": "dumb"}, {"TERM": "xterm", "NO_COLOR": "1"}])
def test_on_a_terminal_validate_is_coloured_as_rich_colours_it(repo: Path, tmp_path: Path, terminal: dict) -> None:
    env = {**{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "COLORTERM")}, **terminal}
    probe = tmp_path / "imported.txt"
    path = goal(repo, protected=["nothing/*"])
    reference = on_terminal(TYPER_APP, "validate", str(path), cwd=repo, env=env)
    assert on_terminal(PROBE, str(probe), "validate", str(path), cwd=repo, env=env) == reference, terminal
    colours = terminal["TERM"] != "dumb" and "NO_COLOR" not in terminal
    assert (probe.read_text() == "[]") == colours, probe.read_text()
    if colours:
        assert b"\x1b[32mok\x1b[0m" in reference and b"\x1b[33mwarning\x1b[0m" in reference
        assert b"\x1b[1mg\x1b[0m" in reference
    bad = write_goal(repo / "goals" / "bad.yaml", {"check": CHECK, "proposer": {"kind": "command"}})
    reference = on_terminal(TYPER_APP, "validate", str(bad), cwd=repo, env=env)
    assert on_terminal(PROBE, str(probe), "validate", str(bad), cwd=repo, env=env) == reference, terminal
    assert (probe.read_text() == "[]") == colours, probe.read_text()
    assert (b"\x1b[1;31merror:\x1b[0m" in reference) == colours
