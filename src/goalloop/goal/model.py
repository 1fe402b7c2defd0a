"""The goal file: pydantic models, YAML loading with file:line errors, and the JSON schema.

A goal file is strict: an unknown key is an error (with a "did you mean" for near misses), and every
error names the file, the line and the fix. Durations are written `90s`, `10m`, `8h` (or `1h30m`, or a
plain number of seconds); sums of money as `5`, `5.00` or `"$5"`.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
import json
import math
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from goalloop.errors import GoalError

DEFAULT_CLAUDE_MODEL = "claude-sonnet-5-5"
SCHEMA_URL = "./goal.schema.json"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_FORMS = "a number followed by s, m, h or d, such as 90s, 10m, 8h or 1h30m"
_DURATION_WORDS = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)\s*(?:,\s*|and\s+)?", re.IGNORECASE)
_UNIT_WORDS = {
    **dict.fromkeys(["ms", "msec", "msecs", "millisecond", "milliseconds"], "ms"),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "s"),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], "m"),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "h"),
    **dict.fromkeys(["d", "day", "days"], "d"),
}


class Mistake(ValueError):
    """A validator's complaint that knows the fix and, when it is about one key of the model, that key.

    `parse_goal` reports it at the line of `at` (relative to the model that raised it), with `fix`.
    """

    def __init__(self, message: str, fix: str, at: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.at = at


def _duration_spelled_out(text: str) -> str | None:
    """`10 minutes` -> `10m`, `1 hour and 30 mins` -> `1h30m`; None when `text` is no such thing."""
    parts, end = [], 0
    for match in _DURATION_WORDS.finditer(text):
        unit = _UNIT_WORDS.get(match.group(2).lower())
        if match.start() != end or unit is None:
            return None
        parts.append(match.group(1) + unit)
        end = match.end()
    return "".join(parts) if parts and end == len(text) else None


def parse_duration(value: Any) -> float:
    """`90s`, `10m`, `8h`, `1h30m` or a number of seconds -> seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Mistake(f"{_show(value)} is not a duration", fix=f"write {_DURATION_FORMS}")
    if isinstance(value, (int, float)):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            spelled = _duration_spelled_out(value.strip())
            raise Mistake(
                f"{_show(value)} is not a duration",
                fix=f"write {spelled} (durations are {_DURATION_FORMS})" if spelled else f"write {_DURATION_FORMS}",
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise Mistake(
            f"a duration must be more than zero, got {_show(value)}"
            if seconds <= 0
            else f"{_show(value)} is not a duration",
            fix=f"write {_DURATION_FORMS}, or delete the line to use the default",
        )
    return seconds


def parse_money(value: Any) -> float:
    """`5`, `5.00` or `"$5"` -> 5.0 (US dollars)."""
    fix = "write a number of dollars, such as 5 or 5.00 (no words or currency name)"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Mistake(f"{_show(value)} is not a sum of money", fix=fix)
    text = value.strip().lstrip("$").strip() if isinstance(value, str) else value
    try:
        amount = float(text) if not isinstance(text, int) or abs(text) < 10**300 else math.inf
    except ValueError:
        number = re.fullmatch(r"\$?\s*(\d+(?:\.\d+)?)\s*(?:usd|dollars?|\$)?", str(value).strip(), re.IGNORECASE)
        raise Mistake(
            f"{_show(value)} is not a sum of money",
            fix=f"write {number.group(1)} (a number of dollars)" if number else fix,
        ) from None
    if not math.isfinite(amount):
        raise Mistake(f"{_show(value)} is not a sum of money", fix=fix)
    if amount < 0:
        raise Mistake(f"a sum of money must be zero or more, got {_show(value)}", fix=fix)
    return amount


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
Money = Annotated[float, BeforeValidator(parse_money)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)


class Check(StrictModel):
    """The objective check: a shell command run in the worktree after every proposal."""

    run: str = Field(min_length=1)
    """Shell command, run with /bin/sh in the worktree. Exit code 0 means the check passed."""
    timeout: Duration = 600.0
    """Longest a check may run; then its whole process group is killed and the attempt is a crash."""
    metric: str | None = None
    """Regex matched line by line against stdout; the last match wins; group 1 (or the whole match) is the
    number. Absent: the goal is pass/fail by exit code."""
    files: list[str] = []
    """More files the check depends on; they are protected like the check script."""
    metric_file: bool = False
    """Read the metric from a JSON file the check writes to $GOALLOOP_METRIC_FILE (outside the worktree),
    a number or {"metric": number}, instead of from stdout, which the code under test can also write to."""
    env_per_slot: dict[str, str] = {}
    """Variables set for the check (and the holdout) in each parallel slot; `{slot}` in a value becomes the
    slot's number (0 to parallel - 1), e.g. CUDA_VISIBLE_DEVICES: "{slot}" gives each slot its own GPU."""

    @field_validator("metric")
    @classmethod
    def _metric_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise Mistake(
                    f"not a valid regular expression: {exc}",
                    fix="close every ( [ { you open, and write the regex in single quotes so backslashes stay "
                    r"as written, as in metric: '^score:\s*(\S+)'",
                ) from None
        return pattern


class Target(StrictModel):
    """When the run has succeeded."""

    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a larger or a smaller metric is better."""
    value: float | None = None
    """Stop as soon as the metric reaches this value. Absent: improve until the budget is spent."""


class Keep(StrictModel):
    """When a candidate counts as better: rules against noise and bloat."""

    min_delta: float | Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*%\s*$")] = Field(default=0.0)
    """The smallest improvement that counts: a number in the metric's units, or a share such as "1%"."""
    repeats: int = Field(default=1, ge=1, le=100)
    """Measure the baseline, and any candidate that looks better, this many times; compare medians."""
    confirm: bool = False
    """Measure the best kept state once more before the run ends, and report any drift."""
    max_added_lines: int | None = Field(default=None, ge=1)
    """Reject an attempt that adds more lines than this, whatever its gain."""

    @field_validator("min_delta")
    @classmethod
    def _not_negative(cls, value: float | str) -> float | str:
        if isinstance(value, (int, float)) and value < 0:
            raise Mistake(f"min_delta is {value}; it must be zero or more", fix="write the smallest gain that counts, e.g. 0.01 or \"1%\"")
        return value


class Holdout(StrictModel):
    """A second check the proposer never sees, run on the baseline and on every kept state."""

    run: str = Field(min_length=1)
    """Shell command, run in the worktree."""
    metric: str
    """Regex for the holdout's metric, read like check.metric; better in the same direction."""
    timeout: Duration = 600.0
    files: list[str] = []
    """Files the holdout depends on; protected and hidden from the Claude proposer's editor."""

    @field_validator("metric")
    @classmethod
    def _metric_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise Mistake(f"metric is not a valid regular expression: {exc}",
                          fix="write a Python regex in single quotes, with a group around the number: '^acc:\\s*(\\S+)'") from None
        return pattern


class Budget(StrictModel):
    """Hard limits; the run stops cleanly between attempts when one is reached."""

    iterations: int | None = Field(default=20, ge=1)
    """Attempts after the baseline."""
    time: Duration | None = None
    """Wall-clock time of the whole run, resumes included."""
    tokens: int | None = Field(default=None, ge=1)
    """Model tokens (input + output, cache reads and writes included)."""
    usd: Money | None = None
    """Dollars spent on model calls."""
    patience: int | None = Field(default=None, ge=1)
    """End the run after this many attempts in a row without a keep."""
    deadline: str | None = None
    """A local clock time such as "07:30" (the next one after the run started) or "2026-11-22T07:30":
    no attempt starts when its check could not finish before it."""

    @field_validator("deadline")
    @classmethod
    def _deadline_readable(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_deadline(value, datetime.now())
        return value


def resolve_deadline(text: str, started: datetime) -> datetime:
    """The moment `text` names: a clock time "HH:MM" is the first such time after `started` (local time)."""
    text = str(text).strip()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise Mistake(f"{text!r} is not a time of day", fix="write a 24-hour time such as 07:30")
        moment = started.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return moment if moment > started else moment + timedelta(days=1)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Mistake(f"{text!r} is not a clock time or a date and time",
                      fix='write "07:30" (the next 07:30) or "2026-11-22T07:30"') from None


class CommandProposer(StrictModel):
    """An external agent CLI (Claude Code, Codex, Aider, a script) that edits the worktree in place."""

    kind: Literal["command"]
    run: str = Field(min_length=1)
    """Shell command run in the worktree; the prompt is in $GOALLOOP_PROMPT_FILE."""
    timeout: Duration = 1800.0
    """Longest one proposal may take; then it is killed and the attempt fails."""
    env: dict[str, str] = {}
    """Extra environment variables for the command."""


class ScriptedStep(StrictModel):
    """One prepared change: file contents, a patch, or a deliberate failure."""

    description: str = ""
    files: dict[str, str | None] = {}
    """Path -> new content; null deletes the file."""
    patch: str | None = None
    """A unified diff applied with `git apply`."""
    fail: str | None = None
    """Make this proposal fail with this message (to test failure handling)."""
    sleep: Duration | None = None
    """Pretend to think for this long before proposing."""
    cost_usd: Money = 0.0
    """Pretend this proposal cost this much."""


class ScriptedProposer(StrictModel):
    """Applies a list of prepared changes in order: for tests, demos and dry runs."""

    kind: Literal["scripted"]
    steps: list[ScriptedStep] = Field(min_length=1)
    cycle: bool = False
    """Start again from the first step when the list is used up (otherwise further proposals fail)."""


class ClaudeProposer(StrictModel):
    """Claude through the Messages API, editing the worktree with the text editor and bash tools."""

    kind: Literal["claude"]
    model: str = DEFAULT_CLAUDE_MODEL
    max_turns: int = Field(default=30, ge=1)
    """Most model turns in one attempt."""
    max_tokens: int = Field(default=8192, ge=1)
    """Most output tokens in one reply."""
    bash: bool = True
    """Give the model a bash tool (run in the worktree, without secrets in its environment)."""
    bash_timeout: Duration = 120.0
    temperature: float | None = Field(default=None, ge=0, le=1)
    thinking: int | None = Field(default=None, ge=1024)
    """Extended thinking budget in tokens, for models that support it."""
    base_url: str | None = None
    """API endpoint; default $ANTHROPIC_BASE_URL, then Anthropic's."""
    outage_wait: Duration = 1800.0
    """How long to wait out an API outage (with backoff) before the run stops, resumable."""
    secret_patterns: list[str] = ["KEY", "TOKEN", "SECRET", "PASSWORD"]
    """Environment variables whose names contain one of these are hidden from the bash tool."""


class SearchParam(StrictModel):
    """A numeric or categorical knob written into a file by regex."""

    file: str
    pattern: str
    """Regex whose group 1 is the value; must match exactly once in the file."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    int_: bool = Field(default=False, alias="int")
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParam:
        example = "pattern: 'LR = ([0-9.e-]+)'"
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise Mistake(
                f"not a valid regular expression: {exc}",
                fix=f"close every ( [ {{ you open, and write it in single quotes, as in {example}",
                at=("pattern",),
            ) from None
        if compiled.groups < 1:
            raise Mistake(
                "the pattern has no group ( ) around the value to change",
                fix=f"put parentheses around the part that is the value, as in {example}",
                at=("pattern",),
            )
        if self.choices is not None:
            if not self.choices:
                raise Mistake("is empty", fix="list at least one value, such as choices: [adam, sgd]", at=("choices",))
            if self.low is not None or self.high is not None:
                raise Mistake(
                    "both choices and low/high are given",
                    fix="keep choices (a list of values) or low and high (a range), not both",
                    at=("choices",),
                )
            return self
        if self.low is None and self.high is None:
            raise Mistake(
                "has no range (low: and high:) and no choices:",
                fix="add low: and high: (a numeric range) or choices: (a list of values)",
            )
        if self.low is None or self.high is None:
            missing, given = ("low", "high") if self.low is None else ("high", "low")
            raise Mistake(
                f"{given}: is given but {missing}: is not",
                fix=f"add {missing}: (a range needs both ends), or write choices: (a list of values) instead",
                at=(given,),
            )
        for end in ("low", "high"):
            if not math.isfinite(getattr(self, end)):
                raise Mistake(f"{end} must be a finite number", fix=f"write {end}: as a plain number", at=(end,))
        if self.low >= self.high:
            raise Mistake(
                f"low ({self.low:g}) must be less than high ({self.high:g})",
                fix=f"swap them: low: {self.high:g} and high: {self.low:g}" if self.low > self.high
                else "make high larger than low, or use choices: [value] for a fixed value",
                at=("low",),
            )
        if self.log and self.low <= 0:
            raise Mistake(
                f"log: true needs low above zero, got {self.low:g}",
                fix="set low to a small positive number such as 1.0e-5, or remove log: true",
                at=("low",),
            )
        return self


class SearchProposer(StrictModel):
    """Numeric search over declared knobs with Optuna; no model, no key, no network."""

    kind: Literal["search"]
    params: dict[str, SearchParam] = Field(min_length=1)
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    seed: int | None = None


ProposerConfig = Annotated[
    Union[CommandProposer, ScriptedProposer, ClaudeProposer, SearchProposer],
    Field(discriminator="kind"),
]


class Environment(StrictModel):
    """What of your environment the check and a command proposer see."""

    pass_: list[str] = Field(default=[], alias="pass")
    """Secret-looking variables (names with KEY, TOKEN, SECRET, PASSWORD...) to pass through anyway,
    e.g. ANTHROPIC_API_KEY for `claude -p`. All others are dropped."""


class Goal(StrictModel):
    """A goal file."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Names the runs and their branches; default: the goal file's stem."""
    repo: str | None = None
    """Git repository to work on, relative to the goal file; default: the repository holding the goal file."""
    base: str = "HEAD"
    """Commit-ish to start from."""
    instructions: str | None = None
    """The task in prose."""
    instructions_file: str | None = None
    """Or: a file (relative to the goal file) holding the instructions."""
    context: list[str] = []
    """Files (repo paths) always shown to the proposer."""
    editable: list[str] = []
    """Globs the proposer may change; empty: everything that is not protected."""
    protected: list[str] = []
    """Globs the proposer must never change. The goal file and the check's files are always protected."""
    check: Check
    target: Target = Target()
    budget: Budget = Budget()
    keep: Keep = Keep()
    holdout: Holdout | None = None
    env: Environment = Environment()
    parallel: int = Field(default=1, ge=1, le=64)
    """Candidates proposed and checked at the same time each round, each in its own worktree; the best
    one that beats the kept state is kept. 1: one attempt at a time."""
    proposer: ProposerConfig

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_makes_a_branch(cls, name: str | None) -> str | None:
        if name is not None and ".." in name:
            raise Mistake(*_bad_name(name))
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Goal:
        if self.instructions is not None and self.instructions_file is not None:
            raise Mistake(
                "both instructions and instructions_file are given",
                fix="keep one of them: the text under instructions:, or the file named by instructions_file:",
                at=("instructions_file",),
            )
        if self.target.value is not None and self.check.metric is None and not self.check.metric_file:
            raise Mistake(
                "a target value needs a number to compare, and check: has no metric: to read one",
                fix=r"add a regex under check:, such as metric: '^score:\s*(\S+)' (group 1 is the number), "
                "or delete target.value to make the goal pass/fail",
                at=("target", "value"),
            )
        return self

    @property
    def source(self) -> Path:
        assert self._source is not None, "goal was not loaded from a file"
        return self._source

    @property
    def run_name(self) -> str:
        return self.name or _slug(self.source.stem) or "goal"

    @property
    def is_metric_goal(self) -> bool:
        return self.check.metric is not None or self.check.metric_file

    def where(self, *loc: Any) -> str:
        """`path:line` of the deepest key of `loc` that the file spells out."""
        for depth in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:depth]))
            if line is not None:
                return f"{self.source}:{line}"
        return str(self.source)

    def error(self, loc: tuple[Any, ...], message: str, fix: str | None = None) -> GoalError:
        """A GoalError pointing at the line of `loc` in this goal file."""
        key = _key_path(loc)
        return GoalError(f"{self.where(*loc)}: {key}: {message}" if key else f"{self.where()}: {message}", fix=fix)

    def instructions_text(self) -> str:
        if self.instructions_file is None:
            return (self.instructions or "").strip()
        path = (self.source.parent / self.instructions_file).resolve()
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
            near = _near_file(path)
            fix = "give a path relative to the goal file, or write the text under instructions:"
            if near is not None:
                fix = f"did you mean {(Path(self.instructions_file).parent / near).as_posix()}? ({fix})"
            raise self.error(("instructions_file",), f"cannot read {path}: {reason}", fix=fix) from None


def _near_file(path: Path) -> str | None:
    """The name of a file next to the missing `path` that it looks like a misspelling of."""
    try:
        names = [p.name for p in path.parent.iterdir() if p.is_file()] if path.parent.is_dir() else []
    except OSError:
        return None
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6) or [
        n for n in names if n.lower() == path.name.lower()
    ]
    return close[0] if close and close[0] != path.name else None


def _key_path(loc: tuple[Any, ...]) -> str:
    """("proposer", "steps", 1, "files") -> "proposer.steps[1].files"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: 'text', 12, true, nothing, a list, a mapping."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


# -- reading the YAML ---------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _plain_key(text: str) -> Any:
    """An unquoted key as YAML reads it: `3` -> 3, `on` -> True."""
    try:
        key = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return key if isinstance(key, (str, int, float, bool, type(None))) else text


def _line_map(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    source: Path,
    within: frozenset[int] = frozenset(),
) -> None:
    """Record the 1-based line of every key and list item; refuse a key given twice, and an alias inside itself."""
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in within:
        raise GoalError(
            f"{source}:{lines[path]}: {_key_path(path)}: a YAML alias (*name) here refers to a block that contains it",
            fix="write the keys out instead of the alias",
        )
    within = within | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise GoalError(
                    f"{source}:{line}: {_key_path(path + (key,))}: this key appears twice (first on line {seen[key]})",
                    fix="keep one of them and merge what it holds; YAML would silently drop the first",
                )
            seen[key] = line
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:str" and not key_node.style:
                key = _plain_key(key_node.value)  # `3:` is the number 3, `on:` is true
            lines[path + (key,)] = line
            _line_map(value_node, path + (key,), lines, source, within)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines, source, within)


def _yaml_error(exc: yaml.MarkedYAMLError, text: str, source: Path) -> GoalError:
    """A YAML syntax error as one message at the line the person has to change."""
    problem, context = exc.problem or str(exc), exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    text_lines = text.splitlines()
    if mark is not None and exc.context_mark is not None and (
        "end of stream" in problem
        or (context.startswith("while parsing a flow") and _unbalanced(_line(text_lines, exc.context_mark.line)))
    ):
        mark = exc.context_mark  # an unclosed quote or bracket: point at where it opens
    index = mark.line if mark is not None else 0
    here, column = _line(text_lines, index), mark.column if mark is not None else 0
    message, fix = f"this is not valid YAML: {problem}", "check the indentation and quoting on this line"
    if "'\\t'" in problem:
        message = "a tab character: YAML does not allow tabs for indentation"
        fix = "replace the tab with spaces (two per level, like the lines around it)"
    elif "end of stream" in problem and "quoted" in context:
        quote = here[exc.context_mark.column] if exc.context_mark and exc.context_mark.column < len(here) else '"'
        message = f"the {quote} opened on this line is never closed"
        fix = (
            f"end the text with a matching {quote}; for text of several lines write `key: |` "
            "and indent the lines below it"
        )
    elif context.startswith("while parsing a flow") and _unbalanced(here):
        opener = "{" if "mapping" in context else "["
        message = f"the {opener} opened on this line is never closed"
        fix = f"close it with {'}' if opener == '{' else ']'} on the same line, with commas between the items"
    elif "escape character" in problem:
        message = f"{problem} inside double quotes (a backslash starts an escape there)"
        fix = f"use single quotes, where a backslash stays a backslash: {_requoted(here, single=True)}"
    elif "constructor for the tag" in problem:
        message = "a value starting with ! is read as a YAML tag"
        fix = f"put it in quotes: {_requoted(here)}"
    elif "unhashable key" in problem:
        message = "a key here is a list or a mapping (a line starting with '? ', or brackets before the colon)"
        fix = "write `key: value` with a plain word as the key"
    elif "while scanning an alias" in context or "undefined alias" in problem:
        start = exc.context_mark.column if "alias" in context and exc.context_mark else column
        message = "a value starting with * is read as a YAML alias"
        fix = f"put it in quotes: {_quote_at(here, start)}"
    elif "cannot start any token" in problem:
        char = here[column] if column < len(here) else "this character"
        message = f"a value cannot start with {char} unless it is quoted"
        fix = f"put it in quotes: {_quote_at(here, column)}"
    elif "mapping values are not allowed" in problem:
        message, fix, index = _stray_colon(text_lines, index, column)
    elif "expected <block end>" in problem:
        message = "this line is indented differently from the keys above it in the same block"
        fix = "indent keys of one block by the same number of spaces (a top-level key starts at the left margin)"
    elif "single document" in context:
        message = "the file holds more than one YAML document (a second '---' line)"
        fix = "delete this '---' line and keep one goal per file"
    return GoalError(f"{source}:{index + 1}: {message}", fix=fix)


def _line(text_lines: list[str], index: int) -> str:
    return text_lines[index] if 0 <= index < len(text_lines) else ""


def _unbalanced(line: str) -> bool:
    return line.count("{") > line.count("}") or line.count("[") > line.count("]")


def _requoted(line: str, single: bool = False) -> str:
    """`key: value` -> `key: "value"` (or single-quoted), for a fix line."""
    match = re.match(r"\s*(-\s+)?([^\s:#][^:#]*?):\s+(.*?)\s*$", line)
    if not match:
        return '"…"'
    key, value = match.group(2), match.group(3)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if single or '"' in value:
        return f"{key}: '" + value.replace("'", "''") + "'"
    return f'{key}: "' + value.replace("\\", "\\\\") + '"'


def _quote_at(line: str, column: int) -> str:
    """`line` with the value that starts at `column` in double quotes (up to `,`, `]` or `}` inside brackets)."""
    in_brackets = _unbalanced(line[:column])
    end = next((i for i in range(column, len(line)) if in_brackets and line[i] in ",]}"), len(line))
    value = line[column:end].rstrip()
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (line[:column] + quoted + line[column + len(value):]).strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _stray_colon(text_lines: list[str], index: int, column: int) -> tuple[str, str, int]:
    """Why YAML found a ': ' it did not expect: a colon inside a value, a key indented too far, or a line
    above that is not `key: value` (so YAML read it and this line as one long text)."""
    here = _line(text_lines, index)
    if ": " in here[:column].lstrip():
        return (
            "this value holds ': ', which YAML reads as the start of another key",
            f"put the value in quotes: {_requoted(here)}",
            index,
        )
    filled = [i for i in range(index) if text_lines[i].strip() and not text_lines[i].lstrip().startswith("#")]
    above = filled[-1] if filled else None
    if above is None:
        return "this is not valid YAML: a ':' where none was expected", "write `key: value`, one per line", index
    previous = text_lines[above]
    if _indent(here) > _indent(previous) and re.match(r"\s*(-\s+)?[^:#]+:\s+\S", previous):
        key = previous.strip().split(":")[0].lstrip("- ")
        return (
            f"this key is indented deeper than {key}: above it, so YAML reads it as part of {key}'s value",
            f"indent it by {_indent(previous)} spaces, like {key}:",
            index,
        )
    if not re.match(r"\s*(-\s+)?[^:#]*:(\s|$)", previous):
        content = previous.strip()
        guess = re.sub(r":(?=\S)", ": ", content, count=1) if ":" in content else re.sub(r"^(\S+)\s+", r"\1: ", content)
        return (
            "this line is not `key: value`: a key needs a colon and a space after it",
            f"write {guess}" if guess != content else "write `key: value`",
            above,
        )
    return (
        "this is not valid YAML: a ':' where none was expected",
        "put a value holding ': ' in quotes, and indent the keys of one block by the same number of spaces",
        index,
    )


# -- explaining validation errors ---------------------------------------------------------------------------
_PROPOSER_KINDS = {
    "command": "an agent CLI such as Claude Code, Codex or Aider",
    "claude": "Claude through the API",
    "search": "a numeric search over knobs",
    "scripted": "a list of prepared changes",
}
_AGENT_CLI_WORDS = ("code", "codex", "aider", "cursor", "gemini", "agent", "cli")
_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()
)} | {"thirty": 30, "forty": 40, "fifty": 50, "hundred": 100}
_EXAMPLES = {
    ("check", "run"): "python3 -m pytest -q",
    ("proposer", "run"): 'claude -p "$(cat "$GOALLOOP_PROMPT_FILE")" --permission-mode acceptEdits',
}
_MISSING_FIX = {
    ("check",): "add `check:` and below it, indented, `run:` with the command that tells whether the goal is met, "
    "such as run: python3 -m pytest -q",
    ("check", "run"): "add `run:` under check: with the shell command to run, such as run: python3 -m pytest -q",
    ("proposer",): "add a proposer: `proposer:` and below it, indented, `kind: command` and "
    "`run: <your agent's command>` (or kind: claude, search or scripted)",
    ("proposer", "run"): "add `run:` under proposer: with the agent's command, such as "
    'run: claude -p "$(cat "$GOALLOOP_PROMPT_FILE")" --permission-mode acceptEdits',
    ("proposer", "steps"): "add `steps:` under proposer: with a list of changes, each `- files: {path: content}`",
    ("proposer", "params"): "add `params:` under proposer: with the knobs to search, such as "
    "lr: {file: train.py, pattern: 'LR = ([0-9.e-]+)', low: 1.0e-4, high: 0.1}",
}


def _plain(annotation: Any) -> Any:
    """Unwrap Annotated[...] and `X | None` down to X (a union of models stays a union)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _schema_at(loc: tuple[Any, ...]) -> tuple[Any, FieldInfo | None, tuple[Any, ...]]:
    """For pydantic's `loc`: the type expected there, the field it belongs to (if any), and the loc as the
    user sees it, without the labels pydantic adds for the branches of a union (`command`, `float`, ...)."""
    current: Any = Goal
    field: FieldInfo | None = None
    user: tuple[Any, ...] = ()
    for part in loc:
        current = _plain(current)
        if get_origin(current) in (list, dict):
            current = get_args(current)[-1]  # `part` is an index or a key
            field = None
        elif get_origin(current) in (Union, UnionType):  # `part` names a branch: a proposer kind, `float`, ...
            branches = get_args(current)
            current = next((m for m in branches if _is_model(m) and _kind_tag(m) == part), None) or next(
                (t for t in branches if isinstance(t, type) and str(part).split("-")[-1] == t.__name__), current
            )
            continue
        elif _is_model(current):
            field = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
            current = field.annotation if field is not None else None
        else:
            current = field = None
        user += (part,)
    return _plain(current), field, user


def _kind_tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return get_args(field.annotation)[0] if field is not None and get_args(field.annotation) else None


def _keys_of(model: Any) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()] if _is_model(model) else []


def _describe(error: dict[str, Any], lines: dict[tuple[Any, ...], int]) -> tuple[int, str, str]:
    """(line, message, fix) for one pydantic error."""
    raw_loc, kind, got = tuple(error["loc"]), error["type"], error.get("input")
    expected, field, loc = _schema_at(raw_loc)
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
    problem = (error.get("ctx") or {}).get("error")
    message = error["msg"].removeprefix("Value error, ")
    fix = _takes(name, field)
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):  # a key that YAML read as a number, true, a date
        loc = loc[:-1] if loc[-1] == "[key]" else loc
        key = got if kind == "invalid_key" else loc[-1]
        line = next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)
        yes_no = " (YAML reads yes, no, on and off as true or false)" if isinstance(key, bool) else ""
        where = f"{_key_path(loc[:-1])}: " if loc[:-1] else ""
        return line, f"{where}the key {_show(key)} is not text{yes_no}", (
            "put the key in quotes, as in \"name\": value, or remove it if it is not meant to be there"
        )
    if isinstance(problem, Mistake):
        loc = loc + problem.at
        message, fix = problem.message, problem.fix
    elif kind == "extra_forbidden":
        allowed = _keys_of(_schema_at(raw_loc[:-1])[0])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        message = f"unknown key '{loc[-1]}'"
        fix = f"did you mean '{close[0]}'?" if close else f"remove it; the keys allowed here are: {', '.join(allowed)}"
    elif kind == "missing":
        message = "this required key is missing"
        doc = f" ({field.description.rstrip('.')})" if field is not None and field.description else ""
        parent = _key_path(loc[:-1])
        fix = _MISSING_FIX.get(loc) or f"add `{name}:`{f' under {parent}:' if parent else ''}{doc}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        message, fix = _proposer_kind(kind, got)
        loc = loc + ("kind",) if kind == "union_tag_invalid" else loc
    elif kind in ("value_error", "assertion_error"):
        pass  # a validator's own words; the fix is what the key takes
    elif _is_model(expected) or (
        get_origin(expected) in (Union, UnionType) and any(_is_model(m) for m in get_args(expected))
    ):
        message, fix = _not_a_mapping(name, got, expected)
    else:
        message, fix = _wrong_value(kind, error, name, got, expected, field)
    line = next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)
    key = _key_path(loc)
    return line, f"{key}: {message}" if key else message, fix


def _takes(name: str, field: FieldInfo | None) -> str:
    """What a key takes, from its docstring: the fix when nothing more precise is known."""
    if field is None or not field.description:
        return f"see GOAL_TEMPLATE.md for what {name}: takes"
    text = " ".join(field.description.split()).rstrip(".")
    return f"{name}: takes {text[0].lower()}{text[1:]} (see GOAL_TEMPLATE.md)"


def _describe_all(errors: list[dict[str, Any]], lines: dict[tuple[Any, ...], int]) -> list[tuple[int, str, str]]:
    """(line, message, fix) for each mistake, in file order. The errors pydantic gives for each branch of a
    union (`float`, `str`) are one mistake: the value fits none of them."""
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in errors:
        by_key.setdefault(_schema_at(tuple(error["loc"]))[2], []).append(error)
    found = set()
    for loc, group in by_key.items():
        if len(group) > 1 and loc and all(e["type"] not in ("missing", "extra_forbidden") for e in group):
            line, _, _ = _describe(group[0], lines)
            field = _schema_at(tuple(group[0]["loc"]))[1]
            name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
            message = f"{_key_path(loc)}: {_show(group[0].get('input'))} is not a value it takes"
            found.add((line, message, _takes(name, field)))
        else:
            found.update(_describe(error, lines) for error in group)
    return sorted(found, key=lambda item: item[0])


def _proposer_kind(kind: str, got: Any) -> tuple[str, str]:
    kinds = "; ".join(f"{k} ({why})" for k, why in _PROPOSER_KINDS.items())
    if kind == "union_tag_not_found":
        return "kind: is missing", f"add `kind:` under proposer:, one of: {kinds}"
    tag = str(got.get("kind") if isinstance(got, dict) else got)
    if any(word in tag.lower() for word in _AGENT_CLI_WORDS) and tag not in _PROPOSER_KINDS:
        return (
            f"'{tag}' is not a kind of proposer",
            "an agent CLI runs as kind: command, with its command line under run: "
            '(Claude Code: run: claude -p "$(cat "$GOALLOOP_PROMPT_FILE")" --permission-mode acceptEdits)',
        )
    close = difflib.get_close_matches(tag, list(_PROPOSER_KINDS), n=1, cutoff=0.6)
    return (
        f"'{tag}' is not a kind of proposer",
        f"did you mean '{close[0]}'? (kinds: {', '.join(_PROPOSER_KINDS)})" if close else f"write one of: {kinds}",
    )


def _not_a_mapping(name: str, got: Any, expected: Any) -> tuple[str, str]:
    """A key that holds keys of its own (check:, budget:, proposer: ...) was given something else."""
    models = [m for m in get_args(expected) if _is_model(m)] if not _is_model(expected) else [expected]
    keys = list(dict.fromkeys(k for m in models for k in _keys_of(m)))
    shown = ", ".join(f"{k}:" for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
    if len(models) > 1:
        shown = "kind: and that kind's keys"
    below = f"write `{name}:` alone on its line and its keys indented below it"
    if got is None:
        return f"is empty; it takes keys of its own ({shown})", below
    if isinstance(got, list):
        return (
            f"is a list (its lines start with '- '), but it takes keys ({shown})",
            f"remove the '- ' in front of the keys under {name}: and keep them indented",
        )
    if isinstance(got, str) and name == "proposer" and got in _PROPOSER_KINDS:
        return f"is the text {_show(got)}, but it takes keys ({shown})", f"{below}: `kind: {got}` and that kind's keys"
    if isinstance(got, str) and "run" in keys:
        return f"is the text {_show(got)}, but it takes keys ({shown})", f"{below}: `run: {got}`"
    return f"is {_show(got)}, but it takes keys ({shown})", below


def _wrong_value(
    kind: str, error: dict[str, Any], name: str, got: Any, expected: Any, field: FieldInfo | None
) -> tuple[str, str]:
    """A value of the wrong type, out of range, or not one of the allowed words."""
    ctx = error.get("ctx") or {}
    default = field.default if field is not None and field.default not in (None, PydanticUndefined) else None
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(got), allowed, n=1, cutoff=0.6)
        return (
            f"{_show(got)} is not one of: {', '.join(allowed)}",
            f"did you mean '{close[0]}'? write {name}: {close[0]}" if close else f"write one of: {', '.join(allowed)}",
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = next(ctx[k] for k in ("ge", "gt", "le", "lt") if k in ctx)
        bound = {"greater_than_equal": "at least", "greater_than": "more than",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        example = f", such as {name}: {default}" if default is not None else ""
        return f"{_show(got)} is out of range: it must be {bound} {limit}", f"write a number {bound} {limit}{example}"
    if kind in ("too_short", "string_too_short"):
        what = "the shell command" if name == "run" else "at least one item" if kind == "too_short" else "a value"
        return "is empty", f"write {what} after {name}:" if kind == "string_too_short" else f"list {what} under {name}:"
    if kind == "string_pattern_mismatch" and name == "name":
        return _bad_name(str(got))
    if got is None and error["loc"] and isinstance(error["loc"][-1], int):
        return "this list item is empty", "write a value after the '- ', or delete the line"
    if got is None:
        example = _EXAMPLES.get(_schema_at(tuple(error["loc"]))[2], "")
        if field is not None and not field.is_required():
            return "has no value after the colon", f"write a value after {name}:, or delete the line to use the default"
        if example:
            return "has no value after the colon", f"write the command after {name}:, such as {name}: {example}"
        return "has no value after the colon", f"write a value after {name}:"
    if kind in ("list_type", "dict_type") or get_origin(expected) in (list, dict):
        if get_origin(expected) is dict or kind == "dict_type":
            return (
                f"is {_show(got)}, but it takes `key: value` pairs",
                f"write the pairs indented under {name}:, one per line",
            )
        item = json.dumps(got) if isinstance(got, str) else "…" if isinstance(got, (list, dict)) else _show(got)
        return f"is {_show(got)}, but it takes a list", f"write a list in brackets: {name}: [{item}]"
    want = _TYPE_WORDS.get(expected, "a value of another kind")
    if expected is str:
        written = f'"{_show(got) if isinstance(got, bool) else got}"'
        return (
            f"is {_show(got)}, but it takes text",
            f"put it in quotes: {f'{name}: ' if error['loc'] and error['loc'][-1] == name else ''}{written}"
            if not isinstance(got, (list, dict))
            else f"write text after {name}:",
        )
    if expected in (int, float):
        words = str(got).strip().lower() if isinstance(got, str) else ""
        number = _NUMBER_WORDS.get(words)
        if number is None:
            digits = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*\S*.*", words) if words else None
            number = digits.group(1) if digits else None
        if kind == "int_from_float":
            number = round(float(got))
        example = number if number is not None else default if default is not None else 1 if expected is int else 0.5
        return (
            f"{_show(got)} is not {want}",
            f"write {name}: {example} ({want}{', no units or % sign' if expected is float else ', in digits'})",
        )
    if expected is bool:
        return f"{_show(got)} is not true or false", f"write {name}: true or {name}: false"
    return f"{_show(got)}: {error['msg']}", _takes(name, field)


def _slug(text: str) -> str:
    """`text` made fit to name a git branch: letters, digits, '.', '_' and '-'."""
    return re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", text)).strip("-._")


def _bad_name(got: str) -> tuple[str, str]:
    slug = _slug(got)
    return (
        f"{_show(got)} cannot name a git branch: use letters, digits, '.', '_' and '-' (no '..'), "
        "starting with a letter or digit",
        f"write name: {slug}" if slug else "write a name such as name: speedup",
    )


def parse_goal(text: str, source: Path) -> Goal:
    """Parse goal YAML `text` (read from `source`), raising GoalError with file:line on any mistake."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except yaml.YAMLError as exc:
        raise GoalError(
            f"{source}:1: this is not valid YAML: {exc}", fix="save the goal file as plain UTF-8 text"
        ) from None
    if root is None:
        raise GoalError(
            f"{source}:1: the goal file is empty",
            fix="run `goalloop init` to write a commented starter goal, or copy one from goals/",
        )
    if not isinstance(root, yaml.MappingNode):
        starts_with_dash = isinstance(root, yaml.SequenceNode)
        raise GoalError(
            f"{source}:{root.start_mark.line + 1}: a goal file is a mapping of keys (name:, check:, proposer:, ...)"
            + (", but this one is a list" if starts_with_dash else ""),
            fix="remove the '- ' in front of the top-level keys"
            if starts_with_dash
            else "start from `goalloop init`, which writes a commented starter goal",
        )
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines, source)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    try:
        goal = Goal.model_validate(data)
    except ValidationError as exc:
        found = _describe_all(exc.errors(), lines)
        raise GoalError(
            "\n".join(f"{source}:{line}: {message}\n  fix: {fix}" for line, message, fix in found[:-1])
            + ("\n" if len(found) > 1 else "")
            + f"{source}:{found[-1][0]}: {found[-1][1]}",
            fix=found[-1][2],
        ) from None
    goal._source = source
    goal._lines = lines
    return goal


def load_goal(path: str | Path) -> Goal:
    """Read and validate a goal file. Raises GoalError (exit 2) naming file:line and the fix."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoalError(f"{source}: no such goal file", fix="check the path, or run `goalloop init`") from None
    except UnicodeDecodeError as exc:
        line = source.read_bytes()[: exc.start].count(b"\n") + 1
        raise GoalError(f"{source}:{line}: the goal file is not UTF-8 text", fix="save it as UTF-8") from None
    except OSError as exc:
        raise GoalError(f"{source}: cannot read the goal file: {exc.strerror or exc}", fix="check the path") from None
    return parse_goal(text, source.resolve() if not source.is_absolute() else source)


def goal_json_schema() -> dict[str, Any]:
    """The JSON Schema of goal files, for editors (yaml-language-server) and `goalloop schema`."""
    schema = Goal.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "goalloop goal file"
    return schema
