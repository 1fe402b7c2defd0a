"""The search proposer: it optimises, it survives a restart, and it refuses bad params before the baseline.

The optimisation tests drive the real SearchProposer with a small harness that plays the loop's part
(keep or revert the knob file, tell the proposer the verdict) and scores a function with a known optimum
in-process, so many seeds fit in a few seconds. End-to-end runs through the CLI are in
test_example_goals.py.
"""

from __future__ import annotations

import importlib.util
import math
import re
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from conftest import git, make_repo, run_cli, write_goal
from goalloop.goal import Budget, SearchParam, load_goal
from goalloop.ledger import AttemptRecord
from goalloop.proposers.base import Prompt, ProposalRequest, Spend
from goalloop.proposers.search import ITERATION_ATTR, JOURNAL_FILE, STUDY_NAME, SearchProposer, format_float
from goalloop.workspace import PathRules, RepoTarget

KNOBS = "X = 0.5\nY = 0.5\nLR = 0.01\n"
PARAMS = {
    "x": {"file": "knobs.py", "pattern": r"^X = (\S+)$", "low": 0.0, "high": 1.0},
    "y": {"file": "knobs.py", "pattern": r"^Y = (\S+)$", "low": 0.0, "high": 1.0},
    "lr": {"file": "knobs.py", "pattern": r"^LR = (\S+)$", "low": 1e-5, "high": 1.0, "log": True},
}


def regret(knobs_text: str) -> float:
    """Distance from the optimum x=0.73, y=0.21, lr=10**-3.3 (0 at the optimum)."""
    x, y, lr = (float(re.search(rf"^{name} = (\S+)$", knobs_text, re.M).group(1)) for name in ("X", "Y", "LR"))
    return (x - 0.73) ** 2 + (y - 0.21) ** 2 + ((math.log10(lr) + 3.3) / 4) ** 2


def knob_repo(
    path: Path, params: dict, *, sampler: str = "tpe", seed: int | None = 0, files: dict | None = None, metric: bool = True
) -> Path:
    repo = make_repo(path, files or {"knobs.py": KNOBS, "score.py": "print('regret: 1')\n"})
    check = {"run": "python3 score.py", "metric": r"^regret: (\S+)"} if metric else {"run": "python3 score.py"}
    write_goal(repo / "goal.yaml", {
        "check": check,
        "target": {"direction": "minimize"},
        "proposer": {"kind": "search", "sampler": sampler, "seed": seed, "params": params},
    })
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "goal")
    return repo


def new_proposer(repo: Path) -> SearchProposer:
    goal = load_goal(repo / "goal.yaml")
    return SearchProposer(goal.proposer, goal, RepoTarget(repo, git(repo, "rev-parse", "HEAD")))


def request(repo: Path, run_dir: Path, iteration: int, history: list[AttemptRecord]) -> ProposalRequest:
    attempt_dir = run_dir / "attempts" / f"{iteration:04d}"
    attempt_dir.mkdir(parents=True, exist_ok=True)
    return ProposalRequest(
        iteration=iteration, worktree=repo, prompt=Prompt("", ""), attempt_dir=attempt_dir, run_dir=run_dir,
        rules=PathRules([], []), budget=Budget(), spend=Spend(), history=tuple(history),
    )


def attempt(proposer: SearchProposer, repo: Path, run_dir: Path, history: list[AttemptRecord], *, observe: bool = True) -> AttemptRecord:
    """One attempt as the loop makes it: propose, score, keep or revert, record, observe."""
    iteration = history[-1].iteration + 1
    knobs = repo / "knobs.py"
    kept_text = knobs.read_text()
    proposal = proposer.propose(request(repo, run_dir, iteration, history))
    assert proposal.failed is None, proposal.failed
    metric = regret(knobs.read_text())
    kept = next(r for r in reversed(history) if r.verdict in ("baseline", "keep"))
    verdict = "keep" if metric < kept.metric else "discard"
    if verdict == "discard":
        knobs.write_text(kept_text)
    record = AttemptRecord(iteration, verdict, proposal.description, metric=metric)
    history.append(record)
    if observe:
        proposer.observe(record)
    return record


def baseline(repo: Path) -> list[AttemptRecord]:
    return [AttemptRecord(0, "baseline", "baseline", metric=regret((repo / "knobs.py").read_text()))]


def best_after(tmp_path: Path, sampler: str, seed: int, attempts: int) -> float:
    repo = knob_repo(tmp_path / f"{sampler}-{seed}", PARAMS, sampler=sampler, seed=seed)
    run_dir = tmp_path / f"{sampler}-{seed}-run"
    run_dir.mkdir()
    proposer, history = new_proposer(repo), baseline(repo)
    for _ in range(attempts):
        attempt(proposer, repo, run_dir, history)
    return min(r.metric for r in history)


def study_trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(run_dir / JOURNAL_FILE)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials()


# -- it optimises -----------------------------------------------------------------------------------------
def test_tpe_beats_random_search_over_seeds(tmp_path: Path) -> None:
    seeds, attempts = range(5), 30
    tpe = statistics.median(best_after(tmp_path, "tpe", seed, attempts) for seed in seeds)
    random = statistics.median(best_after(tmp_path, "random", seed, attempts) for seed in seeds)
    baseline_regret = regret(KNOBS)
    assert tpe < random / 3, f"median best regret: tpe {tpe:.4f}, random {random:.4f}"
    assert tpe < baseline_regret / 20


def test_writes_only_group_one_and_describes_the_values(tmp_path: Path) -> None:
    files = {"knobs.py": "# tuning\nX = 0.5  # keep this comment\nY = 0.5\nLR = 0.01\nBATCH = 32\nACT = 'relu'\n",
             "score.py": "print('regret: 1')\n"}
    params = {
        "x": {**PARAMS["x"], "pattern": r"^X = (\S+)"},
        "batch": {"file": "knobs.py", "pattern": r"^BATCH = (\d+)", "low": 8, "high": 512, "log": True, "int": True},
        "act": {"file": "knobs.py", "pattern": r"^ACT = '(\w+)'", "choices": ["relu", "tanh"]},
    }
    repo = knob_repo(tmp_path / "repo", params, files=files)
    proposer, run_dir = new_proposer(repo), tmp_path / "run"
    run_dir.mkdir()
    history = [AttemptRecord(0, "baseline", "baseline", metric=1.0)]
    proposal = proposer.propose(request(repo, run_dir, 1, history))
    text = (repo / "knobs.py").read_text()
    match = re.fullmatch(
        r"# tuning\nX = (\d\.\d+)  # keep this comment\nY = 0\.5\nLR = 0\.01\nBATCH = (\d+)\nACT = '(relu|tanh)'\n", text
    )
    assert match, text
    assert proposal.description == f"x={match[1]} batch={match[2]} act={match[3]}"


def test_a_sample_equal_to_the_kept_values_is_not_proposed(tmp_path: Path) -> None:
    files = {"knobs.py": "ACT = 'relu'\n", "score.py": "print('regret: 1')\n"}
    repo = knob_repo(tmp_path / "repo", {"act": {"file": "knobs.py", "pattern": r"ACT = '(\w+)'", "choices": ["relu", "tanh"]}},
                     files=files)
    proposer, run_dir = new_proposer(repo), tmp_path / "run"
    run_dir.mkdir()
    history = [AttemptRecord(0, "baseline", "baseline", metric=1.0)]
    for iteration in range(1, 5):
        proposal = proposer.propose(request(repo, run_dir, iteration, history))
        assert proposal.failed is None and proposal.description == "act=tanh"
        (repo / "knobs.py").write_text(files["knobs.py"])
        record = AttemptRecord(iteration, "discard", proposal.description, metric=2.0)
        history.append(record)
        proposer.observe(record)


def test_floats_are_written_positionally_and_rounded_to_the_range() -> None:
    linear = SearchParam(file="f", pattern="(.*)", low=0.0, high=1.0)
    logged = SearchParam(file="f", pattern="(.*)", low=1e-6, high=1.0, log=True)
    assert format_float(0.123456789, linear) == "0.12346"
    assert format_float(1.0, linear) == "1.0"
    assert format_float(0.0, linear) == "0.0"
    assert format_float(0.0000123456789, logged) == "0.0000123457"
    assert format_float(0.5, logged) == "0.5"


def random_search_run(tmp_path: Path, seed: int, attempts: int) -> tuple[Path, Path, SearchProposer, list[AttemptRecord]]:
    """A random-sampler run of `attempts` attempts: (repo, run folder, its proposer, its history)."""
    repo = knob_repo(tmp_path / "repo", PARAMS, sampler="random", seed=seed)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proposer, history = new_proposer(repo), baseline(repo)
    for _ in range(attempts):
        attempt(proposer, repo, run_dir, history)
    return repo, run_dir, proposer, history


# -- it survives a restart --------------------------------------------------------------------------------
def test_a_resumed_run_continues_its_study(tmp_path: Path) -> None:
    repo, run_dir, first, history = random_search_run(tmp_path, seed=7, attempts=4)
    recorded_not_observed = attempt(first, repo, run_dir, history, observe=False)
    kept_text = (repo / "knobs.py").read_text()
    first.propose(request(repo, run_dir, 6, history))  # killed while this attempt was being checked
    (repo / "knobs.py").write_text(kept_text)
    history.append(AttemptRecord(6, "crash", "lost", reason="lost: the run was killed before it was judged"))

    second = new_proposer(repo)
    for _ in range(3):
        attempt(second, repo, run_dir, history)

    trials = study_trials(run_dir)
    assert [t.user_attrs[ITERATION_ATTR] for t in trials] == list(range(10))
    assert [t.number for t in trials] == list(range(10))
    assert trials[0].value == pytest.approx(history[0].metric), "the baseline is the first known point"
    assert trials[5].state == TrialState.COMPLETE and trials[5].value == pytest.approx(recorded_not_observed.metric)
    assert trials[6].state == TrialState.FAIL
    assert all(t.state == TrialState.COMPLETE for t in trials[7:])
    assert [t.value for t in trials[7:]] == pytest.approx([r.metric for r in history[7:]])
    assert trials[7].params != trials[1].params, "the resumed sampler replayed the first run's samples"


def test_a_journal_torn_by_a_power_cut_is_continued_and_stays_readable_by_optuna(tmp_path: Path) -> None:
    """The journal is not fsynced (the ledger is): after a power cut its last line may be half written.
    A resumed run cuts that line off, continues the study, and the file stays Optuna's own format."""
    repo, run_dir, _, history = random_search_run(tmp_path, seed=3, attempts=3)
    journal = run_dir / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines) + lines[-1][: len(lines[-1]) // 2])

    second = new_proposer(repo)
    for _ in range(2):
        attempt(second, repo, run_dir, history)
    trials = study_trials(run_dir)
    assert [t.user_attrs[ITERATION_ATTR] for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.value for t in trials[1:]] == pytest.approx([r.metric for r in history[1:]])


def test_asking_does_not_list_every_trial_and_enqueued_trials_still_come_first(tmp_path: Path, monkeypatch) -> None:
    """study.ask() looks for waiting (enqueued) trials; the run's storage answers that without listing the
    study's trials each time (at attempt 10,000, ten thousand of them), and an enqueued trial is still
    asked first, in the order enqueued, on a fresh study and on one reopened from its journal."""
    from goalloop.proposers.study_journal import RunStudyStorage, SingleWriterJournal

    listed: list[int] = []
    real = JournalStorage.get_all_trials
    def listing(self, study_id, deepcopy=True, states=None):  # noqa: ANN001, ANN202
        listed.append(len(real(self, study_id, False, None)) if states == (TrialState.WAITING,) else 0)
        return real(self, study_id, deepcopy, states)

    monkeypatch.setattr(JournalStorage, "get_all_trials", listing)
    path = tmp_path / JOURNAL_FILE
    study = optuna.create_study(storage=RunStudyStorage(SingleWriterJournal(path)), study_name=STUDY_NAME)
    for _ in range(30):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
    assert sum(listed) <= 1, "asks looked through all the trials for a waiting one"
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})
    asked = [study.ask() for _ in range(3)]
    assert [t.suggest_float("x", 0.0, 1.0) for t in asked[:2]] == [0.25, 0.75]
    for trial in asked:
        study.tell(trial, 1.0)
    study.enqueue_trial({"x": 0.5})
    reopened = optuna.load_study(storage=RunStudyStorage(SingleWriterJournal(path)), study_name=STUDY_NAME)
    assert reopened.ask().suggest_float("x", 0.0, 1.0) == 0.5


# -- it refuses bad params before the baseline ------------------------------------------------------------
BAD_PARAMS = [
    pytest.param({"pattern": r"^Z = (\S+)$"}, "x.pattern", "matches nothing in knobs.py", id="pattern-matches-nothing"),
    pytest.param({"pattern": r"= (\S+)$"}, "x.pattern", "matches 3 places (lines 1, 2, 3)", id="pattern-matches-three"),
    pytest.param({"low": 2.0, "high": 1.0}, "x.low", "low (2) must be less than high (1)", id="low-above-high"),
    pytest.param({"low": None, "high": None, "choices": []}, "x.choices", "is empty", id="empty-choices"),
    pytest.param({"file": "missing.py"}, "x.file", "missing.py is not in the repository", id="missing-file"),
    pytest.param({"file": "score.py", "pattern": r"regret: (\d)"}, "x.file", "score.py (protected)", id="protected-file"),
    pytest.param({"pattern": r"^X = (\d\.\d)"}, "x.pattern", "group 1 cannot hold every value", id="group-too-narrow"),
    pytest.param({"pattern": r"^(X) = \S+$"}, "x.pattern", "group 1 reads 'X', which is not a number", id="group-not-a-number"),
    pytest.param({"low": 0.5, "high": 10.0, "int": True}, "x.low", "int: true needs whole numbers", id="int-fraction"),
]


@pytest.mark.parametrize(("change", "key", "message"), BAD_PARAMS)
def test_bad_params_are_goal_errors_with_file_and_line(tmp_path: Path, change: dict, key: str, message: str) -> None:
    param = {k: v for k, v in {**PARAMS["x"], **change}.items() if v is not None}
    repo = knob_repo(tmp_path / "repo", {"x": param})
    result = run_cli("validate", "goal.yaml", cwd=repo)
    assert result.exit_code == 2, result.output
    goal_text = (repo / "goal.yaml").read_text()
    line = expected_line(goal_text, key)
    assert f"goal.yaml:{line}: proposer.params.{key}" in result.stderr, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "fix:" in result.stderr


def test_cmaes_without_its_package_names_the_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("cmaes") is not None:
        pytest.skip("cmaes is installed here")
    repo = knob_repo(tmp_path / "repo", PARAMS, sampler="cmaes")
    result = run_cli("validate", "goal.yaml", cwd=repo)
    assert result.exit_code == 2, result.output
    assert f"goal.yaml:{expected_line((repo / 'goal.yaml').read_text(), 'sampler')}: proposer.sampler" in result.stderr
    assert "pip install cmaes" in result.stderr


def test_a_goal_without_a_metric_cannot_use_search(tmp_path: Path) -> None:
    repo = knob_repo(tmp_path / "repo", PARAMS, metric=False)
    result = run_cli("validate", "goal.yaml", cwd=repo)
    assert result.exit_code == 2, result.output
    assert "needs a number to optimise" in result.stderr


def expected_line(goal_text: str, key: str) -> int:
    """The line of `proposer.params.<key>` (or of `proposer.<key>`) in a goal written by write_goal."""
    lines = goal_text.splitlines()
    index = lines.index("proposer:")
    for part in ["params", *key.split(".")] if key != "sampler" else ["sampler"]:
        index = next(i for i in range(index + 1, len(lines)) if lines[i].strip().startswith(f"{part}:"))
    return index + 1


def test_the_knob_files_are_read_from_the_goals_repository_whatever_git_dir_says(tmp_path: Path, monkeypatch) -> None:
    """Started from a git hook, GIT_DIR names the hook's repository: the knobs are still read at the goal's
    base, in the goal's repository."""
    repo = knob_repo(tmp_path / "proj", PARAMS)
    other = make_repo(tmp_path / "other", {"knobs.py": "nothing here\n"})
    goal = load_goal(repo / "goal.yaml")
    target = RepoTarget(repo, git(repo, "rev-parse", "HEAD"))
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    proposer = SearchProposer(goal.proposer, goal, target)
    assert [knob.baseline for knob in proposer.knobs] == [0.5, 0.5, 0.01]
