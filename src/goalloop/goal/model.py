"""The goal file's pydantic models and its JSON schema.

A goal file is strict: an unknown key is an error, and every validator complaint is a Mistake that knows
its fix (mistakes.py turns it into file:line).
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from goalloop.errors import GoalError
from goalloop.goal.docs import rebuild_described
from goalloop.goal.paths import MAX_INSTRUCTIONS_BYTES, GoalPath, RepoGlob, RepoPath, Unreadable, read_capped
from goalloop.goal.patterns import Regex
from goalloop.goal.values import Duration, Mistake, Money, _show, resolve_deadline
from goalloop.goal.proposers import ProposerConfig
from goalloop.goal.strict import StrictModel
from goalloop.strategy import STRATEGIES

SCHEMA_URL = "./goal.schema.json"


class Check(StrictModel):
    """The objective check: a shell command run in the worktree after every proposal."""

    run: str = Field(min_length=1)
    """Shell command, run with /bin/sh in the worktree. Exit code 0 means the check passed."""
    timeout: Duration = 600.0
    """Longest a check may run; then its whole process group is killed and the attempt is a crash."""
    metric: Regex | None = None
    """Regex matched line by line against stdout; the last match wins; group 1 (or the whole match) is the
    number. Absent: the goal is pass/fail by exit code."""
    files: list[RepoGlob] = []
    """More files the check depends on; they are protected like the check script."""
    metric_file: bool = False
    """Read the metric from a JSON file the check writes to $GOALLOOP_METRIC_FILE (outside the worktree),
    a number or {"metric": number}, instead of from stdout, which the code under test can also write to."""
    env_per_slot: dict[str, str] = {}
    """Variables set for the check (and the holdout) in each parallel slot; `{slot}` in a value becomes the
    slot's number (0 to parallel - 1), e.g. CUDA_VISIBLE_DEVICES: "{slot}" gives each slot its own GPU."""



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
    """Measure the baseline, and any candidate that looks better, this many times; a candidate is kept only
    when its gain is significant at `confidence`. 1: every gain is a single measurement."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    """With repeats: how sure a gain must be to count. A one-sided t-test of the candidate's gain beyond
    min_delta against the check's noise, pooled over every state measured repeatedly in the run."""
    confirm: bool | None = None
    """Measure the best kept state again (repeats times) before the run ends and report that as the best,
    with its drift; default: on when repeats > 1."""
    guard_tests: bool = True
    """For a pass/fail goal: reject a pass that ran fewer tests than the kept state, read from the summary
    of pytest, unittest, cargo test, go test -v, jest or vitest."""
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
    metric: Regex
    """Regex for the holdout's metric, read like check.metric; better in the same direction."""
    timeout: Duration = 600.0
    files: list[RepoGlob] = []
    """Files the holdout depends on; protected and hidden from the Claude proposer's editor."""

    @field_validator("metric")
    @classmethod
    def _metric_compiles(cls, pattern: str) -> str:
        return _number_regex(pattern, "'^acc:\\s*(\\S+)'")


class Guard(StrictModel):
    """A figure besides the metric that must not get worse for an attempt to be kept or to pass."""

    name: str = Field(min_length=1)
    """What the figure is called in reasons, e.g. peak_mb."""
    metric: Regex
    """Regex read from the check's stdout like check.metric (the last matching line, group 1)."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Which way is better for this figure; the guard fails when it moves the other way."""
    tolerance: float | Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*%\s*$")] = 0.0
    """How much worse is still allowed: in the figure's units, or a share such as "5%"."""

    @field_validator("metric")
    @classmethod
    def _metric_compiles(cls, pattern: str) -> str:
        return _number_regex(pattern, "'^peak_mb:\\s*(\\S+)'")


def _number_regex(pattern: str, example: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise Mistake(f"metric is not a valid regular expression: {exc}",
                      fix=f"write a Python regex in single quotes, with a group around the number: {example}") from None
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



class Environment(StrictModel):
    """What of your environment the check and a command proposer see."""

    pass_: list[str] = Field(default=[], alias="pass")
    """Secret-looking variables (names with KEY, TOKEN, SECRET, PASSWORD...) to pass through anyway,
    e.g. a token the check needs. All others are dropped. The claude, claude-code, codex and aider
    proposers get their own key variables without it."""


class Sandbox(StrictModel):
    """Run the check, the holdout and the proposer's commands inside bubblewrap (Linux): each sees its own
    worktree read-write and the rest of the system read-only; the run folders, other worktrees, your
    checkout, your home, the holdout's files (from all but the holdout) and the network are hidden."""

    network: bool | Literal["proposer"] = False
    """Network inside the sandbox: false (none), true (the check and the proposer's commands), or
    `proposer` (only the proposer's commands, e.g. an agent CLI that calls its API)."""
    ro: list[str] = []
    """More paths visible read-only (datasets, model caches); `~` and globs allowed, relative to the goal file."""
    rw: list[str] = []
    """More paths visible read-write: caches (~/.cache/pip), devices (/dev/nvidia*)."""
    hide: list[str] = []
    """More paths hidden (secrets kept outside your home)."""
    checkout: Literal["hidden", "read-only"] = "hidden"
    """Your own checkout of the repository (not the run's worktree): hidden, or visible read-only."""

    def summary(self) -> str:
        """One line for `validate`."""
        network = {True: "network on", False: "no network", "proposer": "network for the proposer only"}
        parts = [f"bubblewrap, {network[self.network]}", f"checkout {self.checkout}"]
        parts += [f"{key} {', '.join(paths)}" for key, paths in (("ro", self.ro), ("rw", self.rw), ("hide", self.hide)) if paths]
        return "; ".join(parts)


def _sandbox_switch(value: Any) -> Any:
    """`sandbox: true` is the sandbox with its defaults; `sandbox: false`, none."""
    if value is True:
        return {}
    return None if value is False else value


def _also_boolean(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [{"type": "boolean"}, *schema.get("anyOf", [])]


class Executor(StrictModel):
    """Where the checks run: `threads` on this machine (the default), or `ray`: each check and holdout a task
    on a Ray cluster (pip install 'goalloop[ray]'). Proposals, git and the record stay on this machine."""

    kind: Literal["threads", "ray"] = "threads"
    address: str = "auto"
    """ray: the cluster to join: auto ($RAY_ADDRESS, or the cluster `ray start --head` started on this
    machine), the head's host:port (GCS, port 6379 by default), or ray://host:10001 (Ray Client)."""
    num_cpus: float = Field(default=1.0, ge=0)
    """ray: CPUs each check asks for; Ray runs no more checks on a node than its CPUs allow."""
    num_gpus: float = Field(default=0.0, ge=0)
    """ray: GPUs each check asks for; Ray sets CUDA_VISIBLE_DEVICES for the check to the GPUs it got."""
    resources: dict[str, float] = {}
    """ray: custom resources each check asks for, e.g. {imagenet: 1} to run only on nodes started with
    `ray start --resources '{"imagenet": 1}'`."""
    fetch_from: str | None = None
    """ray: the goal's repository at a path every worker can read (a shared filesystem): workers read each
    attempt from it instead of receiving it through Ray's object store."""
    scratch: str | None = None
    """ray: folder on the workers for the scratch checkouts (default: the worker's temp folder)."""
    retries: int = Field(default=1, ge=0, le=3)
    """ray: how many more times a check lost to the cluster (its worker or node died) is tried, on another
    node when one can take it, before the attempt is a crash."""

    @model_validator(mode="after")
    def _ray_keys_need_ray(self) -> Executor:
        ray_only = sorted(name for name in self.model_fields_set if name != "kind")
        if self.kind == "threads" and ray_only:
            raise Mistake(f"{', '.join(ray_only)} only apply to kind: ray", at=(ray_only[0],),
                          fix="add kind: ray to run the checks on a Ray cluster, or delete them")
        return self


class Search(StrictModel):
    """Which kept state each attempt starts from: the latest (`greedy`), or a parent picked from a tree of
    kept states, so that a change that is not the best yet can still be built on."""

    strategy: Literal[tuple(STRATEGIES)] = "greedy"  # type: ignore[valid-type]
    """greedy (the latest kept state), top-k, epsilon-greedy or softmax (a parent from the frontier of kept
    states, by its metric); a child is kept when it beats its own parent, and the branch points at the best."""
    k: int | None = Field(default=None, ge=1)
    """top-k: how many of the best open nodes a parent is drawn from (default 3; 1 is best-first)."""
    epsilon: float | None = Field(default=None, ge=0, le=1)
    """epsilon-greedy: how often the parent is any open node instead of the best (default 0.1)."""
    temperature: float | None = Field(default=None, gt=0)
    """softmax: how far weights spread over scores scaled to 0..1 (default 0.1; smaller is greedier)."""
    patience: int | None = Field(default=None, ge=1)
    """A node leaves the frontier after this many of its children in a row were not kept (default: 10 for
    a tree; greedy has only budget.patience); the run ends when no node is left."""
    seed: int | None = None
    """Seed of the parent picks, so a run repeats; default: a fresh one each run."""

    @model_validator(mode="after")
    def _params_of_the_strategy(self) -> Search:
        known = STRATEGIES[self.strategy].params
        stray = [name for name in ("k", "epsilon", "temperature") if name in self.model_fields_set and name not in known]
        if stray:
            owner = next(s.name for s in STRATEGIES.values() if stray[0] in s.params)
            raise Mistake(f"{stray[0]} does not apply to strategy: {self.strategy}", at=(stray[0],),
                          fix=f"delete {stray[0]}, or write strategy: {owner}")
        if self.strategy == "greedy" and "patience" in self.model_fields_set:
            raise Mistake("patience per node needs a tree strategy; greedy has only the run's budget.patience",
                          at=("patience",), fix="write strategy: top-k (or another tree strategy), or use budget.patience")
        return self

    @property
    def tree(self) -> bool:
        return self.strategy != "greedy"

    @property
    def params(self) -> dict[str, float]:
        """The strategy's parameters, defaults filled in."""
        given = {"k": self.k, "epsilon": self.epsilon, "temperature": self.temperature}
        return {name: float(given[name] if given[name] is not None else default)
                for name, default in STRATEGIES[self.strategy].params.items()}

    @property
    def node_patience(self) -> int | None:
        return self.patience if self.patience is not None else (10 if self.tree else None)


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
    instructions_file: GoalPath | None = None
    """Or: a file (relative to the goal file) holding the instructions."""
    context: list[RepoPath] = []
    """Files (repo paths) always shown to the proposer."""
    editable: list[RepoGlob] = []
    """Globs the proposer may change; empty: everything that is not protected."""
    protected: list[RepoGlob] = []
    """Globs the proposer must never change. The goal file and the check's files are always protected."""
    check: Check
    target: Target = Target()
    budget: Budget = Budget()
    keep: Keep = Keep()
    holdout: Holdout | None = None
    guards: list[Guard] = []
    """Figures that must not get worse for a keep or a pass, besides the count of tests run."""
    env: Environment = Environment()
    sandbox: Annotated[Sandbox | None, BeforeValidator(_sandbox_switch), Field(json_schema_extra=_also_boolean)] = None
    """`true` (or a mapping of settings) runs the check and the proposer's commands inside bubblewrap;
    off by default."""
    parallel: int = Field(default=1, ge=1, le=64)
    """Candidates proposed and checked at the same time each round, each in its own worktree; the best
    one that beats the kept state is kept. 1: one attempt at a time."""
    search: Search = Search()
    executor: Executor = Executor()
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
            data = read_capped(path, MAX_INSTRUCTIONS_BYTES)
            if len(data) > MAX_INSTRUCTIONS_BYTES:
                raise Unreadable(f"{path} is more than {MAX_INSTRUCTIONS_BYTES >> 20} MiB",
                                 fix="keep the instructions short: the proposer reads them before every attempt")
            return data.decode("utf-8").strip()
        except Unreadable as exc:
            raise self.error(("instructions_file",), exc.why, fix=exc.fix) from None
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


def goal_json_schema() -> dict[str, Any]:
    """The JSON Schema of goal files, for editors (yaml-language-server) and `goalloop schema`."""
    rebuild_described()
    schema = Goal.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "goalloop goal file"
    return schema
