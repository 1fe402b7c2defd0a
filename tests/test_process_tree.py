"""A check's whole process tree is killed: daemons that `setsid`, double-fork or `setpgid` out of its
process group die at the timeout and at the end of the check, and nothing of another slot's check does.

Each check writes the pids of what it left behind to $PIDS; the test then looks them up in /proc. The
first test shows the attack: killing the process group, all goalloop once did, leaves them running.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_repo, run_cli, write_goal

from goalloop.check import run_check, run_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="descendants are found through /proc (Linux)")
PY = shlex.quote(sys.executable)
WAIT_FOR_PIDS = 'while [ "$(wc -w < "$PIDS")" -lt {n} ]; do sleep 0.01; done'
ESCAPES = {
    "setsid daemon": f"setsid sh -c 'echo $$ >> \"$PIDS\"; exec sleep 300' &",
    "double fork": "( sh -c 'echo $$ >> \"$PIDS\"; exec sleep 300' & ) ",
    "setpgid": f"{PY} -c 'import os, time; os.setpgid(0, 0); open(os.environ[\"PIDS\"], \"a\").write(f\"{{os.getpid()}} \"); time.sleep(300)' &",
    "setsid double fork with children": "setsid sh -c '( sh -c \"echo \\$\\$ >> \\\"$PIDS\\\"; exec sleep 300\" & ); "
                                        "echo $$ >> \"$PIDS\"; exec sleep 300' &",
}
LEFT = {"setsid daemon": 1, "double fork": 1, "setpgid": 1, "setsid double fork with children": 2}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def left_pids(pids_file: Path) -> list[int]:
    return [int(p) for p in pids_file.read_text().split()]


def check_command(escape: str, then: str) -> str:
    return f"{ESCAPES[escape]}\n{WAIT_FOR_PIDS.format(n=LEFT[escape])}\n{then}"


def run(command: str, tmp_path: Path, timeout: float = 30) -> tuple[object, list[int]]:
    pids = tmp_path / "pids"
    pids.write_text("")
    result = run_check(command, cwd=tmp_path, env={**os.environ, "PIDS": str(pids)}, timeout=timeout,
                       log_dir=tmp_path / "logs", metric_pattern=None)
    return result, left_pids(pids)


def test_killing_the_process_group_alone_leaves_the_escapees_running(tmp_path: Path) -> None:
    left = []
    for n, escape in enumerate(e for e in ESCAPES if e != "double fork"):  # a plain double fork stays in it
        pids = tmp_path / f"pids.{n}"
        pids.write_text("")
        command = check_command(escape, "exit 0")
        proc = subprocess.Popen(command, shell=True, cwd=tmp_path, env={**os.environ, "PIDS": str(pids)},
                                start_new_session=True)
        proc.wait(timeout=30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        left += left_pids(pids)
    try:
        assert len(left) == sum(LEFT.values()) - 1 and all(alive(pid) for pid in left)
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_nothing_outlives_a_check_that_ends(tmp_path: Path, escape: str) -> None:
    result, left = run(check_command(escape, "echo done"), tmp_path)
    assert result.process.exit_code == 0
    assert len(left) == LEFT[escape]
    assert not [pid for pid in left if alive(pid)]
    assert not [pid for pid in left if Path(f"/proc/{pid}").exists()], "the adopted ones were reaped too"


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_nothing_outlives_a_check_killed_at_its_timeout(tmp_path: Path, escape: str) -> None:
    result, left = run(check_command(escape, "sleep 300"), tmp_path, timeout=1)
    assert result.process.timed_out
    assert len(left) == LEFT[escape]
    assert not [pid for pid in left if alive(pid)]


def test_one_checks_clean_up_spares_a_check_running_beside_it(tmp_path: Path) -> None:
    """Parallel slots: the end of a check that left a daemon must not kill the other slot's check."""
    outcome = {}
    (tmp_path / "a").mkdir()

    def long_check() -> None:
        outcome["long"] = run_process("sleep 2; echo still here", cwd=tmp_path / "a", env=dict(os.environ),
                                      timeout=30, stdout_path=tmp_path / "a" / "out", stderr_path=tmp_path / "a" / "err")

    thread = threading.Thread(target=long_check)
    thread.start()
    time.sleep(0.3)
    for escape in ESCAPES:
        run(check_command(escape, "exit 0"), tmp_path)
    thread.join()
    assert outcome["long"].exit_code == 0
    assert (tmp_path / "a" / "out").read_text() == "still here\n"


def test_a_goal_whose_check_starts_a_server_each_attempt_leaves_none_running(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    pids = tmp_path / "pids"
    pids.mkdir()
    check = (f'export PIDS="{pids}/$GOALLOOP_ITERATION"; : > "$PIDS"\n{ESCAPES["setsid daemon"]}\n'
             f"{WAIT_FOR_PIDS.format(n=1)}\n{PY} score.py")
    steps = [{"description": f"X={v}", "files": {"knob.py": f"X = {v}\n"}} for v in (2, 3, 4)]
    goal = write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": check, "metric": r"score: (\S+)"}, "target": {"value": 100},
        "budget": {"iterations": 3}, "proposer": {"kind": "scripted", "steps": steps}})
    result = run_cli("run", str(goal), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    left = [pid for path in sorted(pids.iterdir()) for pid in left_pids(path)]
    assert len(left) == 4, "the baseline and each of the three attempts started one"
    assert not [pid for pid in left if alive(pid)]


@pytest.mark.skipif(not Path("/proc/sys/kernel/ns_last_pid").exists(), reason="needs Linux /proc")
def test_the_recent_pids_read_one_by_one_are_the_processes_a_listing_finds(monkeypatch) -> None:
    """The leftover search reads a short range of recent pids one by one instead of listing /proc: it
    finds the same processes (three started after `first`, one of them with a thread) as the listing."""
    from goalloop import processes

    first = int(Path("/proc/sys/kernel/ns_last_pid").read_text()) + 1
    threaded = f"{PY} -c 'import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)'"
    started = [subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"]), subprocess.Popen(shlex.split(threaded))]
    try:
        deadline = time.monotonic() + 20
        while len(os.listdir(f"/proc/{started[2].pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        probed = processes._table(first)
        monkeypatch.setattr(processes, "PROBE_LIMIT", 0)
        listed = processes._table(first)
        assert {p.pid for p in started} <= set(listed)
        assert set(listed) <= set(probed)
        extra = set(probed) - set(listed)  # threads: each stands for its process (killing it kills that)
        assert all(_thread_group(pid) != pid for pid in extra)
        thread = int(max(os.listdir(f"/proc/{started[2].pid}/task"), key=int))
        assert thread in extra and _thread_group(thread) == started[2].pid
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _thread_group(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Tgid:")))
