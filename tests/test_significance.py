"""Only significant gains are kept: the t-test against the pooled noise, on simulated noise and through a run.

The simulated runs judge attempts with the same functions attempt.py calls (benchmarks/significance.py
prints the same figures); the end-to-end tests run the CLI on a check whose noise is seeded.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

from conftest import make_repo, results_rows, run_cli, write_goal
from goalloop import stats, verdict
from goalloop.ledger import AttemptRecord

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("significance_bench", ROOT / "benchmarks" / "significance.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
sys.modules["significance_bench"] = bench
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("df, confidence, published", [
    (1, 0.95, 6.3138), (2, 0.95, 2.9200), (4, 0.95, 2.1318), (10, 0.95, 1.8125), (30, 0.99, 2.4573),
    (120, 0.975, 1.9799),
])
def test_the_t_quantile_matches_published_tables(df: int, confidence: float, published: float) -> None:
    assert stats.t_quantile(confidence, df) == pytest.approx(published, abs=1e-3)


def test_pooled_noise_ignores_single_measurements() -> None:
    noise = stats.pooled_noise([[1.0, 3.0], [5.0], [10.0, 10.0, 13.0]])
    assert noise.df == 1 + 2
    assert noise.sd == pytest.approx(((2 + 6) / 3) ** 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_pure_noise_keeps_at_most_5_percent_of_200_attempts(seed: int) -> None:
    goal = bench.noisy_goal(repeats=3)
    assert bench.simulate(goal, step=0.0, attempts=200, seed=seed) <= 0.05


def test_true_steps_of_3_sigma_are_kept_at_least_90_percent_of_the_time() -> None:
    """Over 10 seeded runs of 200 attempts, every attempt a true gain of 3 sigma: 96% kept on average. Single
    runs vary (the lowest of 20 seeds keeps 89%: a lucky keep raises the bar for the next step)."""
    goal = bench.noisy_goal(repeats=3)
    shares = [bench.simulate(goal, step=3.0, attempts=200, seed=seed) for seed in range(10)]
    assert statistics.mean(shares) >= 0.90, shares
    assert min(shares) >= 0.85, shares


def test_one_decision_at_a_time_noise_is_kept_near_the_stated_rate_and_far_more_without_the_test() -> None:
    """Against a baseline that never moves, each noise candidate is one test at confidence 0.95: about 5% are
    kept wrongly. The rule before (the median of 3 beats the kept median) keeps several times as many."""
    with_test = bench.kept_share(0.0, runs=5, attempts=200, ratchet=False)
    without = bench.kept_share(0.0, runs=5, attempts=200, ratchet=False, significance=False)
    assert with_test < 0.10
    assert without > 0.30


def test_a_higher_confidence_keeps_less_noise() -> None:
    loose = bench.kept_share(0.0, runs=3, attempts=200, confidence=0.8, ratchet=False)
    strict = bench.kept_share(0.0, runs=3, attempts=200, confidence=0.99, ratchet=False)
    assert strict < loose


def test_min_delta_is_on_top_of_the_noise() -> None:
    """A clear gain of 1.0 with tiny noise is significant; with min_delta 0.99 the excess 0.01 is not."""
    kept = AttemptRecord(0, "baseline", "", metric=10.0, samples=[9.99, 10.0, 10.01])
    samples = [10.99, 11.0, 11.01]
    assert verdict.significant_gain(bench.noisy_goal(), samples, kept, [kept])[0]
    strict = bench.noisy_goal(min_delta=0.99)
    gained, why = verdict.significant_gain(strict, samples, kept, [kept])
    assert not gained and "within the noise" in why and "min_delta 0.99" in why


def test_the_holdout_warns_only_beyond_its_own_noise() -> None:
    goal = bench.noisy_goal()
    history = [AttemptRecord(0, "baseline", "", holdout_samples=[1.0, 1.2, 0.8])]
    assert verdict.holdout_warning(goal, [1.0, 1.2, 0.8], [0.99, 1.19, 0.79], history) == ""
    assert "beyond its noise" in verdict.holdout_warning(goal, [1.0, 1.2, 0.8], [0.0, 0.2, -0.2], history)
    assert "single measurements" in verdict.holdout_warning(goal, [1.0], [0.99], [])


# -- through the CLI ---------------------------------------------------------------------------------------
NOISY_SCORE_PY = """\
import os, random, knob
path = os.environ["NOISE_COUNTER"]
count = int(open(path).read())
open(path, "w").write(str(count + 1))
print(f"score: {knob.X + random.Random(count).gauss(0, 1):.6f}")
"""


def _noisy_run(tmp_path: Path, knobs: list[str], **keep: object) -> tuple[int, list[dict], Path, str]:
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 0\n", "score.py": NOISY_SCORE_PY})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score:\s*(\S+)"},
        "keep": {"repeats": 3, **keep}, "budget": {"iterations": len(knobs)},
        "proposer": {"kind": "scripted", "steps": [
            {"description": f"X = {k}", "files": {"knob.py": f"X = {k}\n"}} for k in knobs]},
    })
    home = tmp_path / "home"
    result = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path, env={"NOISE_COUNTER": str(counter)})
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    return result.exit_code, results_rows(run_dir), run_dir, result.output


def test_a_run_keeps_a_real_gain_discards_one_within_the_noise_and_reports_the_best_re_measured(tmp_path: Path) -> None:
    """X = 0.3 is a true gain of 0.3 sigma: discarded, the reason naming the test's p-value. X = 6 is a gain of
    6 sigma: kept. confirm is on by default with repeats: the best is measured 3 more times and the summary
    gives that median as the figure to believe."""
    code, rows, run_dir, out = _noisy_run(tmp_path, ["0.3", "6"])
    assert code == 1, out
    assert [r["verdict"] for r in rows] == ["baseline", "discard", "keep"], out
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    attempts = {e["iteration"]: e for e in events if e["event"] == "attempt"}
    if attempts[1]["samples"]:
        assert "within the noise (p=" in attempts[1]["reason"], attempts[1]
    [confirm] = [e for e in events if e["event"] == "confirm"]
    assert len(confirm["samples"]) == 3
    assert confirm["metric"] == pytest.approx(statistics.median(confirm["samples"]))
    assert abs(confirm["metric"] - 6) < 3
    assert "measured again 3 times" in out


def test_confirm_false_turns_the_re_measurement_off(tmp_path: Path) -> None:
    code, rows, run_dir, out = _noisy_run(tmp_path, ["6"], confirm=False)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] == "confirm"], out


HOLDOUT_SEQUENCE_PY = """\
import os
path = os.environ["HOLDOUT_COUNTER"]
count = int(open(path).read())
open(path, "w").write(str(count + 1))
print(f"holdout: {os.environ['HOLDOUT_VALUES'].split()[count]}")
"""
EXACT_SCORE_PY = "import knob\nprint(f'score: {knob.X}')\n"


@pytest.mark.parametrize("repeats, warned", [(3, False), (1, True)])
def test_the_holdout_is_measured_as_often_as_the_check_and_warns_only_beyond_its_noise(
        tmp_path: Path, repeats: int, warned: bool) -> None:
    """The holdout reads 1.0, 1.2, 0.8 on the baseline and 0.95, 1.15, 0.75 on the kept state: 0.05 lower, a
    quarter of its own noise. With repeats 3 no warning; with single measurements (1.0 -> 0.95) it warns."""
    counter = tmp_path / "holdout.txt"
    counter.write_text("0")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": EXACT_SCORE_PY,
                                         "holdout.py": HOLDOUT_SEQUENCE_PY})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score:\s*(\S+)"},
        "holdout": {"run": f"{sys.executable} holdout.py", "metric": r"^holdout:\s*(\S+)"},
        "keep": {"repeats": repeats, "confirm": False}, "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"description": "up", "files": {"knob.py": "X = 5\n"}}]},
    })
    home = tmp_path / "home"
    values = "1.0 1.2 0.8 0.95 1.15 0.75" if repeats > 1 else "1.0 0.95"
    result = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path,
                     env={"HOLDOUT_COUNTER": str(counter), "HOLDOUT_VALUES": values})
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    attempts = [e for e in events if e["event"] == "attempt"]
    assert attempts[1]["verdict"] == "keep", result.output
    if repeats > 1:
        assert attempts[0]["holdout_samples"] == [1.0, 1.2, 0.8]
        assert attempts[1]["holdout_samples"] == [0.95, 1.15, 0.75]
    assert bool(attempts[1]["warning"]) is warned, attempts[1]
