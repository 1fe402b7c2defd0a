"""The Claude proposer's agent loop: one attempt is one bounded tool-use conversation, with its budget stops
and its retries through an API outage. The package docstring (__init__.py) describes the whole proposer."""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anthropic
import tenacity

from goalloop.errors import BudgetExhausted, InfrastructureError
from goalloop.goal import ClaudeProposer as ClaudeConfig
from goalloop.goal import Goal, format_duration
from goalloop.ledger import AttemptRecord
from goalloop.proposers.base import Proposal, ProposalRequest
from goalloop.proposers.claude.pricing import PriceTable, Rates, TokenTally, _dollars, _today, _usage_fields
from goalloop.proposers.claude.tools import (
    BASH_TOOL,
    BASH_TOOL_NAME,
    EDITOR_TOOL,
    EDITOR_TOOL_NAME,
    FINISH_TOOL,
    FINISH_TOOL_NAME,
    ToolOutcome,
    Workbench,
    _tool_result,
    environment_without_secrets,
)
from goalloop.proposers.claude.transcript import TRANSCRIPT_FILE, Transcript, _append_note, log, read_notes

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

DESCRIPTION_LIMIT = 200
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
        bench = Workbench(request.worktree, request.rules, bash_env, self.config.bash_timeout, request.attempt_dir,
                          wrap=request.sandbox.wrap() if request.sandbox is not None else None)
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
                fix="add its rates to goalloop/proposers/claude/prices.json, or use a priced model",
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


def _seconds(text: str | None, default: float) -> float:
    try:
        return max(0.0, float(text)) if text else default
    except ValueError:
        return default
