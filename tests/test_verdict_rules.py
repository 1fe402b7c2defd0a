"""The verdict can be trusted: each test is an adversarial proposer attacking one rule the runner enforces."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

from conftest import make_repo, results_rows, run_cli, write_goal

PY = "python3"
METRIC = r"^score:\s*(\S+)"


def _run(tmp_path: Path, repo: Path, goal: dict, env: dict[str, str] | None = None) -> tuple[int, list[dict], Path, str]:
    goal_path = write_goal(tmp_path / "g.yaml", {"repo": str(repo), **goal})
    home = tmp_path / "home"
    result = run_cli("run", str(goal_path), "--home", str(home), cwd=tmp_path, env=env)
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    return result.exit_code, results_rows(run_dir), run_dir, result.output


def _events(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def _scripted(*steps: dict) -> dict:
    return {"kind": "scripted", "steps": list(steps)}


# -- the metric is read by the runner ---------------------------------------------------------------------
FAKER_KNOB = "X = 1\n"
FAKE_PRINT = 'X = 1\nprint("score: 999")\n'  # code under test that prints a fake metric line when imported
SCORE_THEN_IMPORT = 'import json, os\nX = __import__("knob").X\nprint(f"score: {X}")\n'


def test_without_metric_file_a_fake_metric_line_printed_last_fools_stdout_parsing(tmp_path: Path) -> None:
    """The known limit, stated: code under test that prints `score: 999` after the check's own line wins,
    because the last matching stdout line is the metric. README's limits section says why metric_file is
    the safe choice when the proposer's code runs inside the check."""
    check = 'print("score: 1"); import knob\n'
    repo = make_repo(tmp_path / "proj", {"knob.py": FAKER_KNOB, "score.py": check})
    code, rows, _, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "budget": {"iterations": 1},
        "proposer": _scripted({"description": "print a fake score", "files": {"knob.py": FAKE_PRINT}}),
    })
    assert rows[1]["metric"] == "999" and rows[1]["verdict"] == "keep", out


def test_with_metric_file_a_fake_metric_line_is_ignored(tmp_path: Path) -> None:
    check = ('import json, os\nimport knob\nprint("score: 1")\n'
             'json.dump({"metric": knob.X}, open(os.environ["GOALLOOP_METRIC_FILE"], "w"))\n')
    repo = make_repo(tmp_path / "proj", {"knob.py": FAKER_KNOB, "score.py": check})
    code, rows, _, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric_file": True},
        "budget": {"iterations": 1},
        "proposer": _scripted({"description": "print a fake score", "files": {"knob.py": FAKE_PRINT}}),
    })
    assert code == 1, out
    assert [r["metric"] for r in rows] == ["1", "1"] and rows[1]["verdict"] == "discard"


def test_a_metric_file_that_is_missing_or_not_a_number_is_a_crash(tmp_path: Path) -> None:
    check = 'import os, knob\nif knob.X == 1:\n    open(os.environ["GOALLOOP_METRIC_FILE"], "w").write("1")\n'
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": check})
    code, rows, _, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric_file": True},
        "budget": {"iterations": 1},
        "proposer": _scripted({"files": {"knob.py": "X = 2\n"}}),
    })
    assert rows[0]["metric"] == "1"
    assert rows[1]["verdict"] == "crash", out


# -- the check's files are pinned ---------------------------------------------------------------------------
def test_a_test_hidden_from_git_with_skip_worktree_is_still_caught_by_its_pin(tmp_path: Path) -> None:
    """The adversary tells git to ignore its edit of a protected test (`update-index --skip-worktree`), so
    the diff shows only an innocent change; the hash pin sees the test changed and rejects the attempt."""
    log = tmp_path / "check-ran.log"
    repo = make_repo(tmp_path / "proj", {
        "calc.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "from calc import add\nassert add(2, 3) == 5\n",
    })
    code, rows, _, out = _run(tmp_path, repo, {
        "protected": ["tests/**"],
        "check": {"run": f"echo ran >> {log}; {PY} tests/test_calc.py"},
        "budget": {"iterations": 1},
        "proposer": {"kind": "command", "run": (
            "git update-index --skip-worktree tests/test_calc.py && "
            "echo 'pass' > tests/test_calc.py && echo '# tidy' >> calc.py"
        )},
    })
    assert rows[1]["verdict"] == "rejected", out
    assert log.read_text().count("ran") == 1, "the check ran for the baseline only"
    assert "tests/test_calc.py" in (tmp_path / "home" / "runs").joinpath(
        next(p.name for p in (tmp_path / "home" / "runs").iterdir() if p.name.startswith("g-")), "events.jsonl"
    ).read_text()


def test_deleting_a_test_is_rejected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"calc.py": "X = 1\n", "tests/test_a.py": "assert False\n"})
    code, rows, _, out = _run(tmp_path, repo, {
        "protected": ["tests/**"],
        "check": {"run": f"{PY} -c 'import glob,runpy; [runpy.run_path(p) for p in glob.glob(\"tests/*.py\")]'"},
        "budget": {"iterations": 1},
        "proposer": _scripted({"description": "delete the failing test", "files": {"tests/test_a.py": None}}),
    })
    assert rows[1]["verdict"] == "rejected" and "tests/test_a.py" in out, out
    assert code == 1


# -- noise ----------------------------------------------------------------------------------------------------
NOISY_SCORE = """\
import os, random
import knob
counter_file = os.environ["NOISE_COUNTER_FILE"]
count = int(open(counter_file).read())
open(counter_file, "w").write(str(count + 1))
print(f"score: {knob.X + random.Random(count).gauss(0, 0.5):.6f}")
"""
NOISE_START = 3  # the seeds for which the gain of 0.3 below looks real once and is not


def _noise(count: int) -> float:
    return random.Random(count).gauss(0, 0.5)


def _noisy_run(tmp_path: Path, repeats: int) -> list[dict]:
    counter = tmp_path / "counter.txt"
    counter.write_text(str(NOISE_START))
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": NOISY_SCORE})
    _, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "keep": {"repeats": repeats},
        "budget": {"iterations": 1},
        "proposer": _scripted({"description": "a gain of 0.3, well inside the noise", "files": {"knob.py": "X = 1.3\n"}}),
    }, env={"NOISE_COUNTER_FILE": str(counter)})
    return rows, run_dir


def test_a_gain_within_the_noise_is_not_kept_with_repeats_5(tmp_path: Path) -> None:
    """Seeded noise (sd 0.5) and a true gain of 0.3: the candidate's first run looks better than the baseline
    median, but the median of its 5 runs does not, so it is not kept. The baseline's spread is reported."""
    baseline = [1 + _noise(NOISE_START + i) for i in range(5)]
    first = 1.3 + _noise(NOISE_START + 5)
    assert first > statistics.median(baseline), "the seeds make the candidate look better once"
    rows, run_dir = _noisy_run(tmp_path, repeats=5)
    assert rows[1]["verdict"] == "discard"
    noise = _events(run_dir, "noise")[0]
    assert len(noise["samples"]) == 5 and noise["spread"] > 0.5
    attempt = _events(run_dir, "attempt")[1]
    assert len(attempt["samples"]) == 5 and attempt["samples"][0] > statistics.median(baseline)


def test_the_same_gain_is_kept_wrongly_with_repeats_1(tmp_path: Path) -> None:
    """The same seeds with a single measurement each: the lucky first run is believed, and the noise is kept.
    This is what keep.repeats exists for."""
    rows, _ = _noisy_run(tmp_path, repeats=1)
    assert rows[1]["verdict"] == "keep"


def test_min_delta_as_a_percentage_refuses_a_smaller_gain(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 100\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    _, rows, _, _ = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "keep": {"min_delta": "1%"},
        "budget": {"iterations": 2},
        "proposer": _scripted({"files": {"knob.py": "X = 100.5\n"}}, {"files": {"knob.py": "X = 102\n"}}),
    })
    assert [r["verdict"] for r in rows[1:]] == ["discard", "keep"]


# -- holdout --------------------------------------------------------------------------------------------------
VISIBLE = "from solve import f\ncases = {1: 2, 2: 4, 3: 6}\nprint(f'score: {sum(f(x) == y for x, y in cases.items())}')\n"
HOLDOUT = "from solve import f\ncases = {4: 8, 5: 10, 6: 12}\nprint(f'held: {sum(f(x) == y for x, y in cases.items())}')\n"


def test_overfitting_the_visible_check_is_flagged_by_the_holdout_the_proposer_never_sees(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"solve.py": "def f(x):\n    return 2 * x if x > 3 else 0\n",
                                         "score.py": VISIBLE, "holdout.py": HOLDOUT})
    overfit = tmp_path / "overfit.py"
    overfit.write_text("def f(x):\n    return {1: 2, 2: 4, 3: 6}.get(x, 0)\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "holdout": {"run": f"{PY} holdout.py", "metric": r"^held:\s*(\S+)"},
        "budget": {"iterations": 2},
        "proposer": {"kind": "command", "run": (
            f'cp "$GOALLOOP_PROMPT_FILE" {prompts}/$GOALLOOP_ITERATION.md; '
            f"cp {overfit} solve.py; "
            f'if [ "$GOALLOOP_ITERATION" = 2 ]; then echo "# again" >> solve.py; fi'
        )},
    })
    assert rows[1]["verdict"] == "keep" and rows[1]["metric"] == "3", out
    attempt = _events(run_dir, "attempt")
    assert attempt[0]["holdout"] == 3 and attempt[1]["holdout"] == 0
    assert "holdout" in attempt[1]["warning"]
    status = run_cli("status", "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert "holdout got worse" in status.stdout
    for prompt in prompts.iterdir():
        text = prompt.read_text()
        assert "holdout.py" not in text and "held:" not in text, "the proposer never sees the holdout"


def test_editing_the_holdout_is_rejected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"solve.py": "X = 1\n", "score.py": "print('score: 1')\n",
                                         "holdout.py": "print('held: 1')\n"})
    _, rows, _, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "holdout": {"run": f"{PY} holdout.py", "metric": r"^held:\s*(\S+)"},
        "budget": {"iterations": 1},
        "proposer": _scripted({"files": {"holdout.py": "print('held: 99')\n"}}),
    })
    assert rows[1]["verdict"] == "rejected", out


# -- stalls, patience, simplicity -----------------------------------------------------------------------------
def test_patience_ends_a_run_that_stopped_improving(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 5\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "budget": {"iterations": 10, "patience": 2},
        "proposer": {"kind": "scripted", "cycle": True, "steps": [{"files": {"knob.py": "X = 4\n"}}]},
    })
    assert code == 1 and len(rows) == 3, out
    assert "patience" in _events(run_dir, "run_stopped")[-1]["reason"]


def test_the_same_failure_three_times_is_named_as_a_stall_in_the_next_prompt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"calc.py": "X = 1\n", "check.py": "import calc\nassert calc.X == 2, f'X is {calc.X}'\n"})
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} check.py"},
        "budget": {"iterations": 4},
        "proposer": {"kind": "command", "run": (
            f'cp "$GOALLOOP_PROMPT_FILE" {prompts}/$GOALLOOP_ITERATION.md; echo "X = $((GOALLOOP_ITERATION + 2))" > calc.py'
        )},
    })
    assert [r["verdict"] for r in rows[1:]] == ["discard"] * 4, out
    assert _events(run_dir, "stall"), "a stall event names the repeated failure"
    assert "stalled" not in (prompts / "3.md").read_text().lower()
    fourth = (prompts / "4.md").read_text()
    assert "Stalled" in fourth and "AssertionError: X is #" in fourth


def test_an_attempt_that_adds_too_many_lines_is_rejected(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    bloated = "X = 2\n" + "".join(f"# line {i}\n" for i in range(50))
    _, rows, _, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "keep": {"max_added_lines": 10},
        "budget": {"iterations": 2},
        "proposer": _scripted({"files": {"knob.py": bloated}}, {"files": {"knob.py": "X = 2\n"}}),
    })
    assert [r["verdict"] for r in rows[1:]] == ["rejected", "keep"], out
    assert "max_added_lines" in out


def test_confirm_measures_the_best_again_and_reports_the_drift(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "keep": {"confirm": True},
        "target": {"value": 2},
        "proposer": _scripted({"files": {"knob.py": "X = 2\n"}}),
    })
    assert code == 0
    confirm = _events(run_dir, "confirm")[0]
    assert confirm["metric"] == 2 and confirm["drift"] == 0
    assert "confirm" in out


# -- the deadline ---------------------------------------------------------------------------------------------
def test_no_attempt_starts_when_its_check_could_not_finish_before_the_deadline(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    soon = (datetime.now() + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S")
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n"})
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC, "timeout": "10m"},
        "budget": {"iterations": 5, "deadline": soon},
        "proposer": _scripted({"files": {"knob.py": "X = 2\n"}}),
    })
    assert code == 1 and len(rows) == 1, out
    assert "deadline" in _events(run_dir, "run_stopped")[-1]["reason"]


def test_a_deadline_that_is_not_a_time_is_a_goal_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    goal = write_goal(tmp_path / "g.yaml", {"repo": str(repo), "check": {"run": "true"},
                                           "budget": {"deadline": "25:99"}, "proposer": {"kind": "command", "run": "true"}})
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert result.exit_code == 2 and "g.yaml:" in result.stderr and "07:30" in result.stderr


def test_the_report_shows_the_holdout_beside_the_metric_and_flags_the_overfit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\nY = 5\n", "score.py": "import knob\nprint(f'score: {knob.X}')\n",
                                         "holdout.py": "import knob\nprint(f'held: {knob.Y}')\n"})
    code, rows, run_dir, out = _run(tmp_path, repo, {
        "check": {"run": f"{PY} score.py", "metric": METRIC},
        "holdout": {"run": f"{PY} holdout.py", "metric": r"^held:\s*(\S+)"},
        "keep": {"repeats": 3, "confirm": True},
        "budget": {"iterations": 2},
        "proposer": _scripted({"description": "overfit", "files": {"knob.py": "X = 2\nY = 4\n"}},
                              {"description": "honest", "files": {"knob.py": "X = 3\nY = 6\n"}}),
    })
    assert [r["verdict"] for r in rows[1:]] == ["keep", "keep"], out
    assert run_cli("report", "--home", str(tmp_path / "home"), cwd=tmp_path).exit_code == 0
    html = (run_dir / "report.html").read_text()
    markdown = (run_dir / "report.md").read_text()
    assert html.count('class="holdout-point"') == 3, "baseline and both keeps"
    assert "holdout got worse" in html and "⚠" in html
    assert "| 1 | keep | 2, holdout 4 ⚠ | overfit ⚠ holdout got worse" in markdown, "the holdout beside the metric"
    assert "noise: the baseline measured 3 times" in markdown and "confirm: the best measured again" in markdown
