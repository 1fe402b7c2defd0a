"""`executor: {kind: ray}`: checks run as tasks on a real Ray cluster, started here with two nodes on this machine.

One cluster for the module (a head with 2 CPUs and a second node with 1: Ray start-up is slow on 2 cores),
every run through the real CLI in a subprocess, like a user's. Each test attacks one property: the same
scripted proposals reach the same best on Ray as with threads; a worker killed mid-check is retried on
the other node, and a check lost twice is a recorded crash while the run goes on; goalloop SIGKILLed
mid-round and resumed leaves ledger, refs and branch in agreement; a cluster that cannot be reached, or
cannot fit one check, is exit 3 with the fix before anything is created.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_ledger_and_git_agree, git, make_repo, results_rows, run_cli, write_goal
from test_core_loop import PY, run_goal, scripted, step

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'goalloop[ray]'); the Ray executor is untested")
psutil = pytest.importorskip("psutil", reason="psutil (installed with ray) is needed to find Ray's worker processes")

pytestmark = pytest.mark.slow

SCORE_PY = """\
import os, sys, time
import knob
time.sleep(0.3)
print("cwd:", os.getcwd())
print(f"score: {knob.X}")
"""

# Blocks (and says so in a marker file) on the first `kills[X]` runs for knob value X, so the test can kill
# the Ray worker running it; later runs print the score at once.
KILLABLE_SCORE_PY = """\
import os, sys, time
import knob
marks = sys.argv[1]
kills = {5: 1, 9: 2}.get(knob.X, 0)
seen = os.path.join(marks, f"runs-{knob.X}")
runs = open(seen).read().split() if os.path.exists(seen) else []
with open(seen, "a") as log:
    log.write(f"{os.getpid()}\\n")
if len(runs) < kills:
    with open(os.path.join(marks, f"blocked-{os.getpid()}"), "w") as marker:
        marker.write(str(os.getpid()))
    time.sleep(120)
print(f"score: {knob.X}")
"""


@pytest.fixture(scope="module")
def cluster():
    """A head node (2 CPUs) and a second node (1 CPU) on this machine; torn down by the pids it started."""
    from ray.cluster_utils import Cluster

    problem = None
    for _ in range(2):  # the node start-up wait is fixed at 30 s in Ray, which a busy 2-core machine can miss
        try:
            made = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
            made.add_node(num_cpus=1)
            break
        except Exception as exc:  # noqa: BLE001 - any start-up failure is the same to us: try once more
            problem = exc
            try:
                made.shutdown()
            except Exception:  # noqa: BLE001
                pass
    else:
        pytest.skip(f"a local Ray cluster could not start on this machine: {problem}")
    yield made
    made.shutdown()


def _knob_steps(values: list[int]) -> list[dict]:
    return [step(f"set X to {v}", {"knob.py": f"X = {v}\n"}) for v in values]


def _ray(cluster, tmp_path: Path, **extra: object) -> dict:
    return {"kind": "ray", "address": cluster.address, "num_cpus": 0.5, "scratch": str(tmp_path / "scratch"), **extra}


def test_parallel_4_on_ray_reaches_the_same_best_as_threads(tmp_path: Path, cluster) -> None:
    values = [3, 7, 2, 9, 4, 8, 1, 6]
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    threads = run_goal(tmp_path / "threads", repo, scripted(_knob_steps(values), parallel=4))
    on_ray = run_goal(tmp_path / "ray", repo, scripted(_knob_steps(values), parallel=4,
                                                       executor=_ray(cluster, tmp_path)), timeout=240)
    assert threads.exit_code == on_ray.exit_code == 1, on_ray.cli.output
    assert on_ray.table() == threads.table()
    assert ("4", "9", "keep") in on_ray.table()
    assert on_ray.show(f"goalloop/{on_ray.run_id}", "knob.py") == "X = 9\n"
    nodes = {node.node_id for node in cluster.list_all_nodes()}
    for iteration in range(0, len(values) + 1):
        attempt = on_ray.run_dir / "attempts" / f"{iteration:04d}"
        where = json.loads((attempt / "check.ray.json").read_text())
        assert where["tries"][-1]["node"] in nodes, "the check ran on a node of the cluster"
        assert "runtime_resources" in where["goalloop_from"], "the worker runs the goalloop Ray was sent"
        cwd = (attempt / "check.stdout.log").read_text().splitlines()[0].removeprefix("cwd: ")
        assert Path(cwd).is_relative_to(tmp_path / "scratch"), "in a scratch checkout, not the slot's worktree"
    assert "cwd: " + str(threads.worktree) in (threads.run_dir / "attempts" / "0001" / "check.stdout.log").read_text()


def test_a_search_attempt_checked_on_the_cluster_is_the_attempt_not_its_parent(tmp_path: Path, cluster) -> None:
    """The search proposer's attempts are committed without moving HEAD on a local check; on Ray, which
    ships the commit HEAD names, each check must still measure the attempt's own value."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0.5\n", "score.py": SCORE_PY})
    goal = {"check": {"run": f"{PY} score.py", "metric": r"^score: (\S+)"}, "target": {"direction": "maximize"},
            "budget": {"iterations": 4}, "executor": _ray(cluster, tmp_path),
            "proposer": {"kind": "search", "sampler": "random", "seed": 5,
                         "params": {"x": {"file": "knob.py", "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0}}}}
    run = run_goal(tmp_path, repo, goal, timeout=240)
    assert run.exit_code == 1, run.cli.output
    rows = results_rows(run.run_dir)[1:]
    assert len(rows) == 4
    for row in rows:
        assert float(row["metric"]) == float(row["description"].removeprefix("x=")), row


def test_worker_killed_mid_check_is_retried_on_the_other_node_and_lost_twice_is_a_crash(
        tmp_path: Path, cluster) -> None:
    goal, _, marks = _marked_goal(tmp_path, cluster, KILLABLE_SCORE_PY, [5, 9, 7], parallel=1)
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal), "--home", str(home), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_checks = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        for marker in marks.glob("blocked-*"):
            check_pid = int(marker.read_text())
            _ray_worker_of(check_pid).kill()
            marker.unlink()
            killed_checks.append(check_pid)
        time.sleep(0.2)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, output
    assert len(killed_checks) == 3
    for pid in killed_checks:
        assert _gone(pid), "the guard kills the check of a worker that died"

    run_dir = next((home / "runs").glob("goal-*"))
    rows = {r["iteration"]: r for r in results_rows(run_dir)}
    assert [(rows[i]["metric"], rows[i]["verdict"]) for i in "123"] == [("5", "keep"), ("", "crash"), ("7", "keep")]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    lost = [e for e in events if e["event"] == "check_lost"]
    assert [(e["iteration"], e["action"]) for e in lost] == [
        (1, "retried on another node"), (2, "retried on another node"), (2, "recorded as a crash")], lost
    assert all("WorkerCrashedError" in e["reason"] for e in lost)
    crash = next(e for e in events if e["event"] == "attempt" and e["iteration"] == 2)
    assert crash["reason"].startswith("check was lost on the cluster (2 tries): WorkerCrashedError")
    first = json.loads((run_dir / "attempts" / "0001" / "check.ray.json").read_text())["tries"]
    assert len(first) == 2 and first[0]["node"] != first[1]["node"], "the retry ran on the other node"


def test_goalloop_sigkilled_mid_round_resumes_with_ledger_refs_and_branch_agreeing(tmp_path: Path, cluster) -> None:
    score = "import os, sys, time\nimport knob\n" \
            "open(os.path.join(sys.argv[1], os.environ['GOALLOOP_ITERATION']), 'w').write(str(os.getpid()))\n" \
            "time.sleep(1)\nprint(f'score: {knob.X}')\n"
    values = [3, 1, 5, 2, 8, 4]
    goal, repo, marks = _marked_goal(tmp_path, cluster, score, values, parallel=2)
    home = tmp_path / "home"
    command = ["run", str(goal)]
    for kill_at in (1, 3):  # SIGKILL while the checks of the round holding attempt `kill_at` run on the cluster
        proc = subprocess.Popen([sys.executable, "-m", "goalloop", *command, "--home", str(home), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_for(lambda: (marks / str(kill_at)).exists() or proc.poll() is not None, 240)
        assert proc.poll() is None, "the run was still in its round when killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _gone(int((marks / str(kill_at)).read_text())), "Ray ends the checks of a driver that died"
        command = ["resume"]
    done = run_cli("resume", "--home", str(home), cwd=tmp_path, timeout=240)
    assert done.exit_code == 1, done.output

    run_dir = next((home / "runs").glob("goal-*"))
    assert "keep" in {r["verdict"] for r in results_rows(run_dir)[1:]}
    aside = git(repo, "for-each-ref", "--format=%(refname)", f"refs/goalloop/{run_dir.name}/unjudged/").splitlines()
    assert aside, "the attempts the kills stopped are kept at their refs, set aside, and proposed again"
    assert_ledger_and_git_agree(repo, home, run_dir, len(values), slots=2)


def test_ctrl_c_during_a_check_on_the_cluster_ends_it_and_exits_130(tmp_path: Path, cluster) -> None:
    block = "import os, sys, time\nimport knob\nif knob.X == 5:\n" \
            "    open(os.path.join(sys.argv[1], 'blocked'), 'w').write(str(os.getpid()))\n" \
            "    time.sleep(120)\nprint(f'score: {knob.X}')\n"
    goal, _, marks = _marked_goal(tmp_path, cluster, block, [5, 3, 6, 7], parallel=2)
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal), "--home", str(tmp_path / "home")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: (marks / "blocked").exists() or proc.poll() is not None, 240)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=90)[0]
    assert proc.returncode == 130, output
    assert "interrupted; resume with `goalloop resume" in output
    assert _gone(int((marks / "blocked").read_text())), "the check on the worker was ended"


def test_ctrl_c_in_a_round_of_one_ends_the_check_on_the_cluster_and_the_daemon_it_started(
        tmp_path: Path, cluster) -> None:
    """A round of one waits for its check in the main thread, where Ctrl-C lands as KeyboardInterrupt
    rather than as the stand-in's death; the task is cancelled there too, and what the check left on the
    node (a daemon in a session of its own, which neither the worker's guard nor Ray ends) is killed from
    the head before goalloop says the run is interrupted."""
    block = ("import os, subprocess, sys, time\nimport knob\nif knob.X == 5:\n"
             "    daemon = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
             "    open(os.path.join(sys.argv[1], 'daemon'), 'w').write(str(daemon.pid))\n"
             "    open(os.path.join(sys.argv[1], 'blocked'), 'w').write(str(os.getpid()))\n"
             "    time.sleep(120)\nprint(f'score: {knob.X}')\n")
    goal, _, marks = _marked_goal(tmp_path, cluster, block, [5, 3], parallel=1)
    proc = subprocess.Popen([sys.executable, "-m", "goalloop", "run", str(goal), "--home", str(tmp_path / "home")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: (marks / "blocked").exists() or proc.poll() is not None, 240)
    check, daemon = int((marks / "blocked").read_text()), int((marks / "daemon").read_text())
    assert psutil.Process(daemon).status() != psutil.STATUS_ZOMBIE
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=90)[0]
    assert proc.returncode == 130, output
    alive = [pid for pid in (check, daemon)
             if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    for pid in alive:
        psutil.Process(pid).kill()
    lost = [line for run in (tmp_path / "home" / "runs").glob("*/events.jsonl")
            for line in run.read_text().splitlines() if "check_lost" in line]
    assert not alive, f"still running after goalloop said the run was interrupted: {alive} (check {check}, " \
                      f"daemon {daemon}); {lost}"


def test_unreachable_cluster_is_exit_3_with_the_fix_before_anything_is_created(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    run = run_goal(tmp_path, repo, scripted(_knob_steps([2]), executor={"kind": "ray", "address": f"127.0.0.1:{port}"}))
    assert run.exit_code == 3, run.cli.output
    assert f"cannot reach the Ray cluster at executor.address '127.0.0.1:{port}'" in run.cli.stderr
    assert "fix: start a cluster with `ray start --head`" in run.cli.stderr
    assert "Traceback" not in run.cli.output
    assert not (tmp_path / "home" / "runs").exists(), "no run was created"


def test_a_check_no_node_can_fit_is_exit_3_naming_what_the_cluster_has(tmp_path: Path, cluster) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    executor = {"kind": "ray", "address": "auto", "num_cpus": 0.5, "num_gpus": 1}  # auto: found via RAY_ADDRESS
    run = run_goal(tmp_path, repo, scripted(_knob_steps([2]), executor=executor),
                   env={"RAY_ADDRESS": cluster.address}, timeout=120)
    assert run.exit_code == 3, run.cli.output
    assert "no node of the Ray cluster can run one check: each asks for 0.5 CPU, 1 GPU; the cluster has 3 CPU" \
        in run.cli.stderr
    assert "fix: lower executor.num_cpus / num_gpus / resources" in run.cli.stderr


# -- helpers ----------------------------------------------------------------------------------------------
def _marked_goal(tmp_path: Path, cluster, score: str, values: list[int], parallel: int) -> tuple[Path, Path, Path]:
    """A goal on a repo whose check `score.py MARKS` may leave marker files in MARKS for the test to see."""
    marks = tmp_path / "marks"
    marks.mkdir()
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": score})
    goal = write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "parallel": parallel, "check": {"run": f"{PY} score.py {marks}", "metric": r"score: (\S+)"},
        "budget": {"iterations": len(values)}, "executor": _ray(cluster, tmp_path),
        "proposer": {"kind": "scripted", "steps": _knob_steps(values)},
    })
    return goal, repo, marks


def _ray_worker_of(pid: int):
    """The Ray worker process that started the check `pid` (its nearest ancestor named ray::...)."""
    for parent in psutil.Process(pid).parents():
        if any("ray::" in part or "default_worker.py" in part for part in parent.cmdline()[:2]):
            return parent
    raise AssertionError(f"no Ray worker above the check {pid}")


def _gone(pid: int, within: float = 20.0) -> bool:
    return _wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                     within)


def _wait_for(condition, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


HOLDOUT_PY = """\
import knob
answer = open("holdout/answers.txt").read().split()[-1]
print(f"holdout: {knob.X * 10 if answer == 'HOLDOUT-ANSWER-2291' else -1}")
"""


def test_a_holdout_on_ray_runs_on_the_cluster_is_recorded_and_never_reaches_the_proposer(
        tmp_path: Path, cluster) -> None:
    """The holdout reads its own files on the worker (its metric is X * 10 only when it found them), for the
    baseline and each kept state; its result is in the ledger; no prompt holds its files or its output."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY, "holdout.py": HOLDOUT_PY,
                                         "holdout/answers.txt": "the answer: HOLDOUT-ANSWER-2291\n"})
    propose = 'echo "X = $((GOALLOOP_ITERATION + 1))" > knob.py; echo "X up"'
    run = run_goal(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": r"^score: (\S+)"}, "target": {"direction": "maximize"},
        "holdout": {"run": f"{PY} holdout.py", "metric": r"^holdout: (\S+)", "files": ["holdout/**"]},
        "budget": {"iterations": 2}, "executor": _ray(cluster, tmp_path),
        "proposer": {"kind": "command", "run": propose}}, timeout=240)
    assert run.exit_code == 1, run.cli.output
    assert [row[2] for row in run.table()] == ["baseline", "keep", "keep"]
    assert [run.attempts[n]["holdout"] for n in (0, 1, 2)] == [10.0, 20.0, 30.0]
    nodes = {node.node_id for node in cluster.list_all_nodes()}
    for iteration in (0, 1, 2):
        folder = run.run_dir / "attempts" / f"{iteration:04d}"
        assert json.loads((folder / "holdout.ray.json").read_text())["tries"][-1]["node"] in nodes
    prompts = [(run.run_dir / "attempts" / f"{n:04d}" / "prompt.md").read_text() for n in (1, 2)]
    assert all("HOLDOUT-ANSWER" not in p and "holdout: " not in p for p in prompts), prompts[-1]


def test_sandbox_with_ray_is_refused_by_validate_and_run_naming_the_line_and_the_fix(tmp_path: Path) -> None:
    """The sandbox is not applied on the workers, so a goal asking for both is an error of the goal (exit
    2), found before any cluster is joined or anything created."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    goal = write_goal(tmp_path / "goal.yaml", {
        "repo": str(repo), "check": {"run": f"{PY} score.py", "metric": r"score: (\S+)"}, "sandbox": True,
        "budget": {"iterations": 1}, "executor": {"kind": "ray", "address": "127.0.0.1:1"},
        "proposer": {"kind": "scripted", "steps": _knob_steps([2])}})
    line = next(n for n, text in enumerate(goal.read_text().splitlines(), 1) if text.strip() == "kind: ray")
    for command in (["validate", str(goal)], ["run", str(goal), "--home", str(tmp_path / "home")]):
        result = run_cli(*command, cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert f"goal.yaml:{line}: executor.kind: the sandbox is not applied to checks on a Ray cluster" in result.output
        assert "fix: delete sandbox:, or run the checks on this machine (executor: {kind: threads})" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "home").exists()
