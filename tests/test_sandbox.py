"""The sandbox (`sandbox:`): adversarial proposals that only bubblewrap can stop, each run with it on and off.

Every attack is a proposal that also carries a real improvement (model.py's answer goes from 1 to 2), so
no other rule rejects it: the check's own script (score.py, protected) runs model.py as a subprocess, as a
scorer should, and writes the metric to $GOALLOOP_METRIC_FILE. With `sandbox: true` each attack fails and
the attempt is a `crash` whose reason names what was out of reach (or, for a daemon, nothing outlives the
check); with the sandbox off the same attempt succeeds, so each test can fail.

The tree of every test lives under /var/tmp, not /tmp: the sandbox's private /tmp would hide a repo in
/tmp anyway, and these tests must show that each place is hidden by its own rule. The real `bwrap` runs;
without it (or without user namespaces) the tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agent_clis import outside_tmp
from conftest import git, make_repo, run_cli
from loopback_api import LoopbackAPI, bash, finish, tool_result_text, turn
from test_core_loop import PY, Run, run_goal

from goalloop.sandbox import _probe, unavailable

BWRAP_MISSING = unavailable()
pytestmark = pytest.mark.skipif(BWRAP_MISSING is not None,
                                reason=f"bubblewrap cannot run here: {BWRAP_MISSING and BWRAP_MISSING.problem}")

SCORE_PY = """\
import json, os, subprocess, sys
with open(os.environ["GOALLOOP_METRIC_FILE"], "w") as out:  # opened first, written last
    run = subprocess.run([sys.executable, "model.py"], capture_output=True, text=True)
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        sys.exit(run.returncode)
    score = float(run.stdout.split()[-1])
    print(f"score: {score}")
    json.dump({"metric": score}, out)
"""
HOLDOUT_PY = """\
import subprocess, sys
answer = open("holdout/answers.txt").read().split()[-1]
run = subprocess.run([sys.executable, "model.py"], capture_output=True, text=True)
print(f"holdout: {1.0 if run.stdout.split()[-1] == answer else 0.0}")
"""
HOLDOUT_SECRET = "HOLDOUT-ANSWER-7731"
NETRC_SECRET = "hunter2-netrc"
DAEMON_TOKEN = "goalloop-sandbox-test-daemon"


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder outside /tmp holding the repo, the run's home and a fake $HOME with a ~/.netrc."""
    with outside_tmp(NETRC_SECRET) as root:
        try:
            yield root
        finally:
            _kill_daemons()


def repo_at(place: Path) -> Path:
    return make_repo(place / "proj", {
        "model.py": "print(1)\n", "score.py": SCORE_PY, "holdout.py": HOLDOUT_PY,
        "holdout/answers.txt": f"the answer: {HOLDOUT_SECRET}\n",
    })


def attack_goal(model_py: str, sandbox: object, **extra: object) -> dict:
    """One attempt: model.py becomes `model_py` (which prints 2, better than the baseline's 1)."""
    goal = {
        "check": {"run": f"{PY} score.py", "metric_file": True, "timeout": "20s"},
        "target": {"direction": "maximize", "value": 50},
        "holdout": {"run": f"{PY} holdout.py", "metric": r"^holdout: (\S+)", "files": ["holdout/**"]},
        "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"description": "answer 2", "files": {"model.py": model_py}}]},
        **extra,
    }
    if sandbox is not None:
        goal["sandbox"] = sandbox
    return goal


def run_in(place: Path, goal: dict, **env: str) -> Run:
    return run_goal(place, repo_at(place) if not (place / "proj").exists() else place / "proj", goal,
                    env={"HOME": str(place / "user"), **env})


def attempt(run: Run, iteration: int = 1) -> dict:
    assert run.exit_code in (0, 1), run.cli.output
    return run.attempts[iteration]


def check_log(run: Run, iteration: int = 1) -> str:
    folder = run.run_dir / "attempts" / f"{iteration:04d}"
    return "".join((folder / name).read_text() for name in ("check.stdout.log", "check.stderr.log")
                   if (folder / name).exists())


# -- the attacks -----------------------------------------------------------------------------------------------
# Writes 99 into the metric file, then puts a file of its own holding 99 at its path, so the scorer's later
# write lands in a file nobody reads. No race: the fake wins every time the path is within reach.
METRIC_ATTACK = """\
import json, os
path = os.environ["GOALLOOP_METRIC_FILE"]
with open(path, "w") as out:
    json.dump({"metric": 99}, out)
with open(path + ".fake", "w") as out:
    json.dump({"metric": 99}, out)
os.replace(path + ".fake", path)
print(2)
"""


def test_code_under_test_cannot_write_the_metric_file(place: Path) -> None:
    gamed = run_in(place, attack_goal(METRIC_ATTACK, None))
    assert gamed.table()[1] == ("1", "99", "keep"), "without the sandbox the fake metric wins"
    assert gamed.exit_code == 0, "...and meets the target"
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(METRIC_ATTACK, True))
    assert run.table()[1][2] == "crash" and run.exit_code == 1, run.cli.output
    assert "/proc/self/fd/3" in attempt(run)["reason"], attempt(run)["reason"]


@pytest.mark.parametrize("how", ["atexit-in-the-checks-process", "the-parents-descriptor"])
def test_known_limit_code_in_the_checks_own_process_or_reaching_for_its_descriptor_still_writes_it(
        place: Path, how: str) -> None:
    """What the README says the sandbox does not stop: code imported into the check's own process, and a
    child that opens its parent's /proc/PID/fd/3 on purpose. Both fake the metric even sandboxed."""
    if how == "atexit-in-the-checks-process":
        score = "import model\n" + SCORE_PY
        (place / "proj").mkdir()
        repo_at(place)
        (place / "proj" / "score.py").write_text(score)
        git(place / "proj", "commit", "-qam", "score imports model")
        model = ("import atexit, os\nif __name__ != '__main__':\n"
                 "    atexit.register(lambda: open(os.environ['GOALLOOP_METRIC_FILE'], 'w').write('99'))\nprint(2)\n")
        run = run_in(place, attack_goal(model, True))
        assert run.table()[1] == ("1", "99", "keep"), run.cli.output
    else:  # reached and written; the script's own later write wins here, a writer racing it could win
        model = ("import os, sys\nopen(f'/proc/{os.getppid()}/fd/3', 'w').write('99')\n"
                 "print('REACHED', file=sys.stderr)\nprint(2)\n")
        run = run_in(place, attack_goal(model, True))
        assert "REACHED" in check_log(run) and attempt(run)["verdict"] == "keep", run.cli.output


HOLDOUT_ATTACK = f"""\
import sys
print(open("holdout/answers.txt").read(), file=sys.stderr)
print(2)
"""


def test_code_under_test_cannot_read_the_holdouts_files_and_the_holdout_still_can(place: Path) -> None:
    leaked = run_in(place, attack_goal(HOLDOUT_ATTACK, None))
    assert attempt(leaked)["verdict"] == "keep"
    assert HOLDOUT_SECRET in check_log(leaked), "without the sandbox the holdout lands in the check's output"
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(HOLDOUT_ATTACK, True))
    assert attempt(run)["verdict"] == "crash"
    assert "holdout/answers.txt" in attempt(run)["reason"], attempt(run)["reason"]
    assert HOLDOUT_SECRET not in check_log(run)
    assert run.attempts[0]["holdout"] == 0.0, "the holdout check itself still reads its files (the baseline)"


def test_code_under_test_cannot_read_earlier_attempts_in_the_run_folder(place: Path) -> None:
    runs = place / "home" / "runs"
    model = f"""\
import glob, sys
found = glob.glob("{runs}/*/attempts/0000/check.stdout.log")
if not found:
    sys.exit("found no earlier attempt under {runs}")
print("STOLEN " + open(found[0]).read(), file=sys.stderr)
print(2)
"""
    leaked = run_in(place, attack_goal(model, None))
    assert "STOLEN score: 1.0" in check_log(leaked)
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(model, True))
    assert attempt(run)["verdict"] == "crash"
    assert f"found no earlier attempt under {runs}" in attempt(run)["reason"], attempt(run)["reason"]


def test_code_under_test_cannot_write_into_the_users_checkout(place: Path) -> None:
    planted = place / "proj" / "PLANTED.txt"
    model = f"open({str(planted)!r}, 'w').write('was here')\nprint(2)\n"
    run_in(place, attack_goal(model, None))
    assert planted.read_text() == "was here", "without the sandbox the user's checkout is written"
    planted.unlink()
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(model, True))
    assert attempt(run)["verdict"] == "crash"
    assert "Read-only file system" in attempt(run)["reason"] and str(planted) in attempt(run)["reason"]
    assert not planted.exists()


def test_code_under_test_cannot_read_a_secret_in_the_users_home(place: Path) -> None:
    model = "import os, sys\nprint(open(os.path.expanduser('~/.netrc')).read(), file=sys.stderr)\nprint(2)\n"
    leaked = run_in(place, attack_goal(model, None))
    assert NETRC_SECRET in check_log(leaked)
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(model, True))
    assert attempt(run)["verdict"] == "crash"
    assert f"{place / 'user'}/.netrc" in attempt(run)["reason"], attempt(run)["reason"]
    assert NETRC_SECRET not in check_log(run)


class Listener:
    """A TCP server on loopback that records what each connection sends."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.heard = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(100))
                self.heard.set()

    def got(self, data: bytes) -> bool:
        """Whether a connection sent `data`, waiting for the thread that reads it (a busy machine may not
        have run it yet when the run ends; the connection itself was made by then)."""
        self.heard.wait(60)
        return data in self.received

    def clear(self) -> None:
        self.received.clear()
        self.heard.clear()


def test_code_under_test_cannot_open_a_connection_unless_network_is_on(place: Path) -> None:
    listener = Listener()
    model = (f"import socket\nsocket.create_connection(('127.0.0.1', {listener.port}), timeout=5).sendall(b'exfil')\n"
             "print(2)\n")
    run_in(place, attack_goal(model, None))
    assert listener.got(b"exfil"), "without the sandbox the connection is made"
    shutil.rmtree(place / "home")
    listener.clear()

    run = run_in(place, attack_goal(model, True))
    assert attempt(run)["verdict"] == "crash"
    assert "Connection refused" in attempt(run)["reason"], attempt(run)["reason"]
    assert listener.received == []
    shutil.rmtree(place / "home")

    run = run_in(place, attack_goal(model, {"network": "proposer"}))
    assert "Connection refused" in attempt(run)["reason"], "network: proposer leaves the check offline"
    shutil.rmtree(place / "home")

    allowed = run_in(place, attack_goal(model, {"network": True}))
    assert attempt(allowed)["verdict"] == "keep", "sandbox.network: true lets it through"
    assert listener.got(b"exfil")
    listener.server.close()


DAEMON_ATTACK = f"""\
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {DAEMON_TOKEN!r}],
                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
print(2)
"""


def _daemons() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and DAEMON_TOKEN.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _kill_daemons() -> None:
    for pid in _daemons():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("hang", [False, True], ids=["check-ends", "check-times-out"])
def test_a_daemon_started_by_the_check_does_not_outlive_it(place: Path, hang: bool) -> None:
    """A session of its own escapes the check's process group; the sandbox's pid namespace still ends it,
    whether the check ends by itself or is killed at its timeout."""
    model = DAEMON_ATTACK + ("time.sleep(110)\n" if hang else "")
    goal = attack_goal(model, None)
    goal["check"]["timeout"] = "10s" if hang else "60s"  # the baseline must still end in time on a busy machine
    run_in(place, goal)
    assert not _daemons(), "without the sandbox, goalloop's own sweep (processes.py) ends the daemon too"
    shutil.rmtree(place / "home")

    goal["sandbox"] = True
    run = run_in(place, goal)
    assert attempt(run)["verdict"] == ("crash" if hang else "keep"), run.cli.output
    deadline = time.monotonic() + 10
    while _daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _daemons(), "a daemon outlived the sandboxed check"


def test_a_check_dies_with_goalloop_when_goalloop_is_killed(place: Path) -> None:
    """kill -9 of goalloop mid-check: without the sandbox the check lives on (until a resume ends it);
    sandboxed, it dies with goalloop."""
    model = (f"import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', "
             f"{DAEMON_TOKEN!r}])\nopen('started', 'w')\nchild.wait()\nprint(2)\n")
    for sandbox in (None, True):
        repo = place / "proj" if (place / "proj").exists() else repo_at(place)
        goal_path = place / "goal.yaml"
        goal_path.write_text(yaml.safe_dump({"repo": str(repo), **attack_goal(model, sandbox)}, sort_keys=False))
        command = [sys.executable, "-m", "goalloop", "run", str(goal_path), "--home", str(place / "home")]
        proc = subprocess.Popen(command, cwd=place, env={**os.environ, "HOME": str(place / "user")},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while not list((place / "home" / "workspaces").glob("*/started")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _daemons(), "the check is running"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _daemons() and time.monotonic() < deadline:
            time.sleep(0.1)
        if sandbox is None:  # goalloop's own sweep may or may not have reached it before the kill
            _kill_daemons()
            shutil.rmtree(place / "home")
        else:
            assert not _daemons(), "the sandboxed check outlived goalloop"


# -- the proposers -------------------------------------------------------------------------------------------
def test_a_command_proposer_sees_its_worktree_and_prompt_not_the_holdout_git_run_folder_or_home(place: Path) -> None:
    script = ('cat holdout/answers.txt "$GOALLOOP_RUN_DIR/events.jsonl" ~/.netrc; git show HEAD:holdout/answers.txt; '
              'head -c 40 "$GOALLOOP_PROMPT_FILE" > /dev/null && echo PROMPT-READ; '
              'echo "print(2)" > model.py; echo "answer 2" > "$GOALLOOP_DESCRIPTION_FILE"')
    goal = attack_goal("", None, proposer={"kind": "command", "run": script})
    open_run = run_in(place, goal)
    out = (open_run.run_dir / "attempts" / "0001" / "proposer.stdout.log").read_text()
    assert HOLDOUT_SECRET in out and "run_started" in out and NETRC_SECRET in out
    shutil.rmtree(place / "home")

    goal["sandbox"] = True
    run = run_in(place, goal)
    folder = run.run_dir / "attempts" / "0001"
    out, err = (folder / "proposer.stdout.log").read_text(), (folder / "proposer.stderr.log").read_text()
    assert HOLDOUT_SECRET not in out and "run_started" not in out and NETRC_SECRET not in out
    assert "PROMPT-READ" in out
    assert "holdout/answers.txt: Permission denied" in err or "holdout/answers.txt: No such file" in err, err
    assert attempt(run)["verdict"] == "keep" and attempt(run)["description"] == "answer 2"


def test_the_claude_bash_tool_runs_in_the_sandbox(place: Path) -> None:
    peek = bash(f"cat holdout/answers.txt ~/.netrc; ls {place / 'home' / 'runs'}; echo 'print(2)' > model.py")
    script = [turn(peek), turn(finish("answer 2"))]
    with LoopbackAPI(script) as api:
        goal = attack_goal("", True, proposer={"kind": "claude", "model": "claude-sonnet-5-5"},
                           env={"pass": ["ANTHROPIC_API_KEY"]})
        run = run_in(place, goal, **api.env(), GOALLOOP_OUTAGE_BACKOFF="0.05")
    said = tool_result_text(api.tool_result(peek))
    assert HOLDOUT_SECRET not in said and NETRC_SECRET not in said, said
    assert "holdout/answers.txt" in said and ".gitignore" not in said
    assert attempt(run)["verdict"] == "keep", run.cli.output


# -- settings ---------------------------------------------------------------------------------------------------
def test_ro_rw_tools_on_path_a_private_home_and_the_checkout_read_only_if_asked(place: Path) -> None:
    user = place / "user"
    for folder in ("data", "cache", "bin"):
        (user / folder).mkdir()
    (user / "data" / "train.txt").write_text("2\n")
    (user / "bin" / "mytool").write_text("#!/bin/sh\necho tool-ran\n")
    (user / "bin" / "mytool").chmod(0o755)
    model = f"""\
import os, subprocess
assert subprocess.run(["mytool"], capture_output=True, text=True).stdout == "tool-ran\\n"
assert "CapEff:\\t0000000000000000" in open("/proc/self/status").read()
open(os.path.expanduser("~/scratch"), "w").write("thrown away")
open("/tmp/goalloop-sandbox-test-scratch", "w").write("thrown away")
assert os.listdir("/run") == [], os.listdir("/run")
open({str(user / 'cache' / 'warm')!r}, "w").write("cached")
assert open({str(place / 'proj' / 'score.py')!r}).read().startswith("import json")
print(open({str(user / 'data' / 'train.txt')!r}).read().strip())
"""
    goal = attack_goal(model, {"ro": ["~/data"], "rw": ["user/cache"], "checkout": "read-only"})
    run = run_in(place, goal, PATH=f"{user / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert attempt(run)["verdict"] == "keep", attempt(run)
    assert (user / "cache" / "warm").read_text() == "cached", "rw paths are written through"
    assert not (user / "scratch").exists(), "the sandbox's $HOME is its own"
    assert not Path("/tmp/goalloop-sandbox-test-scratch").exists(), "and so is its /tmp"


def test_validate_says_what_the_sandbox_does_and_refuses_a_path_that_does_not_exist(place: Path) -> None:
    repo = repo_at(place)
    goal_path = place / "goal.yaml"
    goal = {"repo": str(repo), **attack_goal("print(2)\n", {"network": "proposer", "ro": ["~/data"]})}
    goal_path.write_text(yaml.safe_dump(goal, sort_keys=False))
    shown = run_cli("validate", str(goal_path), cwd=place, env={"HOME": str(place / "user")})
    assert shown.exit_code == 2, shown.output
    assert f"{place / 'user' / 'data'} does not exist" in shown.output and "sandbox.ro" in shown.output
    (place / "user" / "data").mkdir()
    shown = run_cli("validate", str(goal_path), cwd=place, env={"HOME": str(place / "user")})
    assert shown.exit_code == 0, shown.output
    assert "sandbox    bubblewrap, network for the proposer only" in shown.output


@pytest.mark.parametrize("case", ["missing", "no-userns"])
def test_without_a_working_bwrap_validate_and_run_exit_2_with_the_fix(place: Path, case: str) -> None:
    """No silent fallback. `missing`: PATH holds only git. `no-userns`: a bwrap that fails as the real one
    does when the kernel refuses user namespaces (the sysctl cannot be flipped on a shared machine)."""
    bin_dir = place / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    if case == "no-userns":
        fake = bin_dir / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
        fake.chmod(0o755)
    repo = repo_at(place)
    goal_path = place / "goal.yaml"
    goal_path.write_text(yaml.safe_dump({"repo": str(repo), **attack_goal("print(2)\n", True)}, sort_keys=False))
    for command in (["validate", str(goal_path)], ["run", str(goal_path), "--home", str(place / "home")]):
        result = run_cli(*command, cwd=place, env={"PATH": str(bin_dir)})
        assert result.exit_code == 2, result.output
        assert "sandbox" in result.output and "Traceback" not in result.output
        want = "apt-get install bubblewrap" if case == "missing" else "sysctl -w kernel.unprivileged_userns_clone=1"
        assert want in result.output, result.output
    assert not (place / "home").exists(), "nothing was created"


def test_the_example_goal_runs_sandboxed(place: Path) -> None:
    """goals/example.yaml with `sandbox: true` added, in a fresh repository holding goals/ and examples/."""
    source = Path(__file__).resolve().parents[1]
    repo = place / "clone"
    for folder in ("goals", "examples"):
        shutil.copytree(source / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    goal_path = repo / "goals" / "example.yaml"
    goal_path.write_text(goal_path.read_text() + "\nsandbox: true\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "goals and examples")
    result = run_cli("run", "goals/example.yaml", "--home", str(place / "home"), cwd=repo, timeout=90,
                     env={"HOME": str(place / "user")})
    assert result.exit_code == 0, result.output
    assert "target met" in result.stdout


def test_macos_and_other_systems_are_refused_with_the_fix() -> None:
    said = _probe("/usr/bin/bwrap", "darwin")
    assert said is not None and "needs Linux" in said.problem and "remove `sandbox:`" in said.fix
