"""The rules that make a verdict trustworthy, each enforced by the runner rather than asked of the proposer.

- Check integrity: the check's own files are hashed when the run starts and verified before every check.
- Noise: a candidate that looks better is measured again; it is kept only if the median of its
  measurements beats the kept median by more than `keep.min_delta`.
- Stalls: the same failure, normalised, several times in a row is named, so the next prompt says so.

What this does not cover: a check whose result depends on something outside the repository (the network,
the clock, the machine's load) beyond what repeated measurement averages out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
from pathlib import Path

from goalloop.goal import Goal
from goalloop.workspace import PathRules


# -- integrity ------------------------------------------------------------------------------------------
def pin_protected_files(worktree: Path, rules: PathRules) -> dict[str, str]:
    """sha256 of every file in the worktree that the rules protect, keyed by repo path."""
    pins = {}
    for directory, subdirs, files in os.walk(worktree):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        for name in files:
            path = Path(directory) / name
            rel = path.relative_to(worktree).as_posix()
            if rules.is_protected(rel):
                pins[rel] = _digest(path)
    return pins


def tampered_files(worktree: Path, pins: dict[str, str]) -> list[str]:
    """Pinned files that changed or disappeared, tracked by git or not."""
    return [rel for rel, digest in pins.items() if _digest(worktree / rel) != digest]


def save_pins(path: Path, pins: dict[str, str]) -> None:
    path.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")


def load_pins(path: Path) -> dict[str, str] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "symlink:" + os.readlink(path)
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError:
        return "missing"


# -- noise ----------------------------------------------------------------------------------------------
def min_delta(goal: Goal, kept_metric: float) -> float:
    """The smallest improvement over `kept_metric` that counts, in the metric's units."""
    delta = goal.keep.min_delta
    if isinstance(delta, str):
        return abs(kept_metric) * float(delta.rstrip("%")) / 100
    return float(delta)


def beats(goal: Goal, candidate: float, kept: float | None) -> bool:
    """Whether `candidate` improves on `kept` by more than the goal's minimum delta."""
    if kept is None:
        return True
    margin = min_delta(goal, kept)
    if goal.target.direction == "maximize":
        return candidate > kept + margin
    return candidate < kept - margin


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    return max(values) - min(values) if values else 0.0


# -- stalls ---------------------------------------------------------------------------------------------
_VOLATILE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-f]{7,40}\b|\d+(\.\d+)?")


def normalise_failure(text: str) -> str:
    """A failure line with numbers, hashes and addresses blanked, so reruns of one failure compare equal."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return " ".join(_VOLATILE.sub("#", last).split())[:300]


def repeated_failure(failures: list[str], times: int) -> str | None:
    """The failure repeated in each of the last `times` failed attempts, if they all failed alike."""
    if times < 2 or len(failures) < times:
        return None
    recent = failures[-times:]
    return recent[0] if recent[0] and all(f == recent[0] for f in recent) else None
