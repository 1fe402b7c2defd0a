"""A loopback server that speaks enough of the Anthropic Messages API for the real `anthropic` client.

Run it in a thread, point `ANTHROPIC_BASE_URL` at `server.url`, give any `ANTHROPIC_API_KEY`, and the
SDK talks to it over HTTP exactly as it would to the real API. Each `POST /v1/messages` takes the next
item of the script:
  - a `Reply` (an assistant message; build its blocks with `tool_use`, `edit`, `bash`, `finish`, `text`),
  - a `Fault` (an HTTP error status, a dropped connection, or a body that is not JSON),
  - or a callable that is given the request body and returns one of those (for open-ended runs).
Every request body is recorded in `requests` (and its headers in `headers`) so tests can assert what
was sent; every usage reported is in `usages`. When the script runs out the server answers 400
"loopback script exhausted", which the proposer turns into a clear error.

A request with `"stream": true` (the anthropic SDK's streaming, and every call Claude Code makes) gets the
same reply as server-sent events: message_start, one content block at a time (text_delta, or the tool
input as input_json_delta chunks), message_delta with the stop reason and usage, message_stop; sent with
chunked transfer encoding. A `Fault(status=200, mid_stream=True)` sends message_start and then an
`error` event, as the real API does when it is overloaded part way. `side` answers requests without
consuming the script (an agent CLI's own side calls: titles, summaries), `HEAD /` answers 200 (a
connectivity probe), `POST /v1/messages/count_tokens` counts by the rule below, `GET /v1/models` lists
the models asked for so far. Every method and path is recorded in `paths`.

Usage is computed, not invented. Tokens are counted by a fixed rule: each block (a tool definition, a
system block, a message content block) serialised as canonical JSON without its `cache_control`, one
token per four characters. Blocks are taken in the order the real API caches them: tools, system,
messages. A prefix ending at a `cache_control` breakpoint is written to the cache; a later request whose
blocks start with a cached prefix reads it (`cache_read_input_tokens` = that prefix's tokens, the longest
one, ending at or before the request's last breakpoint; a request without breakpoints reads nothing).
Tokens from the end of the read prefix to the request's last breakpoint are a cache write
(`cache_creation_input_tokens`); the rest is `input_tokens`. The cache is per model.

Not covered: the 1024-token minimum cacheable prefix, cache expiry (5 minutes), token counts that match
the real tokenizer, and any endpoint not named above.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Union

from loopback_http import EXHAUSTED, EventHandler, ScriptedServer

EDITOR = "str_replace_based_edit_tool"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
CHARS_PER_TOKEN = 4

_tool_ids = itertools.count(1)


@dataclass
class Reply:
    """An assistant message. `stop_reason` defaults to tool_use when it holds a tool_use block."""

    content: list[dict[str, Any]]
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        if self.stop_reason is None:
            uses_tool = any(block["type"] == "tool_use" for block in self.content)
            self.stop_reason = "tool_use" if uses_tool else "end_turn"


@dataclass
class Fault:
    """An error reply: an HTTP status, a dropped connection (`status=None`), or a raw body."""

    status: int | None
    message: str = ""
    raw_body: str | None = None
    retry_after_ms: int | None = 10
    """Sent as `retry-after-ms` so the SDK's own retries are quick (the real API sends retry-after on 429)."""
    mid_stream: bool = False
    """For a streaming request: start the message, then send an `error` event with `message`."""


ScriptItem = Union[Reply, Fault, Callable[[dict[str, Any]], Union[Reply, Fault]]]

DROP = Fault(status=None)
MALFORMED = Fault(status=200, raw_body='{"id": "msg_broken", "content": [ {"type": "te')


def status(code: int, message: str = "") -> Fault:
    return Fault(status=code, message=message or f"loopback {code}")


def tool_use(name: str, **tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_tool_ids):05d}", "name": name, "input": tool_input}


def edit(command: str, path: str, **tool_input: Any) -> dict[str, Any]:
    return tool_use(EDITOR, command=command, path=path, **tool_input)


def bash(command: str) -> dict[str, Any]:
    return tool_use("bash", command=command)


def finish(description: str, lesson: str | None = None) -> dict[str, Any]:
    return tool_use("finish", description=description, **({"lesson": lesson} if lesson else {}))


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


def turn(*blocks: dict[str, Any]) -> Reply:
    return Reply(list(blocks))


def refusal() -> Reply:
    return Reply([text("I can't help with that.")], stop_reason="refusal")


# -- token accounting -------------------------------------------------------------------------------------
def _canonical(block: Any, role: str) -> str:
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps({"role": role, "block": block}, sort_keys=True, separators=(",", ":"))


def _blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """(canonical text, has a breakpoint) for every cacheable block, in cache order."""
    found = [(_canonical(tool, "tool"), "cache_control" in tool) for tool in body.get("tools", [])]
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    found += [(_canonical(block, "system"), "cache_control" in block) for block in system]
    for message in body.get("messages", []):
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        found += [(_canonical(block, message["role"]), "cache_control" in block) for block in content]
    return found


def count_tokens(serialised: str) -> int:
    return max(1, len(serialised) // CHARS_PER_TOKEN)


def prefix_tokens(body: dict[str, Any], block_count: int) -> int:
    """The tokens of a request's first `block_count` cacheable blocks (tools, system, messages' blocks)."""
    return sum(count_tokens(serialised) for serialised, _ in _blocks(body)[:block_count])


class PromptCache:
    """Prefixes written at breakpoints, by hash; reads the longest cached prefix of a request."""

    def __init__(self) -> None:
        self._written: set[str] = set()

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        blocks = _blocks(body)
        digest = hashlib.sha256(str(body.get("model")).encode())
        hashes, totals, running = [], [], 0
        for serialised, _ in blocks:
            digest.update(serialised.encode())
            hashes.append(digest.hexdigest())
            running += count_tokens(serialised)
            totals.append(running)
        breakpoints = [i for i, (_, marked) in enumerate(blocks) if marked]
        last_breakpoint = breakpoints[-1] if breakpoints else -1
        read_end = max((i for i in range(last_breakpoint + 1) if hashes[i] in self._written), default=-1)
        read = totals[read_end] if read_end >= 0 else 0
        created = (totals[last_breakpoint] if last_breakpoint >= 0 else 0) - read
        self._written.update(hashes[i] for i in breakpoints)
        return {
            "input_tokens": running - read - created,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        }


# -- the server -------------------------------------------------------------------------------------------
@dataclass
class LoopbackAPI(ScriptedServer):
    script: list[ScriptItem]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)
    side: Callable[[dict[str, Any]], Reply | None] | None = None
    """Answers a request itself (returns a Reply) without taking a script item; None: the script answers."""
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cache = PromptCache()
        self._serve(self.script, _handler_for(self))

    def env(self, api_key: str = "sk-ant-loopback-dummy") -> dict[str, str]:
        """The environment a goalloop process needs to talk to this server."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": api_key}

    def next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | Fault:
        answer = self.side(body) if self.side is not None else None
        if answer is not None:
            return answer

        def record() -> None:
            self.requests.append(body)
            self.headers.append(headers)

        answer = self._take(body, record)
        return status(400, EXHAUSTED) if answer is None else answer

    def message_for(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        with self._lock:
            usage = self._cache.usage(body)
        usage["output_tokens"] = count_tokens(json.dumps(reply.content))
        self.usages.append(usage)
        return {
            "id": f"msg_loopback_{len(self.requests):04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    # -- what tests read --------------------------------------------------------------------------------
    def tool_result(self, tool_use_block: dict[str, Any]) -> dict[str, Any]:
        """The tool_result the client sent back for a scripted tool_use block."""
        for body in self.requests:
            for message in body["messages"]:
                if message["role"] != "user" or isinstance(message["content"], str):
                    continue
                for block in message["content"]:
                    if block.get("type") == "tool_result" and block.get("tool_use_id") == tool_use_block["id"]:
                        return block
        raise AssertionError(f"no tool_result was sent for {tool_use_block['id']} ({tool_use_block['input']})")

    def first_requests_of_attempts(self) -> list[dict[str, Any]]:
        """The requests that opened a conversation (one per attempt, retries of it included once)."""
        openers, seen = [], set()
        for body in self.requests:
            if len(body.get("messages", [])) == 1:
                key = json.dumps(body["messages"], sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    openers.append(body)
        return openers


def tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content)
    return str(content)


def _handler_for(api: LoopbackAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(EventHandler):
        paths = api.paths

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            api.paths.append(f"GET {self.path}")
            if self.path.split("?")[0] == "/v1/models":
                models = sorted({str(body.get("model")) for body in api.requests if body.get("model")})
                data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in models]
                self._send_json(200, {"data": data, "has_more": False, "first_id": None, "last_id": None})
                return
            self._send_json(404, _error_body(404, f"loopback does not serve GET {self.path}"))

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            path = self.path.split("?")[0]
            api.paths.append(f"POST {self.path}")
            if path == "/v1/messages/count_tokens":
                body = json.loads(raw or b"{}")
                self._send_json(200, {"input_tokens": prefix_tokens(body, len(_blocks(body)))})
                return
            if path != "/v1/messages":
                self._send_json(404, _error_body(404, f"loopback serves only /v1/messages, not {self.path}"))
                return
            body = json.loads(raw or b"{}")
            reply = api.next_reply(body, {k.lower(): v for k, v in self.headers.items()})
            if isinstance(reply, Reply):
                message = api.message_for(body, reply)
                if body.get("stream"):
                    self._stream(message)
                else:
                    self._send_json(200, message)
            elif reply.status is None:
                self.close_connection = True
            elif reply.mid_stream:
                self._stream(api.message_for(body, Reply([])), error=reply.message or "Overloaded")
            elif reply.raw_body is not None:
                self._send_raw(reply.status, reply.raw_body.encode(), {})
            else:
                extra = {"retry-after-ms": str(reply.retry_after_ms)} if reply.retry_after_ms is not None else {}
                self._send_raw(reply.status, json.dumps(_error_body(reply.status, reply.message)).encode(), extra)

        def _stream(self, message: dict[str, Any], error: str | None = None) -> None:
            """The message as the API streams it: server-sent events, chunked."""
            self.send_events(list(stream_events(message, error)), headers=self._request_id())

        def _send_json(self, code: int, payload: dict[str, Any]) -> None:
            self._send_raw(code, json.dumps(payload).encode(), {})

        def _send_raw(self, code: int, payload: bytes, extra_headers: dict[str, str]) -> None:
            self.send_bytes(code, payload, {**self._request_id(), **extra_headers})

        @staticmethod
        def _request_id() -> dict[str, str]:
            return {"request-id": f"req_loopback_{len(api.requests):04d}"}

    return Handler


STREAM_CHUNK = 40
"""Characters of text or tool input per delta event."""


def stream_events(message: dict[str, Any], error: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a message: start, each block in deltas, the stop reason and usage, stop."""
    usage = dict(message["usage"])
    start = dict(message, content=[], stop_reason=None, stop_sequence=None, usage=dict(usage, output_tokens=1))
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    if error is not None:
        events.append(("error", {"type": "error", "error": {"type": "overloaded_error", "message": error}}))
        return events
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opened, key, kind, whole = dict(block, input={}), "partial_json", "input_json_delta", json.dumps(block["input"])
        elif block["type"] == "thinking":
            opened, key, kind, whole = dict(block, thinking=""), "thinking", "thinking_delta", block["thinking"]
        else:
            opened, key, kind, whole = dict(block, text=""), "text", "text_delta", block.get("text", "")
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}))
        for at in range(0, len(whole), STREAM_CHUNK):
            delta = {"type": kind, key: whole[at:at + STREAM_CHUNK]}
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(code, "api_error"), "message": message}}
