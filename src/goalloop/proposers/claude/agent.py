"""The Claude proposer: one attempt is one bounded tool-use conversation with Claude through the Messages API.

Claude is given three client tools, all run here, inside the attempt's worktree:
  - `str_replace_based_edit_tool` (Anthropic's text editor, `text_editor_20250728`): view, create,
    str_replace, insert. It refuses, with an `is_error` tool result the model can correct, any path that
    resolves outside the worktree (`..`, absolute paths elsewhere, symlinks out), the holdout check's files
    (not even listed), any write under `.git`,
    and any write the goal forbids (a protected path, or one outside `editable`). Viewing a protected
    file is allowed: reading the tests is how a model learns what passes them.
  - `bash` (Anthropic's `bash_20250124`), unless `bash: false`: each command runs in a fresh /bin/sh in
    the worktree, in its own process group, killed whole at `bash_timeout`, with its output capped and
    an environment without secrets (variables whose names contain one of `secret_patterns`), plus the
    variables goalloop sets for anything run in the worktree (`ProposalRequest.env`). It is NOT a
    sandbox: a command can read and write anything the user can. Changes it makes to protected files are
    caught afterwards, when the loop rejects the attempt.
  - `finish`, goalloop's own: ends the attempt with a one-line description (the ledger's description) and
    optionally a lesson, appended to `run_dir/notes.md` and shown in every later prompt.

Prompt caching. The request is laid out so that the part that never changes comes first: the tools and the
system prompt (a breakpoint: the same for every attempt of every run with this config), then the first user
block, `Prompt.stable` (a breakpoint: the same while the context files do not change). The part that changes
each attempt (the notes, then `Prompt.recent`) follows. Within an attempt the latest user message and the
one before it carry breakpoints too, so each turn reads the previous turn's prefix: the 4 breakpoints the API
allows.

Cost and budgets. Every reply's `usage` is priced from prices.json (a dated table, USD per million tokens).
A model missing from it is warned about and its cost is None (the dollar budget cannot be enforced for it).
Before every call the proposer checks that the run's spend, plus this attempt's, plus a worst case for the
call (its input priced as a cache write, all of `max_tokens` as output) stays within the token and dollar
budgets; otherwise it raises BudgetExhausted with what the attempt spent. With `parallel: N` the N
conversations of a round run at once (propose is thread-safe): each also counts what the round's other
conversations have spent so far.

Faults. The SDK retries a single 429/5xx/529 or dropped connection itself. Beyond that the API is treated
as down: the call is retried with exponential backoff (first wait `$GOALLOOP_OUTAGE_BACKOFF` seconds,
default 5, doubling to 5 minutes) for up to `outage_wait`, each wait logged to stderr and to the
transcript; then InfrastructureError (exit 3, the run is resumable). 400/401/403/404 raise
InfrastructureError at once, saying what to fix. A reply that cannot be read, a refusal, or a reply
without tool use (when nothing was changed) is a failed Proposal; running out of `max_turns` returns what
was changed, with a description that says so. The transcript of each attempt is `attempts/NNNN/claude.jsonl`.

Not covered: streaming (so `max_tokens` is capped at what the SDK allows without it), the Batch API,
1-hour cache writes, Haiku 5.5's prompt-length price tiers, and server tools (web search, code execution).
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import anthropic
import structlog
import tenacity

from goalloop.check import output_excerpt, run_process
from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.goal import ClaudeProposer as ClaudeConfig
from goalloop.goal import Goal, format_duration
from goalloop.ledger import AttemptRecord
from goalloop.proposers.base import Proposal, ProposalRequest
from goalloop.workspace import PathRules

EDITOR_TOOL_NAME = "str_replace_based_edit_tool"
BASH_TOOL_NAME = "bash"
FINISH_TOOL_NAME = "finish"
EDITOR_TOOL = {"type": "text_editor_20250728", "name": EDITOR_TOOL_NAME}
BASH_TOOL = {"type": "bash_20250124", "name": BASH_TOOL_NAME}
FINISH_TOOL = {
    "name": FINISH_TOOL_NAME,
    "description": (
        "End this attempt. Call it once your change is complete (or when you decide to change nothing). "
        "goalloop then commits your change and runs the check itself."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {
                "type": "string",
                "description": "One line: what you changed and why. It becomes the attempt's record.",
            },
            "lesson": {
                "type": "string",
                "description": "Optional, one sentence worth knowing in later attempts (shown in every later prompt).",
            },
        },
        "required": ["description"],
    },
}

SYSTEM_PROMPT = """\
You are the proposer in goalloop, an automatic improvement loop. Each attempt you make one focused change to \
the repository in your working directory; goalloop then commits it, runs the objective check and keeps the \
change only if the check improves.

Tools:
- {editor}: view and edit files. Paths are relative to the repository root (for example src/app.py). Paths \
outside the repository and files you may not change are refused.
{bash_line}- {finish}: call it when your change is complete, with a one-line description of what you changed and \
why. Add a lesson if you learned something later attempts should know.

Work in small steps, look before you edit, and finish within {max_turns} turns."""
BASH_PROMPT_LINE = (
    "- {bash}: run a shell command in the repository root (each command runs in a fresh shell; "
    "time limit {timeout}; long output is cut).\n"
)

TRANSCRIPT_FILE = "claude.jsonl"
NOTES_FILE = "notes.md"
NOTES_SHOWN = 30
DESCRIPTION_LIMIT = 200
VIEW_LIMIT_CHARS = 40_000
LISTING_LIMIT = 400
BASH_OUTPUT_LIMIT = 12_000
SDK_RETRIES = 2
BACKOFF_ENV = "GOALLOOP_OUTAGE_BACKOFF"
DEFAULT_FIRST_BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0
OUTAGE_STATUSES = {408, 409, 429}
CHARS_PER_TOKEN_ESTIMATE = 3
TOOL_DEFINITION_TOKENS = 1_500
"""Worst case for what the API adds for the editor and bash tools (their hidden schemas and instructions)."""
RETIREMENT_WARNING_DAYS = 60
NON_STREAMING_MAX_TOKENS = 21_333
"""The SDK refuses a non-streaming request whose max_tokens could take more than 10 minutes to generate."""
NO_CREDENTIALS_FIX = (
    "set ANTHROPIC_API_KEY to an API key from https://console.anthropic.com/settings/keys "
    "in the environment of `goalloop run`"
)
EPHEMERAL = {"type": "ephemeral"}

log = structlog.wrap_logger(
    structlog.PrintLogger(sys.stderr),
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%H:%M:%S"),
        structlog.dev.ConsoleRenderer(colors=False),
    ],
)


# -- prices -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, tally: TokenTally) -> float:
        return (
            tally.input * self.input
            + tally.output * self.output
            + tally.cache_write * self.cache_write
            + tally.cache_read * self.cache_read
        ) / 1_000_000

    def worst_case(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * max(self.input, self.cache_write) + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    rates: list[tuple[date | None, Rates]]
    retires: date | None = None
    replacement: str | None = None

    def rates_on(self, day: date) -> Rates | None:
        in_force = [(since, rates) for since, rates in self.rates if since is None or since <= day]
        return max(in_force, key=lambda pair: pair[0] or date.min)[1] if in_force else None


class PriceTable:
    """prices.json: per-model rates, dated, with aliases (snapshot ids) and retirement dates."""

    def __init__(self, models: dict[str, ModelPrice], aliases: dict[str, str], checked: str) -> None:
        self.models, self.aliases, self.checked = models, aliases, checked

    @classmethod
    def load(cls) -> PriceTable:
        raw = json.loads(resources.files("goalloop.proposers").joinpath("prices.json").read_text(encoding="utf-8"))
        models, aliases = {}, {}
        for name, entry in raw["models"].items():
            models[name] = ModelPrice(
                rates=[
                    (_day(period["since"]),
                     Rates(period["input"], period["output"], period["cache_write"], period["cache_read"]))
                    for period in entry["rates"]
                ],
                retires=_day(entry.get("retires")),
                replacement=entry.get("replacement"),
            )
            aliases.update({alias: name for alias in entry.get("aliases", [])})
        return cls(models, aliases, raw["checked"])

    def lookup(self, model: str) -> ModelPrice | None:
        return self.models.get(self.aliases.get(model, model))

    def rates(self, model: str, day: date) -> Rates | None:
        price = self.lookup(model)
        return price.rates_on(day) if price else None

    def current_models(self, today: date) -> list[str]:
        return [name for name, price in self.models.items() if price.retires is None or price.retires > today]


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _today() -> date:
    return datetime.now(timezone.utc).date()


@dataclass
class TokenTally:
    """Tokens an attempt used, by kind, as the API reported them."""

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0

    def add(self, usage: Any) -> None:
        self.input += getattr(usage, "input_tokens", 0) or 0
        self.output += getattr(usage, "output_tokens", 0) or 0
        self.cache_write += getattr(usage, "cache_creation_input_tokens", 0) or 0
        self.cache_read += getattr(usage, "cache_read_input_tokens", 0) or 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read


# -- the tools --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolOutcome:
    text: str
    is_error: bool = False


class ToolRefused(Exception):
    """A tool call that was not carried out; its message goes back to the model as an is_error result."""


class Workbench:
    """Runs the editor and bash tools inside one worktree, under the goal's path rules."""

    def __init__(self, worktree: Path, rules: PathRules, env: dict[str, str] | None, bash_timeout: float,
                 log_dir: Path) -> None:
        self.root = worktree.resolve()
        self.rules = rules
        self.bash_env = env
        self.bash_timeout = bash_timeout
        self.log_dir = log_dir
        self.touched = False
        """Whether a file was written or a command run: an attempt that ends early may still hold a change."""
        self._commands_run = 0

    def run(self, name: str, tool_input: Any) -> ToolOutcome:
        try:
            if not isinstance(tool_input, dict):
                raise ToolRefused("the tool input must be an object")
            if name == EDITOR_TOOL_NAME:
                return self.edit(tool_input)
            if name == BASH_TOOL_NAME and self.bash_env is not None:
                return self.bash(tool_input)
            raise ToolRefused(f"there is no tool named {name!r} here")
        except ToolRefused as refusal:
            return ToolOutcome(str(refusal), is_error=True)
        except (OSError, ValueError) as error:
            return ToolOutcome(f"{name} failed: {error}", is_error=True)

    # -- the editor -------------------------------------------------------------------------------------
    def edit(self, args: dict[str, Any]) -> ToolOutcome:
        command, path = args.get("command"), args.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ToolRefused("give a path, relative to the repository root")
        if command == "view":
            return self._view(path, args.get("view_range"))
        if command not in ("create", "str_replace", "insert"):
            raise ToolRefused(f"unknown command {command!r}; use view, create, str_replace or insert")
        target, rel = self._resolve(path, writing=True)
        if command == "create":
            outcome = self._create(target, rel, args.get("file_text"))
        elif command == "str_replace":
            outcome = self._str_replace(target, rel, args.get("old_str"), args.get("new_str", ""))
        else:
            outcome = self._insert(target, rel, args.get("insert_line"), args.get("insert_text", args.get("new_str")))
        self.touched = True
        return outcome

    def _resolve(self, path: str, *, writing: bool) -> tuple[Path, str]:
        """The real path and its repo-relative form, or a refusal saying why."""
        candidate = Path(path.strip())
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        try:
            rel = resolved.relative_to(self.root).as_posix()
        except ValueError:
            raise ToolRefused(
                f"{path} is outside the repository (it resolves to {resolved}); "
                "use a path inside it, relative to the repository root"
            ) from None
        if rel != "." and self.rules.is_hidden(rel):
            raise ToolRefused(f"{path} is not available to you; work with the other files")
        if writing:
            if rel == "." or rel.split("/")[0] == ".git":
                raise ToolRefused(f"{path} is git's own data; change the repository's files instead")
            violations = self.rules.violations([rel])
            if violations:
                raise ToolRefused(
                    f"{path} may not be changed: {'; '.join(violations)}. "
                    "Change only the files the goal allows (see 'You may change' and 'Never change')"
                )
        return resolved, rel

    def _view(self, path: str, view_range: Any) -> ToolOutcome:
        target, rel = self._resolve(path, writing=False)
        if target.is_dir():
            return ToolOutcome(self._listing(target, rel))
        lines = _read_text(target, rel).splitlines()
        first, last = 1, len(lines)
        if view_range is not None:
            if not (isinstance(view_range, list) and len(view_range) == 2
                    and all(isinstance(n, int) for n in view_range)):
                raise ToolRefused("view_range is [first_line, last_line], 1-based; last_line -1 means the end")
            first, last = view_range[0], (len(lines) if view_range[1] == -1 else view_range[1])
            if not 1 <= first <= max(last, 1) or last > len(lines):
                raise ToolRefused(f"view_range {view_range} is outside {rel}, which has {len(lines)} lines")
        numbered = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines[first - 1:last], start=first))
        if len(numbered) > VIEW_LIMIT_CHARS:
            numbered = numbered[:VIEW_LIMIT_CHARS] + "\n[... cut; view a smaller view_range ...]"
        return ToolOutcome(numbered or f"({rel} is empty)")

    def _listing(self, directory: Path, rel: str) -> str:
        entries: list[str] = []

        def visible(folder: Path) -> list[Path]:
            return sorted(
                child for child in folder.iterdir()
                if not child.name.startswith(".") and not self.rules.is_hidden(child.relative_to(self.root).as_posix())
            )

        for child in visible(directory):
            inner = [child, *(visible(child) if child.is_dir() and not child.is_symlink() else [])]
            entries += [entry.relative_to(directory).as_posix() + ("/" if entry.is_dir() else "") for entry in inner]
            if len(entries) >= LISTING_LIMIT:
                entries = entries[:LISTING_LIMIT] + ["[... more entries not shown ...]"]
                break
        return f"Files in {rel} (two levels deep, hidden ones left out):\n" + "\n".join(entries)

    def _create(self, target: Path, rel: str, file_text: Any) -> ToolOutcome:
        if not isinstance(file_text, str):
            raise ToolRefused("create needs file_text, the whole content of the file")
        if target.is_dir():
            raise ToolRefused(f"{rel} is a directory")
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file_text.encode("utf-8"))
        return ToolOutcome(f"{'overwrote' if existed else 'created'} {rel}")

    def _str_replace(self, target: Path, rel: str, old: Any, new: Any) -> ToolOutcome:
        if not isinstance(old, str) or not old:
            raise ToolRefused("str_replace needs old_str, the exact text to replace")
        if not isinstance(new, str):
            raise ToolRefused("new_str must be text (empty to delete old_str)")
        text = _read_text(target, rel)
        count = text.count(old)
        if count == 0:
            raise ToolRefused(
                f"old_str was not found in {rel}; view the file and copy the text exactly, whitespace included"
            )
        if count > 1:
            raise ToolRefused(f"old_str appears {count} times in {rel}; include more surrounding lines so it is unique")
        start_line = text[: text.index(old)].count("\n") + 1
        replaced_lines = old.count("\n") + 1
        target.write_bytes(text.replace(old, new, 1).encode("utf-8"))
        return ToolOutcome(f"edited {rel}: replaced {replaced_lines} line(s) from line {start_line}")

    def _insert(self, target: Path, rel: str, line: Any, new_text: Any) -> ToolOutcome:
        if not isinstance(new_text, str):
            raise ToolRefused("insert needs insert_text, the text to insert")
        lines = _read_text(target, rel).splitlines(keepends=True)
        if not isinstance(line, int) or not 0 <= line <= len(lines):
            raise ToolRefused(f"insert_line must be a line number from 0 (the top) to {len(lines)} (the end) of {rel}")
        if line and not lines[line - 1].endswith("\n"):
            lines[line - 1] += "\n"
        inserted = new_text if new_text.endswith("\n") else new_text + "\n"
        lines.insert(line, inserted)
        target.write_bytes("".join(lines).encode("utf-8"))
        return ToolOutcome(f"inserted {len(inserted.splitlines())} line(s) after line {line} of {rel}")

    # -- bash -------------------------------------------------------------------------------------------
    def bash(self, args: dict[str, Any]) -> ToolOutcome:
        if args.get("restart"):
            return ToolOutcome("restarted (every command runs in a fresh shell anyway)")
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolRefused("give a command to run")
        assert self.bash_env is not None
        self._commands_run += 1
        self.touched = True
        stem = self.log_dir / "bash" / f"{self._commands_run:03d}"
        result = run_process(
            command, cwd=self.root, env=self.bash_env, timeout=self.bash_timeout,
            stdout_path=stem.with_suffix(".stdout.log"), stderr_path=stem.with_suffix(".stderr.log"),
        )
        output = output_excerpt(result.stdout_path, result.stderr_path, BASH_OUTPUT_LIMIT) or "(no output)"
        if result.timed_out:
            limit = format_duration(self.bash_timeout)
            return ToolOutcome(f"{output}\n[timed out after {limit}; the command and its children were killed]",
                               is_error=True)
        return ToolOutcome(f"{output}\n[exit code {result.exit_code}]")


def _read_text(target: Path, rel: str) -> str:
    if not target.is_file():
        raise ToolRefused(f"{rel} does not exist" if not target.exists() else f"{rel} is not a regular file")
    try:
        return target.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ToolRefused(f"{rel} is not UTF-8 text; inspect it with bash instead") from None


def environment_without_secrets(env: dict[str, str], secret_patterns: list[str]) -> dict[str, str]:
    """`env` minus every variable whose name contains one of `secret_patterns` (case-insensitive), with pagers off."""
    patterns = [p.upper() for p in secret_patterns if p]
    kept = {name: value for name, value in env.items() if not any(p in name.upper() for p in patterns)}
    kept.update(PAGER="cat", GIT_PAGER="cat", GIT_TERMINAL_PROMPT="0")
    return kept


# -- the record of an attempt -----------------------------------------------------------------------------
class Transcript:
    """attempts/NNNN/claude.jsonl: the conversation, each reply's usage and cost, waits and warnings."""

    def __init__(self, path: Path) -> None:
        self._stream = open(path, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._stream.write(json.dumps({"kind": kind, "at": at, **fields}, default=str) + "\n")
        self._stream.flush()

    def warn(self, event: str, **fields: Any) -> None:
        """Tell the person at the terminal (stderr) and keep it in the transcript."""
        log.warning(event, **fields)
        self.write(event, **fields)

    def close(self) -> None:
        self._stream.close()


def read_notes(run_dir: Path) -> str:
    try:
        lines = (run_dir / NOTES_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-NOTES_SHOWN:] if line.strip())


_NOTES_LOCK = threading.Lock()


def _append_note(run_dir: Path, iteration: int, lesson: str) -> None:
    with _NOTES_LOCK, open(run_dir / NOTES_FILE, "a", encoding="utf-8") as notes:
        notes.write(f"- attempt {iteration}: {lesson}\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:DESCRIPTION_LIMIT]


# -- faults -----------------------------------------------------------------------------------------------
class _UnreadableReply(Exception):
    """The API answered, but not with a message goalloop can read."""


class _ConversationTooLong(Exception):
    """The conversation no longer fits the model's context window."""


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, anthropic.APIConnectionError):
        return True
    return isinstance(error, anthropic.APIStatusError) and (
        error.status_code in OUTAGE_STATUSES or error.status_code >= 500
    )


def _api_message(error: BaseException) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('type', 'error')}: {body['error'].get('message', '')}"
    return str(error) or type(error).__name__


def _describe(error: BaseException) -> str:
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code} ({_api_message(error)})"
    if isinstance(error, anthropic.APITimeoutError):
        return "the request timed out"
    if isinstance(error, anthropic.APIConnectionError):
        return f"no connection ({error.__cause__ or error})"
    return _api_message(error)


# -- the proposer -----------------------------------------------------------------------------------------
@dataclass
class _Conversation:
    messages: list[dict[str, Any]]
    tally: TokenTally = field(default_factory=TokenTally)
    last_text: str = ""


class ClaudeProposer:
    def __init__(self, config: ClaudeConfig, goal: Goal, base_env: dict[str, str]) -> None:
        self.config = config
        self.base_env = dict(base_env)
        self.base_url = config.base_url or base_env.get("ANTHROPIC_BASE_URL") or None
        self.prices = PriceTable.load()
        self.first_backoff = _seconds(base_env.get(BACKOFF_ENV), DEFAULT_FIRST_BACKOFF_SECONDS)
        self.bash_env = environment_without_secrets(self.base_env, config.secret_patterns) if config.bash else None
        self.tools = [EDITOR_TOOL, *([BASH_TOOL] if config.bash else []), FINISH_TOOL]
        bash_line = BASH_PROMPT_LINE.format(bash=BASH_TOOL_NAME, timeout=format_duration(config.bash_timeout))
        self.system_prompt = SYSTEM_PROMPT.format(
            editor=EDITOR_TOOL_NAME, finish=FINISH_TOOL_NAME, max_turns=config.max_turns,
            bash_line=bash_line if config.bash else "",
        )
        self._client: anthropic.Anthropic | None = None
        self._lock = threading.Lock()
        """A parallel round runs one conversation a slot in threads: guards the client and the spend below."""
        self._spent_in_round: dict[int, tuple[int, float]] = {}
        """Iteration -> (tokens, usd) spent so far by each conversation of the current round."""
        _check_limits(config, goal)
        self._warn_about_model(goal)

    # -- the protocol -----------------------------------------------------------------------------------
    def propose(self, request: ProposalRequest) -> Proposal:
        transcript = Transcript(request.attempt_dir / TRANSCRIPT_FILE)
        try:
            return self._converse(request, transcript)
        finally:
            transcript.close()

    def observe(self, record: AttemptRecord) -> None:
        pass

    # -- one attempt ------------------------------------------------------------------------------------
    def _converse(self, request: ProposalRequest, transcript: Transcript) -> Proposal:
        rates = self.prices.rates(self.config.model, _today())
        if rates is None:
            transcript.write("model_not_priced", model=self.config.model, prices_checked=self.prices.checked)
        bash_env = {**self.bash_env, **request.env} if self.bash_env is not None else None
        bench = Workbench(request.worktree, request.rules, bash_env, self.config.bash_timeout, request.attempt_dir)
        opening = self._opening_message(request)
        talk = _Conversation(messages=[opening])
        transcript.write(
            "setup", model=self.config.model, max_tokens=self.config.max_tokens, max_turns=self.config.max_turns,
            base_url=self.base_url, tools=[tool["name"] for tool in self.tools], system=self.system_prompt,
        )
        transcript.write("message", **opening)

        def outcome(description: str = "", failed: str | None = None) -> Proposal:
            cost = rates.cost(talk.tally) if rates else None
            transcript.write("result", description=description, failed=failed, cost_usd=cost,
                             tokens=talk.tally.tokens)
            return Proposal(description=description, failed=failed, cost_usd=cost, tokens=talk.tally.tokens)

        for turn in range(1, self.config.max_turns + 1):
            params = self._request(talk.messages)
            self._check_budget(request, talk.tally, rates, params, transcript)
            try:
                reply = self._send(params, transcript)
                content = _content_of(reply)
            except InfrastructureError as stop:  # the run stops here; what this attempt spent still counts
                stop.cost_usd, stop.tokens = (rates.cost(talk.tally) if rates else None), talk.tally.tokens
                raise
            except _UnreadableReply as problem:
                transcript.write("unreadable_reply", problem=str(problem))
                return outcome(failed=f"Claude's reply could not be read: {problem}")
            except _ConversationTooLong as problem:
                why = "the conversation outgrew the context window"
                return outcome(self._unfinished(talk, bench, why), None if bench.touched else f"{why}: {problem}")
            talk.tally.add(reply.usage)
            self._note_spend(request, talk.tally, rates)
            transcript.write("usage", turn=turn, stop_reason=reply.stop_reason, usage=_usage_fields(reply),
                             cost_usd=rates.cost(talk.tally) if rates else None)
            talk.messages.append({"role": "assistant", "content": content})
            transcript.write("message", role="assistant", content=content)
            said = " ".join(block.get("text", "") for block in content if block.get("type") == "text")
            talk.last_text = _one_line(said) or talk.last_text

            if reply.stop_reason == "refusal":
                return outcome(failed=f"Claude declined: {talk.last_text or 'stop_reason refusal'}")
            tool_uses = [block for block in content if block.get("type") == "tool_use"]
            if not tool_uses and reply.stop_reason == "max_tokens":
                self._append(talk, transcript, [{"type": "text", "text": (
                    f"Your reply was cut off at max_tokens ({self.config.max_tokens}). Continue in smaller steps "
                    f"and call {FINISH_TOOL_NAME} when your change is complete.")}])
                continue
            if not tool_uses:
                if bench.touched:
                    return outcome(self._unfinished(talk, bench, f"Claude stopped without calling {FINISH_TOOL_NAME}"))
                return outcome(failed=f"Claude replied without using a tool: {talk.last_text or '(empty reply)'}")
            results, finished = self._run_tools(tool_uses, bench)
            if finished is None:
                self._append(talk, transcript, results)
                continue
            transcript.write("message", role="user", content=results)
            lesson = _one_line(str(finished.get("lesson") or ""))
            if lesson:
                _append_note(request.run_dir, request.iteration, lesson)
            return outcome(_one_line(str(finished.get("description") or "")) or "(Claude gave no description)")
        why = f"Claude used all {self.config.max_turns} turns without calling {FINISH_TOOL_NAME}"
        return outcome(self._unfinished(talk, bench, why))

    @staticmethod
    def _run_tools(tool_uses: list[dict[str, Any]], bench: Workbench
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The tool_result of every call, in order, and the finish call's input if there was one."""
        results, finished = [], None
        for use in tool_uses:
            if use.get("name") == FINISH_TOOL_NAME:
                finished = use["input"] if isinstance(use.get("input"), dict) else {}
                results.append(_tool_result(use, ToolOutcome("attempt finished")))
            else:
                results.append(_tool_result(use, bench.run(str(use.get("name")), use.get("input"))))
        return results, finished

    @staticmethod
    def _append(talk: _Conversation, transcript: Transcript, content: list[dict[str, Any]]) -> None:
        talk.messages.append({"role": "user", "content": content})
        transcript.write("message", role="user", content=content)

    @staticmethod
    def _unfinished(talk: _Conversation, bench: Workbench, why: str) -> str:
        what = talk.last_text or ("unfinished change" if bench.touched else "no change")
        return f"{what[:DESCRIPTION_LIMIT - len(why) - 3]} ({why})"

    def _opening_message(self, request: ProposalRequest) -> dict[str, Any]:
        notes = read_notes(request.run_dir)
        varying = request.prompt.recent.strip() or "Make your next change."
        if notes:
            varying = f"# Notes from earlier attempts\n{notes}\n\n{varying}"
        return {"role": "user", "content": [
            {"type": "text", "text": request.prompt.stable.strip() or "(no goal text)"},
            {"type": "text", "text": varying},
        ]}

    def _request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The Messages API call for this turn, with its cache breakpoints."""
        params: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "system": [{"type": "text", "text": self.system_prompt, "cache_control": EPHEMERAL}],
            "tools": self.tools,
            "messages": with_cache_breakpoints(messages),
        }
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self.config.thinking is not None:
            params["thinking"] = {"type": "enabled", "budget_tokens": self.config.thinking}
        return params

    # -- budgets ----------------------------------------------------------------------------------------
    def _check_budget(self, request: ProposalRequest, tally: TokenTally, rates: Rates | None,
                      params: dict[str, Any], transcript: Transcript) -> None:
        """Raise BudgetExhausted if the next call, at its worst, could pass the token or dollar budget."""
        budget = request.budget
        next_input = len(json.dumps(params)) // CHARS_PER_TOKEN_ESTIMATE + TOOL_DEFINITION_TOKENS
        next_output = int(params["max_tokens"])
        reason = None
        others_tokens, others_usd = self._others_spend(request)
        if budget.tokens is not None:
            spent = request.spend.tokens + others_tokens + tally.tokens
            if spent + next_input + next_output > budget.tokens:
                reason = (f"token budget: {spent:,} of {budget.tokens:,} tokens spent, and the next Claude call "
                          f"could use up to {next_input + next_output:,} more")
        if reason is None and budget.usd is not None and rates is not None:
            spent_usd = request.spend.usd + others_usd + rates.cost(tally)
            next_cost = rates.worst_case(next_input, next_output)
            if spent_usd + next_cost > budget.usd:
                reason = (f"dollar budget: {_dollars(spent_usd)} of {_dollars(budget.usd)} spent, and the next "
                          f"Claude call could cost up to {_dollars(next_cost)} more")
        if reason:
            transcript.write("budget_stop", reason=reason)
            raise BudgetExhausted(reason, cost_usd=rates.cost(tally) if rates else 0.0, tokens=tally.tokens)

    def _note_spend(self, request: ProposalRequest, tally: TokenTally, rates: Rates | None) -> None:
        with self._lock:
            first = request.iteration - request.slot
            for done in [n for n in self._spent_in_round if n < first]:  # an earlier round's: counted in spend
                del self._spent_in_round[done]
            self._spent_in_round[request.iteration] = (tally.tokens, rates.cost(tally) if rates else 0.0)

    def _others_spend(self, request: ProposalRequest) -> tuple[int, float]:
        """What the other conversations of this parallel round have spent so far (not in request.spend)."""
        first = request.iteration - request.slot
        with self._lock:
            others = [spent for n, spent in self._spent_in_round.items()
                      if first <= n < first + request.round_size and n != request.iteration]
        return sum(t for t, _ in others), sum(u for _, u in others)

    # -- the API ----------------------------------------------------------------------------------------
    def _send(self, params: dict[str, Any], transcript: Transcript) -> Any:
        """One Messages API call, waiting out an outage for up to outage_wait."""
        client = self._client_or_raise()
        outage_wait = self.config.outage_wait

        def announce(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            transcript.warn(
                "claude_api_unavailable_waiting",
                problem=_describe(error) if error else "unknown",
                retry_in=f"{state.upcoming_sleep:.1f}s",
                unavailable_for=f"{state.seconds_since_start:.1f}s",
                gives_up_after=format_duration(outage_wait),
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_outage),
            wait=tenacity.wait_exponential(multiplier=self.first_backoff, max=MAX_BACKOFF_SECONDS),
            stop=tenacity.stop_before_delay(outage_wait),
            before_sleep=announce,
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(client.messages.create, **params)
        except anthropic.APIResponseValidationError as error:
            raise _UnreadableReply(_api_message(error)) from None
        except (anthropic.APIConnectionError, anthropic.APIStatusError) as error:
            if _is_outage(error):
                transcript.warn("claude_api_gave_up", problem=_describe(error))
                raise InfrastructureError(
                    f"the Claude API has been unavailable for {format_duration(time.monotonic() - started)} "
                    f"(last: {_describe(error)})",
                    fix="resume the run with `goalloop resume` once the API answers again (https://status.claude.com); "
                    "proposer.outage_wait sets how long to wait before stopping",
                ) from None
            raise self._fatal(error) from None
        except json.JSONDecodeError as error:
            raise _UnreadableReply(f"the body is not JSON ({error})") from None

    def _fatal(self, error: anthropic.APIStatusError) -> Exception:
        message, status, model = _api_message(error), error.status_code, self.config.model
        if status == 413 or (status == 400 and "prompt is too long" in message.lower()):
            return _ConversationTooLong(message)
        if status == 401:
            return InfrastructureError(f"the Claude API refused the credentials (HTTP 401: {message})",
                                       fix=NO_CREDENTIALS_FIX)
        if status == 403:
            return InfrastructureError(
                f"the Claude API key may not use model '{model}' (HTTP 403: {message})",
                fix="use a key from a workspace allowed to use this model, or set proposer.model to another model",
            )
        if status == 404:
            endpoint = f"; or check that {self.base_url} is the Messages API" if self.base_url else ""
            return InfrastructureError(
                f"the Claude API does not know model '{model}' (HTTP 404: {message})",
                fix=f"set proposer.model to one of: {', '.join(self.prices.current_models(_today()))}{endpoint}",
            )
        if status == 400:
            return InfrastructureError(
                f"the Claude API rejected the request (HTTP 400: {message})",
                fix="check proposer.model, max_tokens, thinking and temperature in the goal file "
                "(newer models refuse a temperature and manual thinking budgets)",
            )
        return InfrastructureError(
            f"the Claude API answered HTTP {status}: {message}",
            fix="read the message above; the run can be resumed with `goalloop resume` once it is fixed",
        )

    def _client_or_raise(self) -> anthropic.Anthropic:
        with self._lock:
            return self._make_client()

    def _make_client(self) -> anthropic.Anthropic:
        if self._client is None:
            credentials = {}
            if self.base_env.get("ANTHROPIC_API_KEY"):
                credentials["api_key"] = self.base_env["ANTHROPIC_API_KEY"]
            elif self.base_env.get("ANTHROPIC_AUTH_TOKEN"):
                credentials["auth_token"] = self.base_env["ANTHROPIC_AUTH_TOKEN"]
            try:
                client = anthropic.Anthropic(base_url=self.base_url, max_retries=SDK_RETRIES, **credentials)
            except (anthropic.AnthropicError, ValueError) as error:
                raise InfrastructureError(f"the Claude API client could not start: {error}",
                                          fix=NO_CREDENTIALS_FIX) from None
            if client.api_key is None and client.auth_token is None and getattr(client, "credentials", None) is None:
                raise InfrastructureError("no credentials for the Claude API were found", fix=NO_CREDENTIALS_FIX)
            self._client = client
        return self._client

    def _warn_about_model(self, goal: Goal) -> None:
        model, today = self.config.model, _today()
        price = self.prices.lookup(model)
        if price is None or price.rates_on(today) is None:
            log.warning(
                "model_not_priced", model=model, prices_checked=self.prices.checked,
                consequence="its cost is recorded as unknown"
                + ("; the dollar budget cannot be enforced" if goal.budget.usd is not None else ""),
                fix="add its rates to goalloop/proposers/prices.json, or use a priced model",
            )
        elif price.retires is not None and price.retires <= today + timedelta(days=RETIREMENT_WARNING_DAYS):
            tense = "retired" if price.retires <= today else "retires"
            log.warning(
                "model_retiring", model=model, **{tense: price.retires.isoformat()},
                fix=f"set proposer.model: {price.replacement}" if price.replacement else "choose a current model",
            )


def with_cache_breakpoints(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `messages` with breakpoints on the stable block and on the last two user messages."""
    marked = copy.deepcopy(messages)
    marked[0]["content"][0]["cache_control"] = EPHEMERAL
    for index in (len(marked) - 1, len(marked) - 3):
        if index >= 0 and marked[index]["role"] == "user":
            marked[index]["content"][-1]["cache_control"] = EPHEMERAL
    return marked


def _check_limits(config: ClaudeConfig, goal: Goal) -> None:
    if config.max_tokens > NON_STREAMING_MAX_TOKENS:
        raise goal.error(
            ("proposer", "max_tokens"), f"{config.max_tokens:,} is more than goalloop can ask for without streaming",
            fix=f"use at most {NON_STREAMING_MAX_TOKENS:,}",
        )
    if config.thinking is not None and config.thinking >= config.max_tokens:
        raise goal.error(
            ("proposer", "thinking"), f"the thinking budget ({config.thinking:,}) must be less than max_tokens "
            f"({config.max_tokens:,})", fix="raise max_tokens or lower thinking",
        )


def _content_of(reply: Any) -> list[dict[str, Any]]:
    content = getattr(reply, "content", None)
    if not isinstance(content, list) or getattr(reply, "usage", None) is None:
        raise _UnreadableReply("it has no content or no usage")
    blocks = [b if isinstance(b, dict) else b.model_dump(mode="json", exclude_none=True) for b in content]
    if any(not isinstance(b.get("type"), str) for b in blocks):
        raise _UnreadableReply("a content block has no type")
    if any(b["type"] == "tool_use" and not isinstance(b.get("id"), str) for b in blocks):
        raise _UnreadableReply("a tool_use block has no id")
    return blocks


def _tool_result(use: dict[str, Any], outcome: ToolOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use["id"], "content": outcome.text}
    if outcome.is_error:
        result["is_error"] = True
    return result


def _usage_fields(reply: Any) -> dict[str, int]:
    usage = reply.usage
    names = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {name: getattr(usage, name, 0) or 0 for name in names}


def _dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.4f}"


def _seconds(text: str | None, default: float) -> float:
    try:
        return max(0.0, float(text)) if text else default
    except ValueError:
        return default
