"""The goal file: pydantic models, YAML loading with file:line errors, and the JSON schema.

A goal file is strict: an unknown key is an error (with a "did you mean" for near misses), and every
error names the file, the line and the fix. Durations are written `90s`, `10m`, `8h` (or `1h30m`, or a
plain number of seconds); sums of money as `5`, `5.00` or `"$5"`.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

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

from goalloop.errors import GoalError

DEFAULT_CLAUDE_MODEL = "claude-sonnet-4-5"
SCHEMA_URL = "./goal.schema.json"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """`90s`, `10m`, `8h`, `1h30m` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number followed by s, m or h, such as 90s, 10m or 8h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(
                f"{value!r} is not a duration; write a number followed by s, m or h, such as 90s, 10m or 8h"
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be more than zero, got {value!r}")
    return seconds


def parse_money(value: Any) -> float:
    """`5`, `5.00` or `"$5"` -> 5.0 (US dollars)."""
    if isinstance(value, bool):
        raise ValueError("a sum of money is a number such as 5 or 5.00")
    text = str(value).strip().lstrip("$").strip() if isinstance(value, str) else value
    try:
        amount = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a sum of money; write a number of dollars such as 5 or 5.00") from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"a sum of money must be zero or more, got {value!r}")
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
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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

    @field_validator("metric")
    @classmethod
    def _metric_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"metric is not a valid regular expression: {exc}") from None
        return pattern


class Target(StrictModel):
    """When the run has succeeded."""

    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a larger or a smaller metric is better."""
    value: float | None = None
    """Stop as soon as the metric reaches this value. Absent: improve until the budget is spent."""


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
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if compiled.groups < 1:
            raise ValueError("pattern needs a group around the value, as in 'LR = ([0-9.e-]+)'")
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is empty; list at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be less than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
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
    proposer: ProposerConfig

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Goal:
        if self.instructions is not None and self.instructions_file is not None:
            raise ValueError("give instructions or instructions_file, not both")
        if self.target.value is not None and self.check.metric is None:
            raise ValueError("target.value needs check.metric (a regex that reads the number from the check)")
        return self

    @property
    def source(self) -> Path:
        assert self._source is not None, "goal was not loaded from a file"
        return self._source

    @property
    def run_name(self) -> str:
        return self.name or re.sub(r"[^A-Za-z0-9._-]", "-", self.source.stem)

    @property
    def is_metric_goal(self) -> bool:
        return self.check.metric is not None

    def where(self, *loc: Any) -> str:
        """`path:line` of the deepest key of `loc` that the file spells out."""
        for depth in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:depth]))
            if line is not None:
                return f"{self.source}:{line}"
        return str(self.source)

    def error(self, loc: tuple[Any, ...], message: str, fix: str | None = None) -> GoalError:
        """A GoalError pointing at the line of `loc` in this goal file."""
        key = ".".join(str(part) for part in loc)
        return GoalError(f"{self.where(*loc)}: {key}: {message}" if key else f"{self.where()}: {message}", fix=fix)

    def instructions_text(self) -> str:
        if self.instructions_file is None:
            return (self.instructions or "").strip()
        path = (self.source.parent / self.instructions_file).resolve()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self.error(
                ("instructions_file",),
                f"cannot read {path}: {exc.strerror or exc}",
                fix="give a path relative to the goal file, or write the text under instructions:",
            ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], source: Path) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise GoalError(
                    f"{source}:{line}: key '{key}' appears twice (first on line {seen[key]})",
                    fix="keep one of them; YAML would silently use the last",
                )
            seen[key] = line
            lines[path + (key,)] = line
            _line_map(value_node, path + (key,), lines, source)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines, source)


def _model_fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (by alias) a model accepts at `loc`, for "did you mean" hints."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return []
        current = field.annotation
        args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if args:
            current = args[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _describe(error: dict[str, Any], source: Path, lines: dict[tuple[Any, ...], int], data: Any) -> str:
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part in _PROPOSER_TAGS))
    key = ".".join(str(part) for part in loc) or "(top level)"
    line = next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    fix = ""
    if kind == "extra_forbidden":
        parent_fields = _model_fields_at(Goal, loc[:-1]) if loc else []
        if len(loc) >= 2 and loc[0] == "proposer":
            parent_fields = _proposer_fields(data, loc)
        close = difflib.get_close_matches(str(loc[-1]), parent_fields, n=1, cutoff=0.6)
        message = f"unknown key '{loc[-1]}'"
        fix = f"did you mean '{close[0]}'?" if close else f"remove it; allowed here: {', '.join(parent_fields)}"
    elif kind == "missing":
        message = f"required key '{loc[-1]}' is missing"
        fix = f"add '{loc[-1]}:' here (see GOAL_TEMPLATE.md)"
    elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
        message = "proposer.kind must be one of: command, scripted, claude, search"
        fix = "set kind: command (an agent CLI), claude (the API), search (numeric knobs) or scripted"
    elif kind.startswith(("int_", "float_", "bool_", "string_", "list_", "dict_", "model_")) or kind in (
        "literal_error",
        "greater_than_equal",
        "less_than_equal",
        "too_short",
    ):
        got = error.get("input")
        if not isinstance(got, (dict, list)):
            message = f"{message} (got {got!r})"
        fix = "see GOAL_TEMPLATE.md for this key's form"
    text = f"{source}:{line}: {key}: {message}"
    return f"{text}\n  fix: {fix}" if fix else text


_PROPOSER_TAGS = {"command", "scripted", "claude", "search"}
_PROPOSER_MODELS: dict[str, type[BaseModel]] = {
    "command": CommandProposer,
    "scripted": ScriptedProposer,
    "claude": ClaudeProposer,
    "search": SearchProposer,
}


def _proposer_fields(data: Any, loc: tuple[Any, ...]) -> list[str]:
    kind = data.get("proposer", {}).get("kind") if isinstance(data, dict) else None
    model = _PROPOSER_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return []
    return _model_fields_at(model, loc[1:-1])


def parse_goal(text: str, source: Path) -> Goal:
    """Parse goal YAML `text` (read from `source`), raising GoalError with file:line on any mistake."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise GoalError(
            f"{source}:{line}: this is not valid YAML: {exc.problem or exc}",
            fix="check the indentation and quoting on that line (quote strings holding ': ' or '#')",
        ) from None
    if root is None:
        raise GoalError(f"{source}:1: the goal file is empty", fix="start from GOAL_TEMPLATE.md")
    if not isinstance(root, yaml.MappingNode):
        raise GoalError(
            f"{source}:{root.start_mark.line + 1}: a goal file is a mapping of keys (name:, check:, ...)",
            fix="start from GOAL_TEMPLATE.md",
        )
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines, source)
    data = yaml.load(text, Loader=_UniqueKeyLoader)
    try:
        goal = Goal.model_validate(data)
    except ValidationError as exc:
        messages = [_describe(err, source, lines, data) for err in exc.errors()]
        raise GoalError("\n".join(messages)) from None
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
    except (OSError, UnicodeDecodeError) as exc:
        raise GoalError(f"{source}: cannot read the goal file: {exc}") from None
    return parse_goal(text, source.resolve() if not source.is_absolute() else source)


def goal_json_schema() -> dict[str, Any]:
    """The JSON Schema of goal files, for editors (yaml-language-server) and `goalloop schema`."""
    schema = Goal.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "goalloop goal file"
    return schema
