"""Faults of the machine a run lives on, named: a full disk, a folder that cannot be written, a git lock.

An OSError says `[Errno 28] No space left on device` and nothing else. Here each such fault becomes an
InfrastructureError (exit 3; the run stays resumable) whose one line says what happened, where, how much is
needed, and what to do. `require_space` checks before a run writes; `named` and `from_git` translate what
went wrong while it wrote.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from goalloop.errors import InfrastructureError

MIN_FREE_BYTES = 1 << 20
"""Free space a run wants on each disk it writes to before it starts an attempt."""
NEARLY_FULL_BYTES = 64 << 10
"""Below this much free space after a check, the check's output may have been cut short: it is not judged."""

_RESUME = "then `goalloop resume{run}`: the attempt under way is proposed again"


class MachineFault(InfrastructureError):
    """The machine, not the goal or the proposer, stopped the run: the attempt under way was not judged."""


class DiskFull(MachineFault):
    """No space left on the disk holding the run's record, its worktree or the repository."""


class NotWritable(MachineFault):
    """A folder the run writes to became read-only or is not ours to write."""


class DiskError(MachineFault):
    """The disk reported an input/output error (a failing disk, a network filesystem gone away)."""


class GitLockHeld(InfrastructureError):
    """Another git process holds a lock file (index.lock, a ref's .lock) in the repository."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the filesystem holding `path` (or its nearest parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def size_text(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def require_space(paths: list[Path], needed: int, run_id: str = "", below: int | None = None) -> None:
    """Raise DiskFull naming the first of `paths` whose disk has less than `below` (default: `needed`) bytes
    free, and saying that a run needs `needed` there."""
    seen: set[int] = set()
    for path in paths:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        device = os.stat(probe).st_dev
        if device in seen:
            continue
        seen.add(device)
        free = free_bytes(probe)
        if free < (needed if below is None else below):
            raise disk_full(path, free, needed, run_id)


def folder_bytes(path: Path) -> int:
    """Bytes the files under `path` hold (0 when it is gone)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def disk_full(path: Path, free: int, needed: int, run_id: str = "") -> DiskFull:
    return DiskFull(
        f"no space left on the disk holding {path}: {size_text(free)} free, a run needs at least "
        f"{size_text(needed)} there",
        fix=f"free at least {size_text(needed - free)} on that disk (or move --home elsewhere), "
        + _RESUME.format(run=f" {run_id}" if run_id else ""),
    )


def named(exc: OSError, run_id: str = "") -> MachineFault | None:
    """The named fault for an OSError a write raised, or None when it is not a fault of the machine."""
    where = Path(exc.filename) if exc.filename else None
    resume = _RESUME.format(run=f" {run_id}" if run_id else "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        place = where or Path.cwd()
        free = free_bytes(place)
        return disk_full(place, free, max(MIN_FREE_BYTES, free + MIN_FREE_BYTES), run_id)
    if exc.errno == errno.EROFS:
        return NotWritable(
            f"{where or 'a folder the run writes to'} is on a read-only filesystem",
            fix=f"remount it read-write (or move --home to a writable disk), {resume}",
        )
    if exc.errno == errno.EIO:
        return DiskError(
            f"the disk holding {where or 'a folder the run writes to'} reported an input/output error",
            fix=f"check that disk (`dmesg` says what failed; a network filesystem may have gone away), {resume}",
        )
    if exc.errno in (errno.EACCES, errno.EPERM) and where is not None:
        return NotWritable(
            f"{where} cannot be written: permission denied",
            fix=f"make it writable (chmod u+w, or chattr -i), {resume}",
        )
    return None


_LOCK_FILE = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def from_git(stderr: str, where: str, run_id: str = "") -> InfrastructureError | None:
    """The named fault behind a failed git command's stderr, or None when it is some other failure."""
    resume = _RESUME.format(run=f" {run_id}" if run_id else "")
    lock = _LOCK_FILE.search(stderr)
    if lock:
        return GitLockHeld(
            f"git's lock file {lock.group(1)} is held by another git process",
            fix=f"wait for that git command to finish; if none is running, delete {lock.group(1)}, "
            + resume.replace("then ", ""),
        )
    if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
        free = free_bytes(Path(where))
        return disk_full(Path(where), free, max(MIN_FREE_BYTES, free + MIN_FREE_BYTES), run_id)
    if "Read-only file system" in stderr:
        return NotWritable(f"git cannot write in {where}: read-only filesystem",
                           fix=f"remount it read-write, {resume}")
    return None
