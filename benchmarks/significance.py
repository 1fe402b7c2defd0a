"""How often the verdict keeps noise, and how often it keeps a real gain, with keep.repeats: 3.

A simulated check: its true value never changes (pure noise) or rises by 3 standard deviations with every
attempt (true steps); each measurement adds Gaussian noise of sigma 1. Each attempt is judged as
attempt.py judges it (first measurement must look better, then keep.repeats measurements and the
significance test of verdict.py against the run's pooled noise), and the history grows as the loop's does.
Prints the share of attempts kept in each case, over several seeded runs of 200 attempts.

    python benchmarks/significance.py [--runs 20] [--attempts 200] [--confidence 0.95]
"""

from __future__ import annotations

import argparse
import random
import statistics

from goalloop import verdict
from goalloop.goal import Goal
from goalloop.ledger import AttemptRecord


def noisy_goal(repeats: int = 3, confidence: float = 0.95, min_delta: float = 0.0) -> Goal:
    return Goal.model_validate({
        "check": {"run": "true", "metric": r"^score:\s*(\S+)"},
        "keep": {"repeats": repeats, "confidence": confidence, "min_delta": min_delta},
        "proposer": {"kind": "search", "params": {"x": {"file": "x.py", "pattern": "X = (.+)", "low": 0, "high": 1}}},
    })


def simulate(goal: Goal, *, step: float, attempts: int, seed: int, sigma: float = 1.0,
             significance: bool = True, ratchet: bool = True) -> float:
    """The share of `attempts` kept when each attempt moves the true value by `step` from the kept state.
    With `significance` off, the rule before it: the candidate's median beats the kept median. With
    `ratchet` off, a keep does not move the kept state: every candidate is judged against the baseline,
    which measures the rate of wrong decisions one by one (a run's keeps raise the bar for noise)."""
    rng = random.Random(seed)
    repeats = goal.keep.repeats

    def measure(true: float, times: int) -> list[float]:
        return [true + rng.gauss(0, sigma) for _ in range(times)]

    true = 0.0
    base = measure(true, repeats)
    kept = AttemptRecord(0, "baseline", "baseline", metric=statistics.median(base), samples=base)
    history = [kept]
    keeps = 0
    for n in range(1, attempts + 1):
        candidate = true + step
        first = measure(candidate, 1)
        if not verdict.beats(goal, first[0], kept.metric):
            history.append(AttemptRecord(n, "discard", "", metric=first[0]))
            continue
        samples = first + measure(candidate, repeats - 1)
        if significance:
            gained, _ = verdict.significant_gain(goal, samples, kept, history)
        else:
            gained = verdict.beats(goal, statistics.median(samples), kept.metric)
        record = AttemptRecord(n, "keep" if gained else "discard", "", metric=statistics.median(samples),
                               samples=samples)
        history.append(record)
        if gained:
            keeps += 1
            if ratchet:
                kept, true = record, candidate
    return keeps / attempts


def kept_shares(step: float, runs: int, attempts: int, confidence: float = 0.95, **rules: bool) -> list[float]:
    goal = noisy_goal(confidence=confidence)
    return [simulate(goal, step=step, attempts=attempts, seed=s, **rules) for s in range(runs)]


def kept_share(step: float, runs: int, attempts: int, confidence: float = 0.95, **rules: bool) -> float:
    return statistics.mean(kept_shares(step, runs, attempts, confidence, **rules))


def _spread(shares: list[float]) -> str:
    return f"{statistics.mean(shares):6.1%} of attempts kept (runs from {min(shares):.1%} to {max(shares):.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    runs, attempts, confidence = args.runs, args.attempts, args.confidence
    print(f"repeats 3, sigma 1, {attempts} attempts, {runs} seeded runs, confidence {confidence}")
    print(f"pure noise:            {_spread(kept_shares(0.0, runs, attempts, confidence))}  want at most 5%")
    print(f"true steps of 3 sigma: {_spread(kept_shares(3.0, runs, attempts, confidence))}  want at least 90%")
    print(f"noise judged against the baseline, one decision at a time: "
          f"{kept_share(0.0, runs, attempts, confidence, ratchet=False):.1%} kept wrongly; without the test "
          f"(median beats median) {kept_share(0.0, runs, attempts, confidence, ratchet=False, significance=False):.1%}")


if __name__ == "__main__":
    main()
