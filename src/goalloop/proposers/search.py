"""The search proposer: Optuna's ask-and-tell over numeric and categorical knobs the goal declares.

Each knob is one value in one file, found by a regex whose group 1 is the value. Every attempt asks the
study for a point, writes its values over group 1 (nothing else in the file changes) and describes the
change as `lr=0.0123 batch=64`; `observe` tells the study the check's metric, or a failure for a crash or
a rejection. The study lives in `runs/<run-id>/search.journal`, so a resumed run continues it: trials a
killed process left open are closed from the ledger (the metric if the attempt was judged, a failure if
it was lost), and a resumed sampler is reseeded past the trials already made so it does not replay them.

With `parallel: N` a round asks the study for N points before any is told (one trial open a slot); the
study is used under a lock, since the slots propose from threads.

Checked before the baseline (so `goalloop validate` reports it): every file exists at the base commit,
every pattern matches exactly once there (`^` and `$` match at line ends), group 1 reads back every value
the search may write, no knob lies in a protected file, no two knobs share a value, the goal has a metric,
and `cmaes` is importable when chosen.

The baseline enters the study as a known point (when its values lie in the search space), so no attempt is
spent re-measuring it. A sample equal to the kept values would be an empty change: it is told the kept
metric and another is asked. Floats are written in positional notation, rounded to six significant digits
of the range (of the value itself, for a log range); the study keeps the unrounded value.

Not covered: several objectives, pruning, knobs that depend on each other (conditional spaces), a value
spread over several places (declare one knob per place), or values that are not a single token of text.
Categorical choices are written as Python's `str()` of the YAML value: quote them to control the text.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import regex

from goalloop.errors import InfrastructureError
from goalloop.git_runner import git_environment
from goalloop.goal import Goal, SearchParam, patterns
from goalloop.goal import SearchProposer as SearchConfig
from goalloop.path_rules import PathRules
from goalloop.proposers.base import Proposal, ProposalRequest
from goalloop.repo_target import RepoTarget

if TYPE_CHECKING:  # Optuna (and numpy under it) is imported when the study is opened: `validate` needs neither
    import optuna
    from optuna.distributions import BaseDistribution

    from goalloop.ledger import AttemptRecord

JOURNAL_FILE = "search.journal"
STUDY_NAME = "goalloop"
ITERATION_ATTR = "iteration"
SIGNIFICANT_DIGITS = 6
DUPLICATE_TRIES = 50
TPE_STARTUP_TRIALS = 5
SCORED_VERDICTS = ("baseline", "keep", "discard")
FREE = {"cost_usd": 0.0, "tokens": 0}
"""A search proposal calls no model: it costs nothing, and that is known."""


@dataclass(frozen=True)
class Knob:
    """A declared param, validated against the file at the base commit."""

    name: str
    param: SearchParam
    pattern: regex.Pattern[str]
    baseline: Any
    """The value in the file at base, or None when it lies outside the search space."""
    base_span: tuple[int, int]
    """Where group 1 is in the file at base."""

    @property
    def file(self) -> str:
        return self.param.file

    @property
    def distribution(self) -> BaseDistribution:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        param = self.param
        if param.choices is not None:
            return CategoricalDistribution(param.choices)
        assert param.low is not None and param.high is not None
        if param.int_:
            return IntDistribution(int(param.low), int(param.high), log=param.log)
        return FloatDistribution(param.low, param.high, log=param.log)

    def format(self, value: Any) -> str:
        if self.param.choices is not None:
            return str(value)
        if self.param.int_:
            return str(int(value))
        return format_float(float(value), self.param)

    def suggest(self, trial: optuna.Trial) -> Any:
        param = self.param
        if param.choices is not None:
            return trial.suggest_categorical(self.name, param.choices)
        assert param.low is not None and param.high is not None
        if param.int_:
            return trial.suggest_int(self.name, int(param.low), int(param.high), log=param.log)
        return trial.suggest_float(self.name, param.low, param.high, log=param.log)


class WriteError(Exception):
    """A knob's pattern no longer matches its file exactly once, or cannot read back what was written."""


class SearchProposer:
    reads_prompt = False
    """It samples the study: no prompt is built or written for it."""

    def __init__(self, config: SearchConfig, goal: Goal, target: RepoTarget, rules: PathRules | None = None) -> None:
        self.config = config
        self.goal = goal
        if not goal.is_metric_goal:
            raise goal.error(
                ("proposer", "kind"),
                "the search proposer needs a number to optimise, and the check has no metric",
                fix="add check.metric: a regex whose group 1 reads the number from the check's output",
            )
        if config.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise goal.error(
                ("proposer", "sampler"),
                "sampler cmaes needs the `cmaes` package, which is not installed",
                fix="pip install cmaes  (or use sampler: tpe)",
            )
        rules = rules if rules is not None else PathRules.for_goal(goal, target)
        at_base: dict[str, str] = {}
        """Each knob file's text at base, read once however many knobs it holds."""
        self.knobs = [_validated_knob(goal, target, rules, name, param, at_base)
                      for name, param in config.params.items()]
        _refuse_shared_values(goal, self.knobs)
        self._study: optuna.Study | None = None
        self._trial_of: dict[int, int] = {}
        """Iteration -> number of its open trial in this process."""
        self._lock = threading.Lock()
        """A parallel round proposes from several threads: the study (and its lazy opening) is one at a time."""

    # -- the protocol -------------------------------------------------------------------------------------
    def propose(self, request: ProposalRequest) -> Proposal:
        with self._lock:
            return self._propose(request)

    def _propose(self, request: ProposalRequest) -> Proposal:
        from optuna.trial import TrialState

        try:
            study = self._open(request)
            for _ in range(DUPLICATE_TRIES):
                trial = study.ask()
                trial.set_user_attr(ITERATION_ATTR, request.iteration)
                texts = {knob.name: knob.format(knob.suggest(trial)) for knob in self.knobs}
                try:
                    written = self._write(request.worktree, texts)
                except WriteError as exc:
                    study.tell(trial, state=TrialState.FAIL)
                    return Proposal(description=_describe(texts), failed=str(exc), files={}, **FREE)
                if written:
                    self._trial_of[request.iteration] = trial.number
                    return Proposal(description=_describe(texts), files=written, **FREE)
                self._tell(study, trial.number, _kept(request.history))
        except OSError as exc:
            raise InfrastructureError(
                f"the search proposer could not read or write {exc.filename or 'a file'}: {exc.strerror or exc}",
                fix="free disk space or fix the permissions, then `goalloop resume`",
            ) from None
        return Proposal(failed=(
            f"{DUPLICATE_TRIES} samples in a row equalled the kept values: the search space looks exhausted "
            "(widen low/high or add choices)"
        ), files={}, **FREE)

    def observe(self, record: AttemptRecord) -> None:
        with self._lock:
            number = self._trial_of.pop(record.iteration, None)
            if number is not None and self._study is not None:
                self._tell(self._study, number, record)

    # -- the study ----------------------------------------------------------------------------------------
    def _open(self, request: ProposalRequest) -> optuna.Study:
        """The run's study, created on the first proposal and continued by a resumed run."""
        if self._study is not None:
            return self._study
        import optuna
        from optuna.trial import TrialState

        from goalloop.proposers.study_journal import RunStudyStorage, SingleWriterJournal

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = RunStudyStorage(SingleWriterJournal(request.run_dir / JOURNAL_FILE))
        study = optuna.create_study(
            storage=storage, study_name=STUDY_NAME, direction=self.goal.target.direction, load_if_exists=True
        )
        made = len(study.get_trials(deepcopy=False))
        study.sampler = self._sampler(None if self.config.seed is None else self.config.seed + made)
        by_iteration = {record.iteration: record for record in request.history}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self._tell(study, trial.number, by_iteration.get(trial.user_attrs.get(ITERATION_ATTR, -1)))
        if made == 0:
            self._add_baseline(study, by_iteration.get(0))
        self._study = study
        return study

    def _sampler(self, seed: int | None) -> optuna.samplers.BaseSampler:
        import optuna

        if self.config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.config.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)

    def _add_baseline(self, study: optuna.Study, baseline: AttemptRecord | None) -> None:
        if baseline is None or _score(baseline) is None or any(k.baseline is None for k in self.knobs):
            return
        from optuna.trial import create_trial

        study.add_trial(create_trial(
            params={k.name: k.baseline for k in self.knobs},
            distributions={k.name: k.distribution for k in self.knobs},
            value=_score(baseline),
            user_attrs={ITERATION_ATTR: 0},
        ))

    @staticmethod
    def _tell(study: optuna.Study, number: int, record: AttemptRecord | None) -> None:
        from optuna.trial import TrialState

        value = _score(record)
        if value is None:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(number, value, skip_if_finished=True)

    # -- the files ----------------------------------------------------------------------------------------
    def _write(self, worktree: Path, texts: dict[str, str]) -> dict[str, str]:
        """Write the values over group 1 of each knob; returns each file changed (its path as git names it
        -> its new text, as written): empty, and nothing written, if no file would change. Patterns see
        lines ended by `\\n`; a file whose lines all end in CRLF is written back with CRLF."""
        originals: dict[str, str] = {}
        updated: dict[str, str] = {}
        endings: dict[str, str] = {}
        for knob in self.knobs:
            name = Path(knob.file).as_posix()
            if name not in originals:
                with open(worktree / name, encoding="utf-8") as stream:
                    originals[name] = updated[name] = stream.read()
                    endings[name] = stream.newlines if stream.newlines == "\r\n" else "\n"
            updated[name] = _replace_value(knob, updated[name], texts[knob.name])
        changed = {name: text.replace("\n", endings[name]) for name, text in updated.items() if text != originals[name]}
        for name, new in changed.items():
            (worktree / name).write_bytes(new.encode("utf-8"))
        return changed


# -- validation at construction ---------------------------------------------------------------------------
def _validated_knob(goal: Goal, target: RepoTarget, rules: PathRules, name: str, param: SearchParam,
                    at_base: dict[str, str]) -> Knob:
    where = ("proposer", "params", name)
    file = Path(param.file).as_posix()
    if file not in at_base:
        at_base[file] = _file_at_base(goal, target, name, param.file)
    text = at_base[file]
    why_not = rules.violations([file])
    if why_not:
        raise goal.error(
            (*where, "file"),
            f"{why_not[0]}: every attempt would be rejected",
            fix="put the knob in a file the proposer may change (the check's own scripts are always protected)",
        )
    pattern = patterns.compiled(param.pattern, regex.MULTILINE)
    try:
        matches = patterns.find_all(pattern, text)
    except patterns.PatternTimeout as exc:
        raise goal.error((*where, "pattern"), f"{exc} ({param.file})",
                         fix="write a simpler pattern, anchored to the line that holds the value: '^LR = ([0-9.e-]+)'",
                         ) from None
    if len(matches) != 1:
        found = "matches nothing" if not matches else (
            f"matches {len(matches)} places (lines {', '.join(str(_line_of(text, m.start(1))) for m in matches)})"
        )
        raise goal.error(
            (*where, "pattern"),
            f"'{param.pattern}' {found} in {param.file} at {target.base_commit[:12]}; it must match exactly once",
            fix="make the pattern match the one place that holds the value, such as '^LR = ([0-9.e-]+)' "
            "(^ and $ match at line ends); declare one param per place to tune several",
        )
    if matches[0].start(1) < 0:
        raise goal.error((*where, "pattern"), "group 1 takes no part in the match",
                         fix="put the group around the value itself, as in 'LR = ([0-9.e-]+)'")
    current = matches[0].group(1)
    _check_space(goal, name, param)
    baseline = _baseline_value(goal, name, param, current)
    knob = Knob(name, param, pattern, baseline, matches[0].span(1))
    for value in _probe_values(param):
        written = knob.format(value)
        try:
            _replace_value(knob, text, written)
        except WriteError as exc:
            raise goal.error(
                (*where, "pattern"),
                f"group 1 cannot hold every value the search may write: {exc}",
                fix="widen group 1 to take any such value, e.g. ([-+0-9.eE]+) for numbers or (\\w+) for words",
            ) from None
    return knob


def _file_at_base(goal: Goal, target: RepoTarget, name: str, file: str) -> str:
    shown = subprocess.run(
        ["git", "-C", str(target.root), "show", f"{target.base_commit}:{Path(file).as_posix()}"],
        capture_output=True, env=git_environment(os.environ),
    )
    if shown.returncode != 0:
        raise goal.error(
            ("proposer", "params", name, "file"),
            f"{file} is not in the repository at the base commit ({target.base_commit[:12]} in {target.root})",
            fix="give the path relative to the repository root, as `git ls-files` shows it; a new file must be committed",
        )
    try:
        return shown.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise goal.error(("proposer", "params", name, "file"), f"{file} is not a UTF-8 text file",
                         fix="point the param at the text file that holds the value") from None


def _check_space(goal: Goal, name: str, param: SearchParam) -> None:
    """What Optuna's distributions would refuse, refused as the goal's error (they are made later)."""
    if param.choices is not None:
        bad = [c for c in param.choices if c is not None and not isinstance(c, (str, int, float, bool))]
        if bad:
            raise goal.error(("proposer", "params", name, "choices"), f"choices must be single values, got {bad[0]!r}",
                             fix="list numbers or words, such as [relu, gelu] or [32, 64, 128]")
        return
    assert param.low is not None and param.high is not None
    if param.int_:
        for key, bound in (("low", param.low), ("high", param.high)):
            if bound != int(bound):
                raise goal.error(("proposer", "params", name, key), f"int: true needs whole numbers, got {bound:g}",
                                 fix=f"write {key}: {int(bound)}, or drop int: true")


def _baseline_value(goal: Goal, name: str, param: SearchParam, text: str) -> Any:
    """The value the file holds at base, if the search space contains it."""
    if param.choices is not None:
        return next((c for c in param.choices if str(c) == text), None)
    try:
        value: float = float(text)
    except ValueError:
        raise goal.error(
            ("proposer", "params", name, "pattern"),
            f"group 1 reads {text!r}, which is not a number",
            fix="put group 1 around the number itself, as in 'LR = ([0-9.e-]+)'",
        ) from None
    if param.int_:
        if value != int(value):
            return None
        value = int(value)
    assert param.low is not None and param.high is not None
    return value if param.low <= value <= param.high else None


def _probe_values(param: SearchParam) -> list[Any]:
    """Values whose written forms stand for all the search may write: the ends and a fractional middle."""
    if param.choices is not None:
        return list(param.choices)
    assert param.low is not None and param.high is not None
    if param.int_:
        return [int(param.low), int(param.high)]
    inside = param.low * (param.high / param.low) ** (1 / 7) if param.log else param.low + (param.high - param.low) / 7
    return [param.low, param.high, inside]


def _refuse_shared_values(goal: Goal, knobs: list[Knob]) -> None:
    for index, knob in enumerate(knobs):
        for other in knobs[:index]:
            (start, end), (other_start, other_end) = knob.base_span, other.base_span
            if Path(knob.file) == Path(other.file) and start <= other_end and other_start <= end:
                raise goal.error(
                    ("proposer", "params", knob.name, "pattern"),
                    f"its value in {knob.file} touches the value of param '{other.name}'",
                    fix="give each param its own value to change, set off from the others",
                )


# -- helpers ----------------------------------------------------------------------------------------------
def _replace_value(knob: Knob, text: str, value: str) -> str:
    """`text` with group 1 of the knob's only match replaced by `value`, checked by reading it back."""
    try:
        matches = patterns.find_all(knob.pattern, text)
    except patterns.PatternTimeout as exc:
        raise WriteError(f"{exc} in {knob.file}") from None
    if len(matches) != 1:
        raise WriteError(
            f"the pattern of param '{knob.name}' matches {len(matches)} places in {knob.file}, not exactly one"
        )
    start, end = matches[0].span(1)
    new_text = text[:start] + value + text[end:]
    try:
        read_back = [m.group(1) for m in patterns.find_all(knob.pattern, new_text)]
    except patterns.PatternTimeout as exc:
        raise WriteError(f"{exc} in {knob.file}") from None
    if read_back != [value]:
        seen = f"reads back {read_back[0]!r}" if len(read_back) == 1 else f"then matches {len(read_back)} places"
        raise WriteError(f"after writing {value!r} into {knob.file}, the pattern of param '{knob.name}' {seen}")
    return new_text


def format_float(value: float, param: SearchParam) -> str:
    """Positional notation, rounded to SIGNIFICANT_DIGITS of the range (of the value, for a log range)."""
    assert param.low is not None and param.high is not None
    scale = abs(value) if param.log else param.high - param.low
    decimals = max(0, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(scale))) if scale > 0 else SIGNIFICANT_DIGITS
    text = f"{value:.{decimals}f}"
    text = text.rstrip("0") if "." in text else text + "."
    text = text + "0" if text.endswith(".") else text
    return "0.0" if float(text) == 0 else text


def _score(record: AttemptRecord | None) -> float | None:
    """What the study is told about an attempt: its metric if the check measured one, else None (a failure)."""
    if record is None or record.verdict not in SCORED_VERDICTS or record.metric is None:
        return None
    return record.metric if math.isfinite(record.metric) else None


def _kept(history: tuple[AttemptRecord, ...]) -> AttemptRecord | None:
    kept = [r for r in history if r.verdict in ("baseline", "keep")]
    return kept[-1] if kept else None


def _describe(texts: dict[str, str]) -> str:
    return " ".join(f"{name}={text}" for name, text in texts.items())


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1

