"""Checks as tasks on a Ray cluster (`executor: {kind: ray}`). The only module that imports ray.

Proposals, git and the ledger stay on the machine that runs goalloop (the head); each check and holdout
of a slot becomes one Ray task asking for the goal's `num_cpus`, `num_gpus` and `resources`, so
`parallel: N` puts up to N checks in flight across the cluster and Ray queues what does not fit.

What travels: the run's base tree, once per run, as a `git archive` tar put in Ray's object store (each
node fetches it once and keeps a scratch checkout per slot), and per check the attempt's diff against
the base (usually a few KB). With `fetch_from`, workers read both from the repository at that path
(a shared filesystem) instead. The goal's variables travel with the check; the rest of its environment
is the worker's own, secrets dropped as on the head. What comes back: how the check ended, the metric
(parsed on the worker from the full output) and up to 256 KB of each of stdout and stderr, written into
the attempt's folder here as check.stdout.log / check.stderr.log, with where it ran in <prefix>.ray.json.

Faults are data. A task lost to the cluster (its worker process died, its node died, an object was lost)
is retried once, on another node when one can take it, since a lost node or a killed worker says nothing
about the attempt; a second loss is a `crash` with both reasons. A task that failed in its own code (the
scratch checkout could not be made: git or tar missing, disk full) is a `crash` with that reason at once,
since another try would fail the same way. Every loss is a `check_lost` event in the ledger.

Ctrl-C: each remote check has a local stand-in process whose group is recorded in the slot's pid file,
like a local check's; when the loop kills it (or Ctrl-C lands in the main thread, in a round of one),
the task is cancelled (force) and its worker's guard kills the check's group; then a small task on the
check's node kills every process carrying the check's tag (a daemon it started in a session of its own),
and goalloop waits for that before it says the run is interrupted. If goalloop itself is killed, Ray
ends the tasks of the dead driver, and the guard the check's group.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import goalloop
from goalloop.check import CheckResult, ProcessResult
from goalloop.errors import InfrastructureError
from goalloop.executors import CheckJob
from goalloop.executors.scratch import ShippedCheck, ShippedResult, end_stopped_check, run_shipped
from goalloop.git_runner import git_environment
from goalloop.ledger import Ledger

CONNECT_SECONDS = 5.0
WAIT_STEP_SECONDS = 0.25
STOP_CONFIRM_SECONDS = 30.0
WARM_UP_SECONDS = 60.0
WARM_UP_STEP_SECONDS = 0.05
FIX_UNREACHABLE = ("start a cluster with `ray start --head` (then executor.address: auto on that machine), or set "
                   "executor.address to a running cluster's head, host:6379 or ray://host:10001 "
                   "(`ray status --address ADDRESS` says whether it is up)")


def connect(config: Any, parallel: int = 1) -> RayCluster:
    """Join the cluster the goal names, or raise InfrastructureError (exit 3) saying how to get one.

    Then start as many workers as the first round can use (see RayCluster.warm_up), so that its checks
    do not each wait for a Python worker process to start.
    """
    address = config.address
    if address != "auto":
        _reachable(address)
    try:
        ray.init(
            address=address, log_to_driver=False, logging_level=logging.ERROR, namespace="goalloop",
            runtime_env={"py_modules": [goalloop]}, ignore_reinit_error=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InfrastructureError(f"cannot reach the Ray cluster at executor.address {address!r}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                                  fix=FIX_UNREACHABLE) from None
    cluster = RayCluster(config)
    cluster.check_fits()
    cluster.warm_up(parallel)
    return cluster


def _reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at `address`."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if match is None:
        raise InfrastructureError(f"executor.address {address!r} is not auto, host:port or ray://host:port",
                                  fix="write e.g. auto, 10.0.0.5:6379 or ray://10.0.0.5:10001")
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise InfrastructureError(f"cannot reach the Ray cluster at executor.address {address!r}: "
                                  f"{exc.strerror or exc}", fix=FIX_UNREACHABLE) from None


class RayCluster:
    """The joined cluster and what one check asks of it."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.request: dict[str, float] = {"CPU": float(config.num_cpus), "GPU": float(config.num_gpus),
                                          **{k: float(v) for k, v in config.resources.items()}}

    def nodes_that_fit(self) -> list[str]:
        """Ids of the live nodes with enough of every resource for one check."""
        return [node["NodeID"] for node in ray.nodes() if node.get("Alive") and all(
            node.get("Resources", {}).get(name, 0.0) >= amount for name, amount in self.request.items() if amount)]

    def options(self, name: str) -> dict[str, Any]:
        return {"num_cpus": self.config.num_cpus, "num_gpus": self.config.num_gpus,
                "resources": dict(self.config.resources), "name": name}

    def warm_up(self, workers: int) -> None:
        """Have `workers` worker processes up at once (at most as many checks as the cluster fits).

        Each warm-up task holds its worker until all of them run: a task that ended at once would hand its
        worker to the next one, and the first round would still wait for the others to start. Then they
        are cancelled (gently: the workers stay up for the checks). A busy cluster ends the wait early."""
        streams = [_warm_up.options(**self.options("goalloop-warm-up")).remote(WARM_UP_SECONDS)
                   for _ in range(self.checks_that_fit(most=workers))]
        deadline = time.monotonic() + WARM_UP_SECONDS
        try:
            for stream in streams:
                if not ray.wait([stream], timeout=max(deadline - time.monotonic(), 0.0))[0]:
                    break
        finally:
            for stream in streams:
                ray.cancel(stream)

    def checks_that_fit(self, most: int) -> int:
        """How many checks (up to `most`) the live nodes can run at once, by what each has of every
        resource a check asks for."""
        total = 0
        for node in ray.nodes():
            if node.get("Alive"):
                has = node.get("Resources", {})
                total += min((int(has.get(name, 0.0) // amount) for name, amount in self.request.items() if amount),
                             default=most)
        return min(total, most)

    def check_fits(self) -> None:
        if self.nodes_that_fit():
            return
        wanted = ", ".join(f"{amount:g} {name}" for name, amount in self.request.items() if amount)
        total = ray.cluster_resources()
        has = ", ".join(f"{total[name]:g} {name}" for name in sorted(total) if not name.startswith(("node:", "object_store", "memory")))
        raise InfrastructureError(
            f"no node of the Ray cluster can run one check: each asks for {wanted}; the cluster has {has or 'nothing'}",
            fix="lower executor.num_cpus / num_gpus / resources, or add a node that has them "
                "(`ray start --address HEAD --num-gpus 1`)")


@ray.remote(max_retries=0)
def _warm_up(most: float):  # noqa: ANN202 - a Ray streaming generator
    """Imports what a check needs (seconds of goalloop's modules on a busy machine, else paid by the first
    check of each worker), says it started, then holds its worker until cancelled (a cancel lands at a
    yield) or for `most` s."""
    import goalloop.executors.scratch  # noqa: F401
    yield None
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        time.sleep(WARM_UP_STEP_SECONDS)
        yield None


@ray.remote(max_retries=0)
def _check_task(job: ShippedCheck, base: list[ray.ObjectRef]):  # noqa: ANN201 - a Ray streaming generator
    """Runs on a worker: first says which node it is on (so a loss can be placed), then runs the check.

    `base` is wrapped in a list so that Ray fetches the tar only when the slot's scratch checkout needs it.
    """
    yield ray.get_runtime_context().get_node_id()
    yield run_shipped(job, lambda: ray.get(base[0]) if base else b"")


@ray.remote(max_retries=0, num_cpus=0)
def _end_stopped_check(job: ShippedCheck) -> None:
    end_stopped_check(job)


class RayChecks:
    """A CheckRunner that runs every check of the run as a Ray task on a scratch checkout of its commit."""

    runs_in_worktree = False
    """It ships the commit the worktree's HEAD names, which must exist when the check starts."""

    def __init__(self, cluster: RayCluster, ledger: Ledger, repo: Path, base_commit: str, run_id: str,
                 env_pass: tuple[str, ...] = ()) -> None:
        self.cluster, self.ledger, self.repo = cluster, ledger, repo
        self.base_commit, self.run_id, self.env_pass = base_commit, run_id, tuple(env_pass)
        self.config = cluster.config
        self._base_ref: ray.ObjectRef | None = None
        self._lock = threading.Lock()

    def run(self, job: CheckJob) -> CheckResult:
        shipped_at = time.monotonic()
        commit = self._git("rev-parse", "HEAD", cwd=job.worktree).decode().strip()
        shipped = ShippedCheck(
            command=job.command, timeout=job.timeout, metric_pattern=job.metric_pattern,
            metric_file=job.metric_file, prefix=job.prefix, env_pass=self.env_pass, run_id=self.run_id,
            slot=job.slot, base_commit=self.base_commit, commit=commit, fetch_from=self.config.fetch_from,
            goal_env={k: v for k, v in job.goal_env.items() if not k.startswith("GIT_CONFIG_")},
            diff=None if self.config.fetch_from else self._diff(commit), scratch_root=self.config.scratch,
        )
        tries: list[Try] = []
        while True:
            tried = self._one_try(job, shipped, avoid=tries[-1].node if tries else None)
            tries.append(tried)
            if tried.result is not None or tried.final or len(tries) > self.config.retries:
                break
        return self._result(job, tries, time.monotonic() - shipped_at)

    # -- one task -------------------------------------------------------------------------------------
    def _one_try(self, job: CheckJob, shipped: ShippedCheck, avoid: str | None) -> Try:
        """Submit the task (on another node than `avoid` when one can take it) and wait for it."""
        options = self.cluster.options(f"goalloop-{job.prefix}-{job.iteration}")
        placed = next((n for n in self.cluster.nodes_that_fit() if n != avoid), None) if avoid else None
        if placed:  # hard: the retry runs there or is lost there, never back on the node that failed
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placed, soft=False)
        base = [] if self.config.fetch_from else [self._base()]
        stream = _check_task.options(**options).remote(shipped, base)
        started = time.monotonic()
        node = placed
        stand_in = _StandIn(job.pid_file)
        try:
            node = stand_in.wait_for(stream)
            result = stand_in.wait_for(stream)
            return Try(time.monotonic() - started, node=node, result=result)
        except _Stopping:
            self._stop(stream, job, shipped, node)
            return Try(time.monotonic() - started, node=node, fault="interrupted: goalloop is stopping", final=True)
        except KeyboardInterrupt:  # a round of one waits in the main thread, where Ctrl-C lands
            self._stop(stream, job, shipped, node)
            raise
        except ray.exceptions.RayTaskError as exc:  # the task's own code failed: another try would fail the same way
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            return Try(time.monotonic() - started, node=node, fault=_first_line(cause), final=True)
        except ray.exceptions.RayError as exc:  # lost to the cluster: its worker or node died, an object was lost
            if isinstance(exc, ray.exceptions.ObjectLostError):
                with self._lock:
                    self._base_ref = None
            return Try(time.monotonic() - started, node=node,
                       fault=f"{type(exc).__name__}: {_first_line(exc)}")
        finally:
            stand_in.end()

    def _stop(self, stream: Any, job: CheckJob, shipped: ShippedCheck, node: str | None) -> None:
        """Cancel the task (its worker is killed, and its guard kills the check), then, on the node the check
        runs on, kill what is left of it and wait for that: goalloop says a run is stopped only once its
        checks are."""
        ray.cancel(stream, force=True)
        nodes = [node] if node else self.cluster.nodes_that_fit()  # it may have started where we did not read yet
        ending = {where: _end_stopped_check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(where, soft=False)).remote(shipped) for where in nodes}
        for where, ended in ending.items():
            try:
                ray.get(ended, timeout=STOP_CONFIRM_SECONDS)
            except ray.exceptions.RayError as exc:  # GetTimeoutError among them
                with self._lock:
                    self.ledger.event("check_lost", iteration=job.iteration, prefix=job.prefix, node=where,
                                      reason=f"could not confirm that the stopped check ended: {_first_line(exc)}",
                                      action="left to the worker's guard")

    # -- what travels -----------------------------------------------------------------------------------
    def _base(self) -> ray.ObjectRef:
        with self._lock:
            if self._base_ref is None:
                self._base_ref = ray.put(self._git("archive", "--format=tar", self.base_commit))
            return self._base_ref

    def _diff(self, commit: str) -> bytes:
        return self._git("diff-tree", "-r", "-p", "--binary", "--full-index", "--no-renames", self.base_commit, commit)

    def _git(self, *args: str, cwd: Path | None = None) -> bytes:
        """Read-only git whose output is bytes (a tar, a binary patch), so not the guarded text runner; like
        it, never with the variables that would point git at another repository or index."""
        done = subprocess.run(["git", "-C", str(cwd or self.repo), *args], capture_output=True, check=False,
                              env=git_environment(os.environ))
        if done.returncode != 0:
            raise InfrastructureError(f"git {args[0]} failed while shipping a check: "
                                      f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    # -- what comes back --------------------------------------------------------------------------------
    def _result(self, job: CheckJob, tries: list[Try], seconds: float) -> CheckResult:
        stdout_path = job.log_dir / f"{job.prefix}.stdout.log"
        stderr_path = job.log_dir / f"{job.prefix}.stderr.log"
        for number, tried in enumerate(tries[:-1] if tries[-1].result is not None else tries):
            if tried.final and tried.result is None and tried.fault.startswith("interrupted"):
                continue
            after = tries[number + 1] if number + 1 < len(tries) else None
            action = "recorded as a crash" if after is None or tried.final else (
                "retried on another node" if after.node and after.node != tried.node else "retried")
            with self._lock:
                self.ledger.event("check_lost", iteration=job.iteration, prefix=job.prefix, node=tried.node,
                                  reason=tried.fault, action=action)
        where: dict[str, Any] = {"tries": [{"node": t.node, "seconds": round(t.seconds, 3), "fault": t.fault or None}
                                           for t in tries], "seconds": round(seconds, 3)}
        last = tries[-1]
        if last.result is not None:
            result = last.result
            stdout_path.write_bytes(result.stdout)
            stderr_path.write_bytes(result.stderr)
            where.update(host=result.host, scratch=result.scratch, prepare_seconds=round(result.prepare_seconds, 3),
                         base_extracted=result.base_extracted, check_seconds=round(result.seconds, 3),
                         goalloop_from=result.code_from)
            process = ProcessResult(result.exit_code, result.seconds, result.timed_out, stdout_path, stderr_path)
            checked = CheckResult(process, result.metric, result.problem)
        else:
            reasons = "; then ".join(t.fault for t in tries)
            problem = (f"could not run on the worker: {reasons}" if len(tries) == 1 and last.final
                       else f"was lost on the cluster ({len(tries)} tries): {reasons}")
            stdout_path.write_bytes(b"")
            stderr_path.write_text(f"goalloop: the check {problem}\n", encoding="utf-8")
            checked = CheckResult(ProcessResult(None, seconds, False, stdout_path, stderr_path), None, problem)
        (job.log_dir / f"{job.prefix}.ray.json").write_text(json.dumps(where, indent=2) + "\n", encoding="utf-8")
        return checked


class _StandIn:
    """A local process standing for a remote check: its group is in the slot's pid file, as a local check's
    would be, so the loop's way of stopping a slot (killing that group) reaches the remote check too."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.process = subprocess.Popen(["/bin/sh", "-c", "cat >/dev/null"], stdin=subprocess.PIPE,
                                        start_new_session=True)
        pid_file.write_text(str(self.process.pid), encoding="utf-8")

    def wait_for(self, stream: Any) -> Any:
        """The task's next word; _Stopping if the stand-in is killed meanwhile (Ctrl-C, SIGTERM)."""
        while not ray.wait([stream], timeout=WAIT_STEP_SECONDS)[0]:
            if self.process.poll() is not None:
                raise _Stopping
        return ray.get(next(stream))

    def end(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        if self.process.stdin is not None:
            self.process.stdin.close()  # its `cat` ends; so does it if goalloop dies
        self.process.wait()


class _Stopping(Exception):
    """The loop is stopping the slot (its stand-in process was killed)."""


@dataclass
class Try:
    """One task of a check: where it ran, and its result or why there is none."""

    seconds: float
    node: str | None = None
    result: ShippedResult | None = None
    fault: str = ""
    final: bool = False
    """No other try: the task's own code failed, or goalloop is stopping."""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
