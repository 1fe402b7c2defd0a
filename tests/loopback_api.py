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

Usage is computed, not invented. Tokens are counted by a fixed rule: each block (a tool definition, a
system block, a message content block) serialised as canonical JSON without its `cache_control`, one
token per four characters. Blocks are taken in the order the real API caches them: tools, system,
messages. A prefix ending at a `cache_control` breakpoint is written to the cache; a later request whose
blocks start with a cached prefix reads it (`cache_read_input_tokens` = that prefix's tokens, the longest
one, ending at or before the request's last breakpoint; a request without breakpoints reads nothing).
Tokens from the end of the read prefix to the request's last breakpoint are a cache write
(`cache_creation_input_tokens`); the rest is `input_tokens`. The cache is per model.

Not covered: streaming, the 1024-token minimum cacheable prefix, cache expiry (5 minutes), token counts
that match the real tokenizer, and any endpoint other than POST /v1/messages.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union

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
class LoopbackAPI:
    script: list[ScriptItem]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue = list(self.script)
        self._cache = PromptCache()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self, api_key: str = "sk-ant-loopback-dummy") -> dict[str, str]:
        """The environment a goalloop process needs to talk to this server."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": api_key}

    def __enter__(self) -> LoopbackAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def extend(self, items: Iterable[ScriptItem]) -> None:
        with self._lock:
            self._queue.extend(items)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | Fault:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if not self._queue:
                return status(400, "loopback script exhausted: the test scripted fewer replies than were asked for")
            item = self._queue.pop(0)
        return item(body) if callable(item) else item

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
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            if self.path.split("?")[0] != "/v1/messages":
                self._send_json(404, _error_body(404, f"loopback serves only /v1/messages, not {self.path}"))
                return
            body = json.loads(raw or b"{}")
            reply = api.next_reply(body, {k.lower(): v for k, v in self.headers.items()})
            if isinstance(reply, Reply):
                self._send_json(200, api.message_for(body, reply))
            elif reply.status is None:
                self.close_connection = True
            elif reply.raw_body is not None:
                self._send_raw(reply.status, reply.raw_body.encode(), {})
            else:
                extra = {"retry-after-ms": str(reply.retry_after_ms)} if reply.retry_after_ms is not None else {}
                self._send_raw(reply.status, json.dumps(_error_body(reply.status, reply.message)).encode(), extra)

        def _send_json(self, code: int, payload: dict[str, Any]) -> None:
            self._send_raw(code, json.dumps(payload).encode(), {})

        def _send_raw(self, code: int, payload: bytes, extra_headers: dict[str, str]) -> None:
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_loopback_{len(api.requests):04d}")
            for name, value in extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(code, "api_error"), "message": message}}
