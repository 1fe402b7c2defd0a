"""Whether a kept result can be trusted: each test is an adversarial proposer attacking one verdict rule.

Every run is `python -m goalloop run` in a subprocess on a real git repository in a tmp dir, with a scripted
or command proposer that tries to game the check: edit or delete a test, edit the check, replace a pinned
file by a symlink, hide an edit from git, print a fake or non-finite metric, change a file outside the
editable set, ride the noise, overfit the visible check, bloat the code, repeat one failure. Checks that
must not run log their runs to a file outside the repository, so a test can prove they did not.
"""

from __future__ import annotations

import random
import re
import shlex
import statistics
from pathlib import Path

import pytest
from conftest import make_repo, run_cli
from test_core_loop import COUNTING_SCORE_PY, METRIC, PY, Run, run_goal, scripted, step

# -- shared fixtures of the attacks ---------------------------------------------------------------------------
# A test runner: logs the iteration that ran it to $CHECK_LOG (outside the repo), runs every tests/*.py.
RUN_TESTS_PY = """\
import glob, os, runpy, sys
with open(os.environ["CHECK_LOG"], "a") as log:
    log.write(os.environ.get("GOALLOOP_ITERATION", "?") + "\\n")
failed = []
for path in sorted(glob.glob("tests/*.py")):
    try:
        runpy.run_path(path)
    except AssertionError as exc:
        failed.append(f"{path}: {exc}")
print("\\n".join(failed) or "all passed")
sys.exit(1 if failed else 0)
"""
CALC_BROKEN = "def add(a, b):\n    return a - b\n"
CALC_FIXED = "def add(a, b):\n    return a + b\n"
TEST_A = "import calc\nassert calc.add(1, 1) in (0, 2), 'add(1, 1)'\n"
TEST_B = "import calc\nassert calc.add(2, 3) == 5, 'add(2, 3) is not 5'\n"


def repo_with_tests(tmp_path: Path, **more: str) -> Path:
    """calc.py with a bug that tests/test_b.py catches; the check runs tests/*.py and logs its runs."""
    return make_repo(tmp_path / "proj", {"calc.py": CALC_BROKEN, "run_tests.py": RUN_TESTS_PY,
                                         "tests/test_a.py": TEST_A, "tests/test_b.py": TEST_B, **more})


def checked_iterations(log: Path) -> list[str]:
    """The iterations whose check ran, in order, from the log the check writes outside the repo."""
    return log.read_text().split() if log.exists() else []


def assert_rejected_unchecked(run: Run, iteration: int, log: Path, *words: str) -> None:
    """Attempt `iteration` was rejected with a reason naming `words`, and its check never ran."""
    attempt = run.attempts[iteration]
    assert attempt["verdict"] == "rejected", (attempt, run.cli.output)
    for word in words:
        assert word in attempt["reason"], attempt["reason"]
    assert str(iteration) not in checked_iterations(log), "the check ran for a rejected attempt"


def command(script: str, prompts: Path | None = None) -> dict:
    """A command proposer running `script` in the worktree; with `prompts`, it first copies the prompt file
    it was given to prompts/<iteration>.md."""
    copy = f'cp "$GOALLOOP_PROMPT_FILE" {shlex.quote(str(prompts))}/"$GOALLOOP_ITERATION".md; ' if prompts else ""
    return {"kind": "command", "run": copy + script}


def prompt_dir(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    return prompts


# -- the check's files are pinned -----------------------------------------------------------------------------
def test_editing_a_protected_test_file_is_rejected_without_running_the_check(tmp_path: Path) -> None:
    """The adversary weakens the failing test instead of fixing the code."""
    repo = repo_with_tests(tmp_path)
    log = tmp_path / "checks.log"
    goal = scripted([step("loosen the test", {"tests/test_b.py": "assert True\n"})],
                    run=f"{PY} run_tests.py", metric=None, protected=["tests/**"])
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", "tests/test_b.py")
    assert checked_iterations(log) == ["0"]


def test_deleting_a_protected_test_is_rejected_without_running_the_check(tmp_path: Path) -> None:
    """The adversary deletes the test that fails, so that every remaining test passes."""
    repo = repo_with_tests(tmp_path)
    log = tmp_path / "checks.log"
    goal = scripted([step("remove the failing test", {"tests/test_b.py": None})],
                    run=f"{PY} run_tests.py", metric=None, protected=["tests/**"])
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", "tests/test_b.py")
    assert run.exit_code == 1, run.cli.output


WEIGHTED_SCORE_PY = """\
import json, os, knob
with open(os.environ["CHECK_LOG"], "a") as log:
    log.write(os.environ.get("GOALLOOP_ITERATION", "?") + "\\n")
weight = json.load(open("fixtures/weight.json"))["weight"]
print(f"score: {knob.X * weight}")
"""


@pytest.mark.parametrize("path, edit", [
    ("score.py", "sed -i 's/print(f\"score: /print(f\"score: 1000 + /' score.py"),
    ("fixtures/weight.json", "echo '{\"weight\": 1000}' > fixtures/weight.json"),
], ids=["script-named-in-check-run", "file-in-check-files"])
def test_editing_the_checks_own_files_is_rejected_without_running_the_check(
    tmp_path: Path, path: str, edit: str
) -> None:
    """The adversary rewrites the check (the script `check.run` names, or a file listed in `check.files`)
    so that it reports a better score, together with an innocent-looking change to the code."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": WEIGHTED_SCORE_PY,
                                         "fixtures/weight.json": '{"weight": 1}\n'})
    log = tmp_path / "checks.log"
    goal = {"check": {"run": f"{PY} score.py", "metric": METRIC, "files": ["fixtures/weight.json"]},
            "budget": {"iterations": 1}, "proposer": command(f"{edit} && echo '# tidy' >> knob.py")}
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", path)
    assert run.rows[1]["metric"] == ""


def test_the_instructions_file_inside_the_repo_is_protected(tmp_path: Path) -> None:
    """The adversary rewrites the task it was given (instructions_file, committed in the repo)."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY,
                                         "TASK.md": "Raise X without touching the check.\n"})
    log = tmp_path / "checks.log"
    goal = scripted([step("redefine the task", {"TASK.md": "Anything goes.\n", "knob.py": "X = 2\n"})],
                    instructions_file="proj/TASK.md")
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", "TASK.md")


def test_a_protected_file_replaced_by_a_symlink_is_rejected_even_with_the_same_content(tmp_path: Path) -> None:
    """The adversary replaces the pinned reference answer by a symlink to a copy it controls (same bytes today,
    anything it likes later): a symlink is a change, whatever the file it points to holds."""
    repo = repo_with_tests(tmp_path, **{"data/expected.txt": "5\n"})
    log = tmp_path / "checks.log"
    attack = "cp data/expected.txt mine.txt && rm data/expected.txt && ln -s ../mine.txt data/expected.txt"
    goal = {"check": {"run": f"{PY} run_tests.py"}, "protected": ["data/**"], "budget": {"iterations": 1},
            "proposer": command(attack)}
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", "data/expected.txt")


@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_a_protected_test_edited_behind_gits_back_is_rejected_and_does_not_poison_later_attempts(
    tmp_path: Path, flag: str
) -> None:
    """The adversary marks the failing test `git update-index <flag>` and empties it: git's diff shows only an
    innocent comment, so only the hash pin can see the test changed. Attempt 2 then makes an honest fix, which
    must be judged on the real test (and kept): the rejected attempt's edit must not linger in the worktree."""
    repo = repo_with_tests(tmp_path)
    log = tmp_path / "checks.log"
    attack = f"git update-index {flag} tests/test_b.py && echo 'pass' > tests/test_b.py && echo '# tidy' >> calc.py"
    fix = f"printf {shlex.quote(CALC_FIXED)} > calc.py"
    goal = {"check": {"run": f"{PY} run_tests.py"}, "protected": ["tests/**"], "budget": {"iterations": 2},
            "proposer": command(f'if [ "$GOALLOOP_ITERATION" = 1 ]; then {attack}; else {fix}; fi')}
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "protected", "tests/test_b.py")
    second = run.attempts[2]
    assert second["verdict"] == "keep", f"the honest fix was {second['verdict']}: {second['reason']}"
    assert (run.worktree / "tests/test_b.py").read_text() == TEST_B


@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_an_edit_hidden_from_git_cannot_be_kept_with_a_score_its_commit_does_not_give(
    tmp_path: Path, flag: str
) -> None:
    """The adversary hides its edit of knob.py (not protected) from git with `update-index <flag>`, so the
    attempt's commit holds only a comment while the check measures the hidden X = 100. Whatever the verdict,
    a kept attempt's metric must be what its commit gives: DESIGN's "the result it keeps is real"."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY, "README.md": "hi\n"})
    attack = f"git update-index {flag} knob.py && echo 'X = 100' > knob.py && echo tidy >> README.md"
    goal = {"check": {"run": f"{PY} score.py", "metric": METRIC}, "budget": {"iterations": 1},
            "proposer": command(attack)}
    run = run_goal(tmp_path, repo, goal)
    kept = [a for n, a in run.attempts.items() if n > 0 and a["verdict"] == "keep"]
    for attempt in kept:
        assert run.show(attempt["commit"], "knob.py") == "X = 100\n", (
            f"kept with metric {attempt['metric']} but its commit has knob.py = "
            f"{run.show(attempt['commit'], 'knob.py')!r}")


def test_a_change_outside_editable_is_rejected_as_not_editable(tmp_path: Path) -> None:
    """`editable: [knob.py]`: the adversary scales the score through helper.py, which the check imports but
    which is neither protected nor editable. Then it changes knob.py alone, which is judged."""
    score = COUNTING_SCORE_PY.replace('print(f"score: {knob.X}")',
                                      'import helper\nprint(f"score: {knob.X * helper.SCALE}")')
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "helper.py": "SCALE = 1\n", "score.py": score})
    log = tmp_path / "checks.log"
    goal = scripted([step("scale", {"helper.py": "SCALE = 1000\n"}), step("raise", {"knob.py": "X = 2\n"})],
                    editable=["knob.py"])
    run = run_goal(tmp_path, repo, goal, env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "not editable", "helper.py")
    assert run.table()[1:] == [("1", "", "rejected"), ("2", "2", "keep")]


# -- the metric is read by the runner ---------------------------------------------------------------------------
# The check prints its line, then lets the code under test report: an honest knob.report() prints nothing.
REPORTING_SCORE_PY = 'import knob\nprint(f"score: {knob.X}")\nknob.report()\n'
HONEST_KNOB = "X = 1\ndef report():\n    pass\n"
FAKING_KNOB = 'X = 1\ndef report():\n    print("score: 999")\n'


def test_without_metric_file_a_fake_metric_line_printed_last_is_read_known_limit(tmp_path: Path) -> None:
    """The known limit, documented: read from stdout, the last matching line wins, so code under test that
    prints `score: 999` after the check's own line is believed and kept. README's limits section explains why
    `check.metric_file` is the safe choice when the proposer's code runs inside the check."""
    repo = make_repo(tmp_path / "proj", {"knob.py": HONEST_KNOB, "score.py": REPORTING_SCORE_PY})
    run = run_goal(tmp_path, repo, scripted([step("print a fake score", {"knob.py": FAKING_KNOB})]))
    assert run.table() == [("0", "1", "baseline"), ("1", "999", "keep")], run.cli.output


METRIC_FILE_SCORE_PY = """\
import json, os, knob
json.dump({"metric": knob.X}, open(os.environ["GOALLOOP_METRIC_FILE"], "w"))
knob.report()
"""


def test_with_metric_file_a_fake_metric_line_is_ignored_even_when_check_metric_matches_it(tmp_path: Path) -> None:
    """metric_file and a stdout regex both given: the code under test prints `score: 999`, which the regex
    matches; the metric still comes from the file alone."""
    repo = make_repo(tmp_path / "proj", {"knob.py": HONEST_KNOB, "score.py": METRIC_FILE_SCORE_PY})
    goal = scripted([step("print a fake score", {"knob.py": FAKING_KNOB})], metric=METRIC)
    goal["check"]["metric_file"] = True
    run = run_goal(tmp_path, repo, goal)
    assert run.table() == [("0", "1", "baseline"), ("1", "1", "discard")], run.cli.output


def test_metric_file_alone_makes_a_metric_goal_that_can_meet_its_target(tmp_path: Path) -> None:
    """No check.metric: metric_file makes the goal a metric goal (target.value is allowed and met), and the
    fake stdout line of attempt 1 neither counts as the metric nor turns the goal into pass/fail."""
    repo = make_repo(tmp_path / "proj", {"knob.py": HONEST_KNOB, "score.py": METRIC_FILE_SCORE_PY})
    goal = scripted([step("print a fake score", {"knob.py": FAKING_KNOB}),
                     step("raise", {"knob.py": HONEST_KNOB.replace("X = 1", "X = 2")})],
                    metric=None, iterations=5, target={"value": 2})
    goal["check"]["metric_file"] = True
    run = run_goal(tmp_path, repo, goal)
    assert run.exit_code == 0, run.cli.output
    assert run.table() == [("0", "1", "baseline"), ("1", "1", "discard"), ("2", "2", "keep")]


PAYLOAD_SCORE_PY = """\
import os, knob
path = os.environ["GOALLOOP_METRIC_FILE"]
with open(os.environ["PATHS_LOG"], "a") as log:
    log.write(f"{path}\\t{os.path.exists(path)}\\n")
if knob.PAYLOAD is not None:
    open(path, "w").write(knob.PAYLOAD)
"""


def test_metric_file_is_fresh_outside_the_worktree_and_only_a_finite_number_counts(tmp_path: Path) -> None:
    """A bare number and {"metric": n} are read; a missing file, NaN, an object without "metric" and a
    string that is no number are crashes, each with a reason. Every check run gets a path of its own that
    does not exist yet and lies outside the worktree, so no earlier run's file can be read instead."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "PAYLOAD = '1'\n", "score.py": PAYLOAD_SCORE_PY})
    payloads = ['{"metric": 2}', None, '{"metric": NaN}', '{"score": 5}', '"lots"', "3"]
    goal = scripted([step(f"payload {p}", {"knob.py": f"PAYLOAD = {p!r}\n"}) for p in payloads],
                    metric=None, check={"run": f"{PY} score.py", "metric_file": True})
    paths_log = tmp_path / "paths.log"
    run = run_goal(tmp_path, repo, goal, env={"PATHS_LOG": str(paths_log)})
    assert run.table() == [("0", "1", "baseline"), ("1", "2", "keep"), ("2", "", "crash"), ("3", "", "crash"),
                           ("4", "", "crash"), ("5", "", "crash"), ("6", "3", "keep")], run.cli.output
    assert all(run.attempts[n]["reason"] for n in (2, 3, 4, 5))
    runs = [line.split("\t") for line in paths_log.read_text().splitlines()]
    assert len(runs) == 7 and len({path for path, _ in runs}) == 7, runs
    assert all(existed == "False" for _, existed in runs), "a metric file was there before the check ran"
    assert not any(Path(path).resolve().is_relative_to(run.worktree.resolve()) for path, _ in runs)


@pytest.mark.parametrize("printed", ["nan", "inf", "-inf", "abc"])
def test_a_metric_that_is_not_a_finite_number_is_a_crash_with_a_reason(tmp_path: Path, printed: str) -> None:
    """The adversary makes the check print `score: nan` (or inf, -inf, words): it must not be kept, however a
    comparison with NaN or infinity would come out, and the reason must say what was read."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    run = run_goal(tmp_path, repo, scripted([step("not a number", {"knob.py": f"X = {printed!r}\n"})]))
    assert run.table()[1] == ("1", "", "crash"), run.cli.output
    assert printed in run.attempts[1]["reason"], run.attempts[1]["reason"]


# -- noise --------------------------------------------------------------------------------------------------------
# X plus seeded noise (sd 1): run k of the check (k read from and bumped in $NOISE_COUNTER, outside the repo)
# adds random.Random(k).gauss(0, 1), so the runs differ from each other yet are the same on every test run.
NOISY_SCORE_PY = """\
import os, random, knob
path = os.environ["NOISE_COUNTER"]
count = int(open(path).read())
open(path, "w").write(str(count + 1))
print(f"score: {knob.X + random.Random(count).gauss(0, 1):.6f}")
"""
LUCKY_SEED = 18
"""With the baseline measured at counts 18-22 and the candidate at 23-27, a true gain of 0.3 (well inside
the noise) looks like a gain of 1.85 on the candidate's first run; its median is 0.77 below the baseline's."""


def noise(count: int) -> float:
    return random.Random(count).gauss(0, 1)


def noisy_run(tmp_path: Path, steps: list[dict], *, start: int, **keep: object) -> Run:
    counter = tmp_path / "counter.txt"
    counter.write_text(str(start))
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": NOISY_SCORE_PY})
    return run_goal(tmp_path, repo, scripted(steps, keep=keep), env={"NOISE_COUNTER": str(counter)})


GAIN_IN_THE_NOISE = [step("a true gain of 0.3", {"knob.py": "X = 1.3\n"})]


def test_a_gain_within_the_noise_is_not_kept_with_repeats_5(tmp_path: Path) -> None:
    """The candidate's first measurement beats the baseline median, so it is measured 5 times; the median of
    those does not beat the baseline median, so it is discarded. The baseline's 5 runs and their spread are
    recorded as a `noise` event, and the attempt event lists all 5 of the candidate's measurements."""
    baseline = [1 + noise(LUCKY_SEED + i) for i in range(5)]
    candidate = [1.3 + noise(LUCKY_SEED + 5 + i) for i in range(5)]
    assert candidate[0] > statistics.median(baseline) + 1, "the seeds make the candidate look better once"
    assert statistics.median(candidate) < statistics.median(baseline) - 0.5, "...and worse on the median"
    run = noisy_run(tmp_path, GAIN_IN_THE_NOISE, start=LUCKY_SEED, repeats=5)
    assert run.attempts[1]["verdict"] == "discard", run.cli.output
    [event] = run.events("noise")
    assert event["samples"] == pytest.approx(baseline, abs=1e-5)
    assert event["spread"] == pytest.approx(max(baseline) - min(baseline), abs=1e-5)
    assert run.attempts[0]["metric"] == pytest.approx(statistics.median(baseline), abs=1e-5)
    assert run.attempts[1]["samples"] == pytest.approx(candidate, abs=1e-5)


def test_the_same_gain_within_the_noise_is_kept_wrongly_with_repeats_1(tmp_path: Path) -> None:
    """The control: one measurement each (the baseline's last and the candidate's first of the test above,
    counts 22 and 23) and the lucky first run is believed: the noise is kept. This is what repeats is for."""
    assert 1.3 + noise(LUCKY_SEED + 5) > 1 + noise(LUCKY_SEED + 4) + 1
    run = noisy_run(tmp_path, GAIN_IN_THE_NOISE, start=LUCKY_SEED + 4, repeats=1)
    assert run.attempts[1]["verdict"] == "keep", run.cli.output
    assert run.attempts[1]["metric"] == pytest.approx(1.3 + noise(LUCKY_SEED + 5), abs=1e-5)


def test_only_a_candidate_that_looks_better_is_measured_again_and_its_median_is_its_metric(tmp_path: Path) -> None:
    """repeats: 3. A clearly worse candidate is measured once (no time wasted on it); a clearly better one is
    measured 3 times and recorded with the median of those, as the baseline is with the median of its own."""
    steps = [step("worse", {"knob.py": "X = -10\n"}), step("better", {"knob.py": "X = 11\n"})]
    run = noisy_run(tmp_path, steps, start=0, repeats=3)
    assert [v for _, _, v in run.table()[1:]] == ["discard", "keep"], run.cli.output
    assert (tmp_path / "counter.txt").read_text() == str(3 + 1 + 3 + 3), "runs: baseline 3, worse 1, better 3, confirm 3"
    better = [11 + noise(4 + i) for i in range(3)]
    assert run.attempts[2]["samples"] == pytest.approx(better, abs=1e-5)
    assert run.attempts[2]["metric"] == pytest.approx(statistics.median(better), abs=1e-5)
    assert run.attempts[0]["metric"] == pytest.approx(statistics.median([1 + noise(i) for i in range(3)]), abs=1e-5)


def test_min_delta_a_gain_of_exactly_min_delta_is_not_kept(tmp_path: Path) -> None:
    """min_delta: 0.5 means a gain of more than 0.5: 1 -> 1.5 is refused, 1 -> 1.6 is kept."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    steps = [step("+0.5", {"knob.py": "X = 1.5\n"}), step("+0.6", {"knob.py": "X = 1.6\n"})]
    run = run_goal(tmp_path, repo, scripted(steps, keep={"min_delta": 0.5}))
    assert run.table()[1:] == [("1", "1.5", "discard"), ("2", "1.6", "keep")], run.cli.output


def test_min_delta_as_a_percentage_is_relative_to_the_kept_metric_not_the_baseline(tmp_path: Path) -> None:
    """min_delta: "1%". Baseline 100, then 200 is kept; 201.5 gains 1.5, more than 1% of the baseline but less
    than 1% of the kept 200, so it is refused; 202.5 is kept."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 100\n", "score.py": COUNTING_SCORE_PY})
    steps = [step(f"to {x}", {"knob.py": f"X = {x}\n"}) for x in ("200", "201.5", "202.5")]
    run = run_goal(tmp_path, repo, scripted(steps, keep={"min_delta": "1%"}))
    assert [v for _, _, v in run.table()[1:]] == ["keep", "discard", "keep"], run.cli.output


DRIFTING_SCORE_PY = """\
import os, knob
path = os.environ["DRIFT_COUNTER"]
count = int(open(path).read())
open(path, "w").write(str(count + 1))
print(f"score: {knob.X + count}")
"""


def test_confirm_measures_the_best_kept_state_again_and_reports_its_drift(tmp_path: Path) -> None:
    """A check that drifts up by 1 each run. Baseline 1 (X=1, run 0), attempt 1 kept at 3 (X=2, run 1),
    attempt 2 discarded at 2.5 (X=0.5, run 2). confirm measures the kept X=2 (not the discarded state left
    last) in run 3: 5, a drift of +2 from the recorded best; the summary says so."""
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": DRIFTING_SCORE_PY})
    steps = [step("to 2", {"knob.py": "X = 2\n"}), step("to 0.5", {"knob.py": "X = 0.5\n"})]
    run = run_goal(tmp_path, repo, scripted(steps, keep={"confirm": True}), env={"DRIFT_COUNTER": str(counter)})
    assert run.table() == [("0", "1", "baseline"), ("1", "3", "keep"), ("2", "2.5", "discard")], run.cli.output
    [event] = run.events("confirm")
    assert (event["metric"], event["drift"]) == (5, 2)
    assert "confirm" in run.cli.stdout


def test_an_attempt_adding_more_than_max_added_lines_is_rejected_without_running_the_check(tmp_path: Path) -> None:
    """max_added_lines: 5. The adversary buys its gain with 6 added lines: rejected unchecked. Exactly 5 added
    lines are allowed, and judged."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    log = tmp_path / "checks.log"
    padding = "".join(f"# note {i}\n" for i in range(5))
    steps = [step("six lines", {"knob.py": "X = 3\n" + padding}),
             step("five lines", {"knob.py": "X = 2\n" + padding[:-9]})]
    run = run_goal(tmp_path, repo, scripted(steps, keep={"max_added_lines": 5}), env={"CHECK_LOG": str(log)})
    assert_rejected_unchecked(run, 1, log, "max_added_lines")
    assert run.table()[2] == ("2", "2", "keep"), run.cli.output


# -- holdout ----------------------------------------------------------------------------------------------------
# The task: f(x) = x * x. The visible check scores 3 cases; the holdout, which the proposer never sees, 4 others.
SOLVE_PY = "def f(x):\n    return x * x if x % 2 == 0 else 0\n"  # right on even inputs: visible 1/3, holdout 2/4
VISIBLE_PY = "from solve import f\nprint(f'score: {sum(f(x) == x * x for x in (1, 2, 3))}')\n"
HOLDOUT_PY = ("import json\nfrom solve import f\ncases = json.load(open('holdout_cases.json'))\n"
              "print('HIDDEN-CASES-REPORT')\nprint(f'holdout: {sum(f(x) == x * x for x in cases)}')\n")
OVERFIT_PY = "def f(x):\n    return {1: 1, 2: 4, 3: 9}.get(x, 0)\n"  # visible 3/3, holdout 0/4
HONEST_PY = "def f(x):\n    return x * x\n"


def holdout_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"solve.py": SOLVE_PY, "score.py": VISIBLE_PY, "holdout.py": HOLDOUT_PY,
                                         "holdout_cases.json": "[4, 5, 6, 7]\n"})


HOLDOUT = {"run": f"{PY} holdout.py", "metric": r"^holdout:\s*(\S+)", "timeout": "1m", "files": ["holdout_cases.json"]}


def test_overfitting_the_visible_check_is_flagged_by_the_holdout_the_proposer_never_sees(tmp_path: Path) -> None:
    """Attempt 1 special-cases the three visible inputs: visible 1 -> 3 (kept), holdout 2 -> 0, so the keep
    carries a holdout warning that `goalloop status` shows. Attempt 2 (honest, visible 3) is discarded and not
    measured by the holdout. Neither prompt the proposer was given names the holdout or shows its output."""
    repo = holdout_repo(tmp_path)
    prompts = prompt_dir(tmp_path)
    overfit, honest = tmp_path / "overfit.py", tmp_path / "honest.py"
    overfit.write_text(OVERFIT_PY)
    honest.write_text(HONEST_PY)
    propose = f'if [ "$GOALLOOP_ITERATION" = 1 ]; then cp {overfit} solve.py; else cp {honest} solve.py; fi'
    goal = {"check": {"run": f"{PY} score.py", "metric": METRIC}, "holdout": HOLDOUT, "budget": {"iterations": 2},
            "proposer": command(propose, prompts)}
    run = run_goal(tmp_path, repo, goal)
    assert run.table() == [("0", "1", "baseline"), ("1", "3", "keep"), ("2", "3", "discard")], run.cli.output
    attempts = run.attempts
    assert (attempts[0]["holdout"], attempts[1]["holdout"], attempts[2].get("holdout")) == (2, 0, None)
    assert not attempts[0].get("warning") and "holdout" in attempts[1]["warning"]
    status = run_cli("status", "--home", str(run.home), cwd=tmp_path)
    assert any("warning" in line and "holdout" in line for line in status.stdout.splitlines()), status.stdout
    assert sorted(p.name for p in prompts.iterdir()) == ["1.md", "2.md"]
    for prompt in prompts.iterdir():
        text = prompt.read_text()
        assert "holdout.py" not in text and "holdout_cases" not in text, f"{prompt.name} names the holdout"
        assert "HIDDEN-CASES-REPORT" not in text and not re.search(r"holdout:\s*\d", text), \
            f"{prompt.name} shows the holdout's output"


@pytest.mark.parametrize("path, content", [("holdout.py", "print('holdout: 99')\n"),
                                           ("holdout_cases.json", "[1, 2, 3]\n")])
def test_editing_the_holdout_or_its_files_is_rejected(tmp_path: Path, path: str, content: str) -> None:
    """The adversary finds the holdout and rewrites it (its script, or a file in holdout.files) to score itself
    well: rejected as protected, and neither check runs for it."""
    repo = holdout_repo(tmp_path)
    goal = scripted([step("tune the holdout", {path: content, "solve.py": HONEST_PY})], run=f"{PY} score.py",
                    holdout=HOLDOUT)
    run = run_goal(tmp_path, repo, goal)
    assert run.attempts[1]["verdict"] == "rejected", run.cli.output
    assert "protected" in run.attempts[1]["reason"] and path in run.attempts[1]["reason"]
    assert not (run.run_dir / "attempts" / "0001" / "check.stdout.log").exists()
    assert not list((run.run_dir / "attempts" / "0001").glob("holdout*"))


# -- patience and stalls ------------------------------------------------------------------------------------------
def test_patience_ends_the_run_after_n_attempts_in_a_row_without_a_keep(tmp_path: Path) -> None:
    """patience: 2. discard, keep (the count starts again), discard, discard: the run ends with exit 1 before
    the fifth step (which would have been kept), and says patience is why."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 5\n", "score.py": COUNTING_SCORE_PY})
    steps = [step(f"to {x}", {"knob.py": f"X = {x}\n"}) for x in ("4", "6", "5.5", "5", "9")]
    run = run_goal(tmp_path, repo, scripted(steps, iterations=10, budget={"iterations": 10, "patience": 2}))
    assert run.exit_code == 1, run.cli.output
    assert [v for _, _, v in run.table()] == ["baseline", "discard", "keep", "discard", "discard"]
    assert "patience" in run.events("run_stopped")[-1]["reason"]


# A pass/fail check whose failure line carries a number and a hash that differ on every attempt.
ANSWER_CHECK_PY = """\
import hashlib, answer
got = answer.value()
trace = hashlib.sha1(str(got).encode()).hexdigest()[:12]
assert got == 42, f"expected 42, got {got} (trace {trace})"
"""


def answer_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"answer.py": "def value():\n    return 0\n", "check.py": ANSWER_CHECK_PY})


def test_the_same_failure_three_times_is_named_as_a_stall_in_the_next_prompt(tmp_path: Path) -> None:
    """The adversary keeps returning a wrong answer (7, 14, 21: each failure line has other numbers and another
    hash). After the third identical failure (normalised) a `stall` event names the line, and prompt 4 (the
    prompt file the proposer is given) says "stalled" and repeats that line; prompts 1-3 do not."""
    repo = answer_repo(tmp_path)
    prompts = prompt_dir(tmp_path)
    propose = "printf 'def value():\\n    return %d\\n' $((GOALLOOP_ITERATION * 7)) > answer.py"
    goal = {"check": {"run": f"{PY} check.py"}, "budget": {"iterations": 4}, "proposer": command(propose, prompts)}
    run = run_goal(tmp_path, repo, goal)
    assert [v for _, _, v in run.table()[1:]] == ["discard"] * 4, run.cli.output
    stalls = run.events("stall")
    assert stalls, "no stall event"
    line = stalls[0]["line"]
    assert "expected" in line and "trace" in line and "42" not in line, f"{line!r} is not the normalised failure"
    for n in (1, 2, 3):
        assert "stalled" not in (prompts / f"{n}.md").read_text().lower(), f"prompt {n} came before any stall"
    fourth = (prompts / "4.md").read_text()
    assert "stalled" in fourth.lower() and line in fourth


def test_different_failures_are_not_a_stall(tmp_path: Path) -> None:
    """Three attempts that fail three different ways (assertion, exception, import): numbers and hashes are
    blanked, not the words, so no stall is announced."""
    repo = answer_repo(tmp_path)
    steps = [step("wrong", {"answer.py": "def value():\n    return 7\n"}),
             step("raises", {"answer.py": "def value():\n    raise KeyError('cache')\n"}),
             step("imports", {"answer.py": "import no_such_module\n"}),
             step("wrong again", {"answer.py": "def value():\n    return 8\n"})]
    run = run_goal(tmp_path, repo, scripted(steps, run=f"{PY} check.py", metric=None))
    assert [v for _, _, v in run.table()[1:]] == ["discard"] * 4, run.cli.output
    assert not run.events("stall")
    assert "stalled" not in (run.run_dir / "attempts" / "0004" / "prompt.md").read_text().lower()


def test_crashes_of_a_metric_check_that_differ_in_their_output_are_not_a_stall(tmp_path: Path) -> None:
    """Metric goal: three attempts crash the check three different ways. Their reasons are all `check exited
    with code 1`, but their last output lines differ (KeyError, ZeroDivisionError, ModuleNotFoundError), so the
    proposer must not be told it repeated one failure."""
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": COUNTING_SCORE_PY})
    steps = [step("key", {"knob.py": "X = {}['cache']\n"}), step("zero", {"knob.py": "X = 1 / 0\n"}),
             step("import", {"knob.py": "import no_such_module\nX = 2\n"}), step("fine", {"knob.py": "X = 2\n"})]
    run = run_goal(tmp_path, repo, scripted(steps))
    assert [v for _, _, v in run.table()[1:]] == ["crash", "crash", "crash", "keep"], run.cli.output
    assert not run.events("stall"), run.events("stall")
    assert "stalled" not in (run.run_dir / "attempts" / "0004" / "prompt.md").read_text().lower()


def test_with_patience_the_stall_is_recorded_when_patience_ends_the_run(tmp_path: Path) -> None:
    """patience: 3 makes N = 3 for stalls too; three identical failures end the run for patience before any
    next prompt exists, but the `stall` event naming the repeated line must still be written."""
    repo = answer_repo(tmp_path)
    steps = [step(f"return {n}", {"answer.py": f"def value():\n    return {n}\n"}) for n in (7, 14, 21, 28)]
    run = run_goal(tmp_path, repo, scripted(steps, run=f"{PY} check.py", metric=None,
                                            budget={"iterations": 10, "patience": 3}))
    assert [v for _, _, v in run.table()[1:]] == ["discard"] * 3, run.cli.output
    assert "patience" in run.events("run_stopped")[-1]["reason"]
    stalls = run.events("stall")
    assert stalls and "expected" in stalls[0]["line"], "patience ended the run on a stall nobody recorded"
