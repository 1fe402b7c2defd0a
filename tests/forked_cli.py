"""The real CLI entry point, many times over, without paying for Python's start-up each time.

A helper process imports goalloop once, then for each request forks a child that runs `goalloop.cli.main()`
with the request's argv, cwd, stdin and output files, exactly as `python -m goalloop` would after its imports.
The child's exit code, its peak resident memory (from wait4, so it counts the child and what it ran) and
its wall time come back. A child still running at its timeout is killed and reported as such: an answer
that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SERVER = r"""
import json, os, signal, sys, time
os.environ.update(COLUMNS="200", NO_COLOR="1")
import goalloop.cli
import goalloop.cli.goals, goalloop.cli.records, goalloop.cli.running  # the CLI imports these lazily, per command
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(request["cwd"])
            os.setsid()
            for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            sys.argv = ["goalloop", *request["argv"]]
            goalloop.cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            code = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    deadline = started + request["timeout"]
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            os.killpg(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    print(json.dumps({"exit_code": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
                      "seconds": time.monotonic() - started, "max_rss_kib": usage.ru_maxrss}), flush=True)
"""


@dataclass
class ForkedResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mib: float
    timed_out: bool

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class ForkedCli:
    """Runs `goalloop ARGS` in children forked from one process that has goalloop imported."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._count = 0
        self._server = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
        assert self._server.stdout is not None and self._server.stdout.readline().strip() == "ready"

    def __call__(self, *args: str, cwd: Path, timeout: float = 60) -> ForkedResult:
        self._count += 1
        out, err = self._scratch / f"{self._count}.out", self._scratch / f"{self._count}.err"
        request = {"argv": list(args), "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout}
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        answer = json.loads(self._server.stdout.readline())
        return ForkedResult(
            exit_code=answer["exit_code"], stdout=out.read_text(encoding="utf-8", errors="replace"),
            stderr=err.read_text(encoding="utf-8", errors="replace"), seconds=answer["seconds"],
            max_rss_mib=answer["max_rss_kib"] / 1024, timed_out=answer["timed_out"],
        )

    def close(self) -> None:
        if self._server.stdin is not None:
            self._server.stdin.close()
        self._server.wait(timeout=30)
