"""The rules that make a verdict trustworthy, each enforced by the runner rather than asked of the proposer.

- Check integrity: the check's own files are hashed when the run starts and verified before every check.
- Noise: a candidate that looks better is measured again (`keep.repeats`); it is kept only when its gain
  over the kept state beats `keep.min_delta` at `keep.confidence` by a one-sided t-test against the
  check's noise pooled over every repeated measurement of the run (stats.py). The best state is measured
  again at the end (`keep.confirm`, on by default with repeats) and that is the best reported. The
  holdout warns only when it got worse beyond its own noise.
- Guards: figures besides the metric that must not get worse (guards.py), the count of tests run first.
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
from typing import Iterable

from goalloop import stats
from goalloop.goal import Goal
from goalloop.guards import TESTS_RUN, GuardSpec
from goalloop.ledger import AttemptRecord
from goalloop.path_rules import PathRules

DEFAULT_CONFIDENCE = 0.95


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


def confirms(goal: Goal) -> bool:
    """Whether the best state is measured again at the end: `keep.confirm`, by default when repeats are on."""
    confirm = goal.keep.confirm
    return goal.keep.repeats > 1 if confirm is None else confirm


def check_noise(history: Iterable[AttemptRecord], more: Iterable[list[float]] = ()) -> stats.Noise:
    """The check's noise pooled over every state of the run measured more than once (and `more`)."""
    return stats.pooled_noise([r.samples for r in history if len(r.samples) > 1] + list(more))


def significant_gain(goal: Goal, samples: list[float], kept: AttemptRecord,
                     history: Iterable[AttemptRecord]) -> tuple[bool, str]:
    """Whether the candidate's measurements beat the kept state's beyond min_delta and the noise; and why not."""
    if kept.metric is None:  # the kept state gave no metric (a crashed baseline): any measured value beats it
        return True, ""
    before = kept.samples if len(kept.samples) > 1 else [kept.metric]
    noise = check_noise(history, [samples])
    delta = min_delta(goal, kept.metric)
    found = stats.compare(samples, before, noise, min_delta=delta, maximize=goal.target.direction == "maximize")
    if found.significant(goal.keep.confidence):
        return True, ""
    beyond = f" beyond min_delta {delta:.3g}" if delta else ""
    return False, (f"gain {found.gain:+.3g}{beyond} is within the noise (p={found.p_value:.2f} > "
                   f"{1 - goal.keep.confidence:.2g}; noise sd {noise.sd:.3g} from {noise.df} degrees of freedom)")


def holdout_warning(goal: Goal, before: list[float], after: list[float], history: Iterable[AttemptRecord]) -> str:
    """A warning when the holdout got worse on a kept state: beyond its own noise when it was measured
    repeatedly, and saying it is one measurement when it was not."""
    if not before:
        return ""
    if not after:
        return "holdout check gave no result on this kept state"
    maximize = goal.target.direction == "maximize"
    worse = sum(after) / len(after) < sum(before) / len(before) if maximize else \
        sum(after) / len(after) > sum(before) / len(before)
    if not worse:
        return ""
    shown = f"{statistics.median(before):.6g} -> {statistics.median(after):.6g}"
    if len(before) < 2 and len(after) < 2:
        return f"holdout got worse ({shown}, single measurements): overfitting the visible check?"
    noise = stats.pooled_noise([r.holdout_samples for r in history if len(r.holdout_samples) > 1] + [before, after])
    loss = stats.compare(before, after, noise, min_delta=0.0, maximize=maximize)
    if not loss.significant(goal.keep.confidence):
        return ""
    return f"holdout got worse beyond its noise ({shown}, p={loss.p_value:.2g}): overfitting the visible check?"


def guard_specs(goal: Goal) -> list[GuardSpec]:
    """The goal's guards, and for a pass/fail goal the count of tests run (guarded when the baseline's output
    has a known runner's summary; see guards.py)."""
    specs = [GuardSpec(g.name, g.metric, g.direction == "maximize", g.tolerance) for g in goal.guards]
    if goal.keep.guard_tests and not goal.is_metric_goal:
        specs.insert(0, GuardSpec(TESTS_RUN, None, maximize=True))
    return specs


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
