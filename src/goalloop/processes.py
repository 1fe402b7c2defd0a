"""Find and end every process a command left behind, including those that left its process group.

A check or proposer runs in a session of its own, so killing its process group ends what stayed in it.
A daemon that calls `setsid`, a double fork, a `setpgid` leave that group. To find them:

- every command is tagged: its environment carries GOALLOOP_PROCESS_TAG=<random>, which its descendants
  inherit (read back from /proc/<pid>/environ);
- goalloop makes itself a child subreaper (Linux `prctl(PR_SET_CHILD_SUBREAPER)`), so a descendant whose
  parent dies is re-parented to goalloop instead of init, and goalloop can reap it once killed;
- at the end of a command (and at its timeout) every process that carries the tag or is still in its
  session, and all their descendants, are killed with SIGKILL, over and over until none is left. Only
  pids allocated since the command started are looked at (its descendants can have no other), unless
  the pid counter may have wrapped around meanwhile; then every process is.

Linux only: elsewhere (macOS) only the process group is killed, and a process that calls `setsid` there
outlives the check. On Linux a process escapes only by both leaving the session and clearing its
environment before its tag is read.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TAG_VARIABLE = "GOALLOOP_PROCESS_TAG"
PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")
LAST_PID = PROC / "sys" / "kernel" / "ns_last_pid"
KILL_PASSES = 50
PROBE_LIMIT = 64
_subreaper: bool | None = None


def new_tag() -> str:
    return secrets.token_hex(8)


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (once; Linux). Whether it is one."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (OSError, AttributeError):
                _subreaper = False
    return _subreaper


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    sid: int
    zombie: bool


def _table(first_pid: int | None = None) -> dict[int, _Proc]:
    """Every process /proc shows (empty where there is no /proc); with `first_pid`, only those whose pid
    was allocated at or after it, if the last pid allocated shows the counter has not wrapped since. A
    range of up to PROBE_LIMIT pids is read pid by pid rather than by listing /proc (a thread's id may be
    among them: it stands for its process, which is a leftover exactly when the thread is)."""
    low, high = 0, sys.maxsize
    if first_pid is not None:
        try:
            last = int(LAST_PID.read_text())
        except (OSError, ValueError):
            last = -1
        if last >= first_pid:
            low, high = first_pid, last
    if high - low < PROBE_LIMIT:
        pids: Iterable[int] = range(low, high + 1)
    else:
        try:
            pids = [int(name) for name in os.listdir(PROC) if name.isdigit() and low <= int(name) <= high]
        except OSError:
            return {}
    found = {}
    for pid in pids:
        info = _stat(pid)
        if info is not None:
            found[info.pid] = info
    return found


def _tagged(pid: int, marker: bytes) -> bool:
    try:
        with open(PROC / str(pid) / "environ", "rb") as stream:
            return marker in stream.read()
    except OSError:
        return False


def leftovers(tag: str, sid: int, adopted_only: bool = False, first_pid: int | None = None) -> list[_Proc]:
    """The processes of the command tagged `tag` whose session was `sid` (itself excluded), with descendants.

    `adopted_only`: read the tag only of this process's own children (enough once we are a subreaper:
    whatever outlived its parent was re-parented to us), not of every process. `first_pid`: the command's
    own pid, when no descendant of it can have a lower one (see `_table`).
    """
    table = _table(first_pid)
    me = os.getpid()
    marker = f"{TAG_VARIABLE}={tag}\0".encode()
    members = {p.pid for p in table.values()
               if p.pid != me and (p.sid == sid or p.pgrp == sid or (
                   not p.zombie and (p.ppid == me or not adopted_only) and _tagged(p.pid, marker)))}
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in members and child != me:
                members.add(child)
                stack.append(child)
    return [table[pid] for pid in sorted(members)]


def kill_leftovers(tag: str, sid: int, recent: bool = False) -> list[int]:
    """SIGKILL everything `leftovers` finds until nothing is left; reap those re-parented to us. Returns
    the pids killed (empty without /proc). `recent`: the command (pid `sid`) started so recently that the
    pid counter cannot have gone all the way round since."""
    killed: set[int] = set()
    me = os.getpid()
    adopted_only = sid > 0 and become_subreaper()
    for attempt in range(KILL_PASSES):
        found = leftovers(tag, sid, adopted_only, first_pid=sid if recent and sid > 0 else None)
        for p in found:
            if p.ppid == me and p.zombie:
                killed.add(p.pid)  # died by itself after it was adopted: reaped below
        alive = [p for p in found if not p.zombie]
        if not alive:
            break
        for p in alive:
            try:
                os.kill(p.pid, signal.SIGKILL)
                killed.add(p.pid)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.001 * attempt)
    _reap_adopted(killed)
    return sorted(killed)


def _reap_adopted(pids: set[int], within: float = 2.0) -> None:
    """Wait for each of `pids` that is (or, once its killed parent is gone, becomes) our child; leave the
    rest to their parents. Only ever waits for these pids: a `waitpid(-1)` would steal the exit status
    of commands other threads are waiting for."""
    me = os.getpid()
    deadline = time.monotonic() + within
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in sorted(pending):
            info = _stat(pid)
            if info is None:
                pending.discard(pid)
            elif info.ppid == me:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                pending.discard(pid)
            elif info.ppid not in pids:  # someone else's child now; its parent reaps it
                pending.discard(pid)
        if pending:
            time.sleep(0.001)


def _stat(pid: int) -> _Proc | None:
    try:
        with open(PROC / str(pid) / "stat", "rb") as stream:
            fields = stream.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0] in (b"Z", b"X"))


def kill_tagged(tag: str) -> None:
    """SIGKILL every process carrying `tag` (a run that died left them, re-parented to init)."""
    kill_leftovers(tag, sid=-1)


def git_processes_near(places: list[Path], files: list[Path]) -> list[int]:
    """Live git processes working in (or naming) one of `places`, or holding one of `files` open; not this
    process's own children: this is asked before a run's git work starts, when the only ones are the kept
    `update-ref --stdin` processes, which hold no lock between transactions."""
    table = _table()
    if not table:
        return []
    roots = [str(p.resolve()) for p in places]
    held = {str(f.resolve()) for f in files}
    busy = []
    for pid, proc in table.items():
        if proc.zombie or pid == os.getpid() or proc.ppid == os.getpid():
            continue
        base = PROC / str(pid)
        try:
            if (base / "comm").read_text(encoding="utf-8", errors="replace").strip() not in ("git", "git-remote-http"):
                continue
            cwd = os.readlink(base / "cwd")
            argv = (base / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(cwd == r or cwd.startswith(r + "/") or r in argv for r in roots) or _holds(base, held):
            busy.append(pid)
    return busy


def _holds(base: Path, files: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in files for fd in (base / "fd").iterdir())
    except OSError:
        return False
