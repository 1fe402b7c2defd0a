"""The proposer part of a goal file: one model per `proposer.kind`, and the union the goal holds."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from goalloop.goal.strict import StrictModel
from goalloop.goal.paths import RepoPath
from goalloop.goal.patterns import Regex, compiled
from goalloop.goal.values import Duration, Mistake, Money

DEFAULT_CLAUDE_MODEL = "claude-sonnet-5-5"


class CommandProposer(StrictModel):
    """An external agent CLI (Claude Code, Codex, Aider, a script) that edits the worktree in place."""

    kind: Literal["command"]
    run: str = Field(min_length=1)
    """Shell command run in the worktree; the prompt is in $GOALLOOP_PROMPT_FILE."""
    timeout: Duration = 1800.0
    """Longest one proposal may take; then it is killed and the attempt fails."""
    env: dict[str, str] = {}
    """Extra environment variables for the command."""


class AgentCLI(StrictModel):
    """What the agent CLI kinds (claude-code, codex, aider) share. See proposers/agents.py."""

    model: str | None = None
    """The model, passed as the CLI's --model; default: the CLI's own default."""
    program: str | None = None
    """The CLI's executable (a name on PATH or a path); default: claude, codex or aider on PATH."""
    args: list[str] = []
    """Extra arguments, appended to the command line the kind builds, for what it does not cover."""
    keys: list[str] = []
    """The variables holding its API key, passed to it (never to the check) by name; default: the ones
    the CLI reads (claude-code: ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN or CLAUDE_CODE_OAUTH_TOKEN; codex:
    CODEX_API_KEY or OPENAI_API_KEY; aider: OPENAI_API_KEY, ANTHROPIC_API_KEY, OPENROUTER_API_KEY and the
    other providers' keys). One of them must be set, except for Claude Code with CLAUDE_CODE_USE_BEDROCK,
    CLAUDE_CODE_USE_VERTEX or CLAUDE_CODE_USE_FOUNDRY set and Aider with an ollama/ model or a base_url."""
    base_url: str | None = None
    """The model API's endpoint (a proxy, a gateway, a local server); default: the CLI's own."""
    timeout: Duration = 1800.0
    """Longest one proposal may take; then it is killed and the attempt fails."""
    env: dict[str, str] = {}
    """Extra environment variables for the CLI."""


class ClaudeCodeProposer(AgentCLI):
    """Claude Code (`claude -p`): edits accepted, Bash allowed for the goal's check command only."""

    kind: Literal["claude-code"]
    allow: list[str] = []
    """More permission rules for --allowedTools, e.g. "Bash(pytest:*)" or "WebFetch"."""


class CodexProposer(AgentCLI):
    """OpenAI Codex (`codex exec`), in its own sandbox."""

    kind: Literal["codex"]
    sandbox: Literal["read-only", "workspace-write", "danger-full-access"] = "workspace-write"
    """Codex's sandbox for the commands it runs: workspace-write lets it edit the worktree and nothing else."""


class AiderProposer(AgentCLI):
    """Aider (`aider --message-file`): one message a proposal, its edits applied, no commits of its own."""

    kind: Literal["aider"]


class ScriptedStep(StrictModel):
    """One prepared change: file contents, a patch, or a deliberate failure."""

    description: str = ""
    files: dict[RepoPath, str | None] = {}
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

    file: RepoPath
    pattern: Regex
    """Regex whose group 1 is the value; must match exactly once in the file."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    int_: bool = Field(default=False, alias="int")
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParam:
        example = "pattern: 'LR = ([0-9.e-]+)'"
        if compiled(self.pattern).groups < 1:
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
    Union[CommandProposer, ClaudeCodeProposer, CodexProposer, AiderProposer, ScriptedProposer, ClaudeProposer,
          SearchProposer],
    Field(discriminator="kind"),
]
