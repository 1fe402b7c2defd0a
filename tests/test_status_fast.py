"""`goalloop status` and `goalloop runs` answer from each run's summary (tally.py, quick.py) without the typer
app; what they print must be what the typer app prints, byte for byte, for every kind of run: the typer path
(goalloop.cli.main, forked from a helper) is the reference, the entry point a user runs is under test.

Runs are written through goalloop's own Ledger, as a run writes them (and one by `goalloop run` itself),
then cut as a kill -9 leaves them, resumed, made parallel, given a summary that no longer matches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import make_repo, run_cli, write_goal
from forked_cli import ForkedCli
from terminal import on_terminal
from goalloop import quick, tally
from goalloop.ledger import AttemptRecord, Ledger, RunMeta

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
FUTURE = "2999-01-01T00:00:00Z"
"""Timestamps of a live run's events, so the seconds it shows in progress are 0 on both paths."""


@pytest.fixture(scope="module")
def typer_cli(tmp_path_factory: pytest.TempPathFactory):
    runner = ForkedCli(tmp_path_factory.mktemp("forked-output"))
    yield runner
    runner.close()


SCRIPT = Path(sys.executable).with_name("goalloop")


def fast(*args: str, cwd: Path) -> tuple[int, str, str]:
    """`goalloop ARGS` through the installed script, as a user types it (its name is in usage errors)."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "goalloop"]
    proc = subprocess.run([*command, *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, errors="replace", timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def same(typer_cli: ForkedCli, home: Path, *args: str, answered_fast: bool = True) -> str:
    """Run `goalloop ARGS --home HOME` both ways; they must print the same. Returns what they printed."""
    argv = [*args, "--home", str(home)]
    reference = typer_cli(*argv, cwd=home)
    assert fast(*argv, cwd=home) == (reference.exit_code, reference.stdout, reference.stderr), argv
    if answered_fast:
        assert quick.answer(argv) == reference.stdout, f"{argv}: the fast path did not answer"
    else:
        assert quick.answer(argv) is None, f"{argv}: the fast path answered what it cannot be sure of"
    return reference.stdout


def meta(run_id: str, metric_goal: bool = True) -> RunMeta:
    return RunMeta(run_id=run_id, goal_name=run_id.split("-")[0], goal_path="/dev/null", repo="/srv/repo",
                   base_commit="b" * 40, branch=f"goalloop/{run_id}", worktree="/srv/work", created_at="2026-01-01T00:00:00+00:00",
                   metric_goal=metric_goal, direction="maximize", target=9.0)


def new_ledger(home: Path, run_id: str, budget: dict | None = None, metric_goal: bool = True) -> Ledger:
    ledger = Ledger.create(home / "runs" / run_id, meta(run_id, metric_goal), "budget: {iterations: 20}\n")
    figures = {"iterations": 20, "time": 3600.0, "tokens": None, "usd": None, **(budget or {})}
    if budget is not False:
        tally.save_budget(str(ledger.run_dir), SimpleNamespace(**figures))
    return ledger


def row(n: int, verdict: str, **fields) -> AttemptRecord:
    fields.setdefault("commit", f"{n:040x}")
    fields.setdefault("kept_commit", fields["commit"] if verdict in ("baseline", "keep") else "")
    return AttemptRecord(iteration=n, verdict=verdict, description=fields.pop("description", f"idea {n}"),
                         metric=fields.pop("metric", float(n)), seconds=1.5, elapsed=10.0 * n + 0.25, **fields)


def eventful_run(ledger: Ledger, stop: dict | None = None) -> None:
    """Every kind of row and event status reads."""
    ledger.event("run_started", run_id="x", pid=1)
    ledger.event("noise", samples=[1.0, 1.1, 0.9], spread=0.2)
    ledger.record(row(0, "baseline", reason="the check printed a warning", samples=[1.0, 1.1]))
    kinds = ["keep", "discard", "crash", "rejected", "discard", "keep", "crash"]
    for n, verdict in enumerate(kinds, start=1):
        ledger.event("phase", slot=0, iteration=n, phase="proposing")
        ledger.event("phase", slot=0, iteration=n, phase="checking")
        reason = {"crash": "check timed out" if n == 3 else "proposer failed", "rejected": "touched score.py"}
        ledger.record(row(n, verdict, reason=reason.get(verdict, ""), cost_usd=0.01 * n, tokens=100 * n,
                          warning="the holdout got worse" if n == 6 else ""))
        if n == 4:
            ledger.event("stall", line="4 attempts without a keep", times=1)
            ledger.event("stall", line="4 attempts without a keep", times=2)
    ledger.event("attempt_set_aside", iteration=8, how="killed while proposing", ref="refs/goalloop/x/unjudged/8-1",
                 folder="0008.unjudged-1", description="half done", cost_usd=0.5, tokens=50)
    ledger.event("confirm", metric=6.02, drift=0.02, samples=[6.02])
    ledger.event("confirm", metric=None, drift=None, problem="the check failed")
    if stop is not None:
        ledger.event("run_stopped", **stop)
    ledger.close()


def test_status_and_runs_print_what_the_typer_app_prints(tmp_path: Path, typer_cli: ForkedCli) -> None:
    home = tmp_path
    assert same(typer_cli, home, "runs") == "no runs yet; start one with `goalloop run goals/<goal>.yaml`\n"
    same(typer_cli, home, "runs", "--json")
    same(typer_cli, home, "status", answered_fast=False)  # no runs: the error is the typer app's

    eventful_run(new_ledger(home, "done-20260101-000000-aaaaaa"),
                 stop={"exit_code": 1, "state": "budget spent", "reason": "20 attempts spent"})
    eventful_run(new_ledger(home, "stopped-20260101-000001-bbbbbb", budget={"usd": 2.0, "tokens": 1000}),
                 stop={"exit_code": 130, "state": "interrupted", "reason": "interrupted by Ctrl-C"})
    killed = new_ledger(home, "killed-20260101-000002-cccccc", budget={"iterations": None, "time": None})
    eventful_run(killed)  # no run_stopped: killed
    for run_id in ("done", "stopped", "killed-2026", "done-20260101-000000-aaaaaa"):
        text = same(typer_cli, home, "status", run_id)
        assert f"record     {home}/runs/{run_id}" in text or run_id in text
        same(typer_cli, home, "status", run_id, "--json")
    same(typer_cli, home, "status")
    same(typer_cli, home, "status", "--json")
    text = same(typer_cli, home, "runs")
    assert text.splitlines()[1].startswith("killed-20260101-000002-cccccc")
    same(typer_cli, home, "runs", "--json")
    same(typer_cli, home, "status", "nosuchrun", answered_fast=False)
    same(typer_cli, home, "status", "--bogus", answered_fast=False)
    same(typer_cli, home, "status", "-h", answered_fast=False)
    same(typer_cli, home, "runs", "extra", answered_fast=False)


def test_a_live_run_a_tree_run_unknown_costs_and_pass_fail(tmp_path: Path, typer_cli: ForkedCli) -> None:
    home = tmp_path
    live = new_ledger(home, "live-20260101-000000-aaaaaa")
    live.event("run_started", run_id="live", pid=os.getpid())
    live.record(row(0, "baseline"))
    live.record(row(1, "discard"))
    live.event("phase", slot=0, iteration=2, phase="checking")
    live.event("phase", slot=1, iteration=3, phase="proposing")
    live.close()
    events = home / "runs" / "live-20260101-000000-aaaaaa" / "events.jsonl"
    events.write_text(re.sub(r'"ts": "[^"]*"', f'"ts": "{FUTURE}"', events.read_text()))
    locks = home / "runs" / ".locks"
    locks.mkdir()
    (locks / "live.owner").write_text(f"pid {os.getpid()} (run live-20260101-000000-aaaaaa)\n")
    assert "running" in same(typer_cli, home, "status", "live")
    same(typer_cli, home, "status", "live", "--json")

    tree = new_ledger(home, "tree-20260101-000001-bbbbbb")
    tree.record(row(0, "baseline"))
    tree.record(row(1, "keep", metric=5.0, parent=0))
    tree.record(row(2, "keep", metric=3.0, parent=0))
    tree.record(row(3, "discard", metric=1.0, parent=1, kept_commit=f"{1:040x}"))  # the branch is back at 1
    tree.close()
    assert "best       5 at attempt 1" in same(typer_cli, home, "status", "tree")

    unpaid = new_ledger(home, "unpaid-20260101-000002-cccccc")
    unpaid.record(row(0, "baseline", cost_usd=None))
    for n in (1, 2):
        unpaid.record(row(n, "discard", cost_usd=None, tokens=None))
    unpaid.close()
    assert "cost not tracked" in same(typer_cli, home, "status", "unpaid")

    tests = new_ledger(home, "tests-20260101-000003-dddddd", metric_goal=False)
    tests.record(row(0, "baseline", metric=None, passed=False))
    tests.record(row(1, "keep", metric=None, passed=True))
    tests.event("run_stopped", exit_code=0, state="target met", reason="the check passes")
    tests.close()
    assert "best       pass at attempt 1 (baseline fail)" in same(typer_cli, home, "status", "tests")
    same(typer_cli, home, "runs")
    same(typer_cli, home, "runs", "--json")


@pytest.mark.parametrize("description", [
    "wrap [bold]this[/] in tags", "a path C:\\temp\\x\\", "a tab\there", "party :tada: time", "time 12:30:45 ok",
    "é ü 漢字 fine", "x" * 250, "ends in a backslash \\", "[dim]", "bell \x07 and cr \r here",
])
def test_odd_text_prints_as_rich_prints_it(tmp_path: Path, typer_cli: ForkedCli, description: str) -> None:
    ledger = new_ledger(tmp_path, "odd-20260101-000000-aaaaaa")
    ledger.record(row(0, "baseline"))
    ledger.record(row(1, "crash", description=description, reason=f"proposer said: {description}"))
    ledger.close()
    reference = typer_cli("status", "--home", str(tmp_path), cwd=tmp_path)
    assert fast("status", "--home", str(tmp_path), cwd=tmp_path) == (reference.exit_code, reference.stdout,
                                                                      reference.stderr)
    same(typer_cli, tmp_path, "status", "--json")


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / tally.SUMMARY_FILE).read_text())


def test_a_summary_that_does_not_match_never_changes_the_answer(tmp_path: Path, typer_cli: ForkedCli) -> None:
    ledger = new_ledger(tmp_path, "cut-20260101-000000-aaaaaa")
    eventful_run(ledger)
    run_dir = ledger.run_dir
    events = run_dir / "events.jsonl"
    assert summary_of(run_dir)["covered"] == events.stat().st_size, "a closed ledger's summary covers it all"
    whole = same(typer_cli, tmp_path, "status")

    later = Ledger(run_dir)  # as a resume does: more rows after the summary, then a kill -9 before the next save
    later._saved_at = float("inf")
    later.record(row(8, "keep", metric=9.5))
    later.event("phase", slot=0, iteration=9, phase="proposing")
    later._events_file.close()
    later._results_file.close()
    assert summary_of(run_dir)["covered"] < events.stat().st_size
    older = same(typer_cli, tmp_path, "status")
    assert older != whole and "best       9.5 at attempt 8" in older

    with open(events, "ab") as stream:  # killed while writing a line
        stream.write(b'{"iteration": 10, "verdict": "keep", "descr')
    same(typer_cli, tmp_path, "status")
    saved = (run_dir / tally.SUMMARY_FILE).read_bytes()
    for broken in (b"", b"{not json", saved.replace(b'"covered":', b'"covered":1')):
        (run_dir / tally.SUMMARY_FILE).write_bytes(broken)
        same(typer_cli, tmp_path, "status")
    tampered = json.loads(saved)
    tampered["state"]["last"] = "not a list"
    (run_dir / tally.SUMMARY_FILE).write_text(json.dumps(tampered))
    same(typer_cli, tmp_path, "status", answered_fast=False)
    del tampered["state"]["last"]
    (run_dir / tally.SUMMARY_FILE).write_text(json.dumps(tampered))
    same(typer_cli, tmp_path, "status")
    (run_dir / tally.SUMMARY_FILE).write_text(json.dumps({**tampered, "state": json.loads(saved)["state"] | {"last": 5}}))
    resumed = Ledger(run_dir)  # a summary that breaks the fold never stops a run: it is left behind
    resumed.record(row(11, "discard"))
    resumed.close()
    assert '"iteration": 11' in events.read_text()
    same(typer_cli, tmp_path, "status", answered_fast=False)
    (run_dir / tally.SUMMARY_FILE).write_bytes(saved)
    events.write_bytes(events.read_bytes()[: summary_of(run_dir)["covered"] - 200])  # the summary is newer
    same(typer_cli, tmp_path, "status")
    same(typer_cli, tmp_path, "status", "--json")
    (run_dir / tally.SUMMARY_FILE).unlink()
    os.remove(run_dir / tally.BUDGET_FILE)  # a run from before the summary and budget.json: the slow path
    same(typer_cli, tmp_path, "status", answered_fast=False)
    same(typer_cli, tmp_path, "runs")


def test_parallel_slots_writing_at_once_keep_the_summary_true(tmp_path: Path, typer_cli: ForkedCli) -> None:
    ledger = new_ledger(tmp_path, "par-20260101-000000-aaaaaa")
    ledger.record(row(0, "baseline"))

    def slot(index: int) -> None:
        for n in range(1 + index, 400, 4):
            ledger.event("phase", slot=index, iteration=n, phase="checking")
            ledger.record(row(n, "keep" if n % 37 == 0 else "discard", cost_usd=0.1))

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    run_dir = ledger.run_dir
    assert summary_of(run_dir)["covered"] == (run_dir / "events.jsonl").stat().st_size
    text = same(typer_cli, tmp_path, "status", "--json")
    assert json.loads(text)["attempts"] == 399
    (run_dir / tally.SUMMARY_FILE).unlink()
    assert same(typer_cli, tmp_path, "status", "--json") == text


def test_a_real_run_killed_and_resumed_reads_the_same_both_ways(tmp_path: Path, score_repo: Path,
                                                                typer_cli: ForkedCli) -> None:
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(score_repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 3}, "budget": {"iterations": 4, "time": "1h", "usd": 5},
        "proposer": {"kind": "scripted", "steps": [
            {"description": "to 2", "files": {"knob.py": "X = 2\n"}},
            {"description": "back to 1", "files": {"knob.py": "X = 1\n"}},
            {"description": "to 3", "files": {"knob.py": "X = 3\n"}}]},
    })
    result = run_cli("run", str(goal), "--home", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "run.json").exists())
    assert json.loads((run_dir / tally.BUDGET_FILE).read_text()) == {"iterations": 4, "time": 3600.0, "tokens": None,
                                                                    "usd": 5.0}
    text = same(typer_cli, tmp_path, "status")
    assert "budget     3 of 4 attempts, 1 left" in text and "target met" in text
    same(typer_cli, tmp_path, "status", "--json")
    same(typer_cli, tmp_path, "runs")


PROBE = ("import atexit, sys\n"
         "probe = sys.argv.pop(1)\n"
         "atexit.register(lambda: open(probe, 'w').write(str(sorted({'typer', 'rich', 'pydantic', 'git'} & set(sys.modules)))))\n"
         "from goalloop.quick import main\n"
         "main()\n")
TYPER_APP = "from goalloop.cli import main\nmain()\n"


@pytest.mark.parametrize("terminal", [{"TERM": "xterm-256color"}, {"TERM": "xterm", "COLORTERM": "truecolor"},
                                      {"TERM": "dumb"}, {"TERM": "xterm", "NO_COLOR": "1"}])
def test_on_a_terminal_status_is_coloured_as_rich_colours_it(tmp_path: Path, terminal: dict) -> None:
    eventful_run(new_ledger(tmp_path, "tty-20260101-000000-aaaaaa"),
                 stop={"exit_code": 1, "state": "budget spent", "reason": "20 attempts spent"})
    env = {**{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "COLORTERM")}, **terminal}
    probe = tmp_path / "imported.txt"
    for args in (["status"], ["status", "--json"], ["runs"], ["status", "nosuch"]):
        argv = [*args, "--home", str(tmp_path)]
        reference = on_terminal(TYPER_APP, *argv, cwd=tmp_path, env=env)
        assert on_terminal(PROBE, str(probe), *argv, cwd=tmp_path, env=env) == reference, (argv, terminal)
        colours = args != ["status", "--json"] and terminal["TERM"] != "dumb" and "NO_COLOR" not in terminal
        colours = colours and args != ["status", "nosuch"]
        assert (probe.read_text() == "[]") == colours, f"{argv} {terminal}: {probe.read_text()}"
        if colours and args == ["status"]:
            assert b"\x1b[1mtty-20260101-000000-aaaaaa\x1b[0m" in reference
    narrow = ["runs", "--home", str(tmp_path)]  # rich folds a table wider than the terminal: the typer app
    reference = on_terminal(TYPER_APP, *narrow, cwd=tmp_path, env=env, width=40)
    assert on_terminal(PROBE, str(probe), *narrow, cwd=tmp_path, env=env, width=40) == reference
    assert "typer" in probe.read_text()


def test_off_a_terminal_status_and_runs_import_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    eventful_run(new_ledger(tmp_path, "light-20260101-000000-aaaaaa"))
    probe = tmp_path / "imported.txt"
    for args in (["status"], ["status", "--json"], ["runs"], ["runs", "--json"], ["status", "light"]):
        proc = subprocess.run([sys.executable, "-c", PROBE, str(probe), *args, "--home", str(tmp_path)], env=ENV,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout, proc.stderr
        assert probe.read_text() == "[]", args


SLOW_ON_TWO = """\
import os, time
import knob
if knob.X == 2 and os.path.exists({slow!r}):
    open({mark!r}, "w").close()
    time.sleep(60)
print(f"score: {{knob.X}}")
"""


def test_a_run_killed_mid_check_then_resumed_reads_the_same_both_ways(tmp_path: Path, typer_cli: ForkedCli) -> None:
    """kill -9 while attempt 2 is checked (the summary then lags the ledger, or is missing its last lines),
    then, the run made to look older than budget.json and standing.json, a resume that reconciles it and goes
    on: status agrees with the typer app at every step, and after the resume answers fast again."""
    slow, mark = tmp_path / "slow", tmp_path / "checking"
    slow.touch()
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": SLOW_ON_TWO.format(slow=str(slow), mark=str(mark))})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "budget": {"iterations": 3, "usd": 4},
        "proposer": {"kind": "scripted", "steps": [
            {"description": f"X to {n}", "files": {"knob.py": f"X = {n}\n"}, "cost_usd": 0.25} for n in (1, 2, 3)]}})
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal), "--home", str(home), "-q"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(3000):
        if mark.exists() or proc.poll() is not None:
            break
        time.sleep(0.02)
    assert mark.exists(), "attempt 2's check never started"
    killed = home / "runs" / next(p.name for p in (home / "runs").iterdir() if (p / "run.json").exists())
    assert "  now        attempt 2: checking" in fast("status", "--home", str(home), cwd=home)[1]
    proc.kill()
    proc.wait(timeout=60)
    text = same(typer_cli, home, "status")
    assert "stopped (killed?)" in text and "attempts   1 (1 keep)" in text
    same(typer_cli, home, "status", "--json")
    for made_later in (tally.BUDGET_FILE, tally.SUMMARY_FILE):  # as a run from before them
        (killed / made_later).unlink()
    assert same(typer_cli, home, "status", answered_fast=False) == text
    slow.unlink()
    resumed = run_cli("resume", "--home", str(home), cwd=tmp_path)
    assert resumed.exit_code == 1, resumed.output
    text = same(typer_cli, home, "status")
    assert "attempts   3 (3 keep)" in text and "spent      $1.00" in text, text
    same(typer_cli, home, "status", "--json")
    same(typer_cli, home, "runs")
    assert tally.load(str(killed)).covered == (killed / "events.jsonl").stat().st_size
    assert summary_of(killed)["covered"] == (killed / "events.jsonl").stat().st_size, "the resume wrote both"
