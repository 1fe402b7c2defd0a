"""A loopback server that speaks enough of the OpenAI API for the real agent CLIs (Codex, Aider via litellm).

Run it in a thread and point the client at `server.url + "/v1"` with any key. It serves:
  - `POST /v1/chat/completions`: chat completions, plain or streamed (`"stream": true`: chat.completion.chunk
    events, text and tool-call deltas, a usage chunk when `stream_options.include_usage`, then `[DONE]`),
  - `POST /v1/responses`: the Responses API, plain or streamed (response.created, output_item.added,
    output_text.delta, function_call_arguments.delta, output_item.done, response.completed with usage),
  - `GET /v1/models`: the models asked for so far; `HEAD` of anything: 200.
Each model request takes the next item of the script, as tests/loopback_api.py does: a `Reply` (text
and/or tool `Call`s), a `Fault` (an HTTP error, a dropped connection, a body that is not JSON, or for a
stream an error part way), or a callable given the request body that returns one of those. `side`
answers a request without consuming the script. Every body is kept in `requests`, every method and path
in `paths`, every usage reported in `usages`.

Usage is computed: one token per four characters of the request's messages or input (and instructions
and tools) as canonical JSON, and of the reply's text and call arguments. Nothing is cached.

Not covered: the real tokenizer, logprobs, images and audio, `n` > 1, structured outputs, stored responses
(`previous_response_id`), and endpoints other than those above.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Union

from loopback_http import EXHAUSTED, EventHandler, ScriptedServer

CHARS_PER_TOKEN = 4
STREAM_CHUNK = 40
_ids = itertools.count(1)


@dataclass
class Call:
    """A tool call: a function name and its arguments (a dict, sent as JSON, or a raw string).

    `custom`: a Responses API freeform tool call (`custom_tool_call`, e.g. Codex's apply_patch) whose input
    is the raw string `arguments`.
    """

    name: str
    arguments: dict[str, Any] | str
    call_id: str = field(default_factory=lambda: f"call_{next(_ids):05d}")
    custom: bool = False

    @property
    def argument_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """An assistant turn: text, tool calls, or both."""

    text: str = ""
    calls: list[Call] = field(default_factory=list)


@dataclass
class Fault:
    """An error reply: an HTTP status, a dropped connection (`status=None`), a raw body, or a broken stream."""

    status: int | None
    message: str = ""
    raw_body: str | None = None
    mid_stream: bool = False
    """For a streaming request: send the first event, then an error event (Responses: response.failed)."""


ScriptItem = Union[Reply, Fault, Callable[[dict[str, Any]], Union[Reply, Fault]]]
DROP = Fault(status=None)


def status(code: int, message: str = "") -> Fault:
    return Fault(status=code, message=message or f"loopback {code}")


def count_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, sort_keys=True, separators=(",", ":"))) // CHARS_PER_TOKEN)


@dataclass
class LoopbackOpenAI(ScriptedServer):
    script: list[ScriptItem]
    side: Callable[[dict[str, Any]], Reply | None] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._serve(self.script, _handler_for(self))

    def next_reply(self, body: dict[str, Any]) -> Reply | Fault:
        answer = self.side(body) if self.side is not None else None
        if answer is not None:
            return answer
        answer = self._take(body, lambda: self.requests.append(body))
        return status(400, EXHAUSTED) if answer is None else answer

    def usage_for(self, body: dict[str, Any], reply: Reply) -> tuple[int, int]:
        asked = {k: body.get(k) for k in ("messages", "input", "instructions", "tools") if body.get(k)}
        prompt = count_tokens(asked)
        completion = count_tokens({"text": reply.text, "calls": [c.argument_text for c in reply.calls]})
        with self._lock:
            self.usages.append({"input_tokens": prompt, "output_tokens": completion})
        return prompt, completion


# -- chat completions -------------------------------------------------------------------------------------
def chat_completion(body: dict[str, Any], reply: Reply, usage: tuple[int, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.calls:
        message["tool_calls"] = [{"id": c.call_id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.argument_text}} for c in reply.calls]
    return {
        "id": f"chatcmpl-loopback{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.calls else "stop"}],
        "usage": _chat_usage(usage),
    }


def _chat_usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


def chat_chunks(body: dict[str, Any], reply: Reply, usage: tuple[int, int]) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion (without the final [DONE])."""
    base = {"id": f"chatcmpl-loopback{next(_ids)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model", "")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": reply.text[at:at + STREAM_CHUNK]}) for at in range(0, len(reply.text), STREAM_CHUNK)]
    for index, call in enumerate(reply.calls):
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call.call_id, "type": "function",
                                             "function": {"name": call.name, "arguments": ""}}]}))
        text = call.argument_text
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": text[at:at + STREAM_CHUNK]}}]})
                   for at in range(0, len(text), STREAM_CHUNK)]
    chunks.append(chunk({}, "tool_calls" if reply.calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(dict(base, choices=[], usage=_chat_usage(usage)))
    return chunks


# -- the Responses API ------------------------------------------------------------------------------------
def response_items(reply: Reply) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.text:
        items.append({"type": "message", "id": f"msg_{next(_ids)}", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": reply.text, "annotations": []}]})
    for call in reply.calls:
        if call.custom:
            items.append({"type": "custom_tool_call", "id": f"ctc_{next(_ids)}", "status": "completed",
                          "name": call.name, "input": call.argument_text, "call_id": call.call_id})
        else:
            items.append({"type": "function_call", "id": f"fc_{next(_ids)}", "status": "completed",
                          "name": call.name, "arguments": call.argument_text, "call_id": call.call_id})
    return items


def response_object(body: dict[str, Any], reply: Reply | None, usage: tuple[int, int] | None,
                    state: str = "completed") -> dict[str, Any]:
    return {
        "id": f"resp_loopback{next(_ids)}", "object": "response", "created_at": int(time.time()), "status": state,
        "model": body.get("model", ""), "output": response_items(reply) if reply else [],
        "usage": None if usage is None else {
            "input_tokens": usage[0], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage[1], "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": sum(usage),
        },
    }


def response_events(body: dict[str, Any], reply: Reply, usage: tuple[int, int]) -> list[dict[str, Any]]:
    """The server-sent events of a streamed response, each a dict with its `type`."""
    events: list[dict[str, Any]] = [{"type": "response.created", "response": response_object(body, None, None, "in_progress")}]
    for index, item in enumerate(response_items(reply)):
        opened = dict(item, status="in_progress")
        if item["type"] == "message":
            opened["content"] = []
        elif item["type"] == "custom_tool_call":
            opened["input"] = ""
        else:
            opened["arguments"] = ""
        events.append({"type": "response.output_item.added", "output_index": index, "item": opened})
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append({"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                           "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
            events += [{"type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
                        "content_index": 0, "delta": text[at:at + STREAM_CHUNK]} for at in range(0, len(text), STREAM_CHUNK)]
            events.append({"type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                           "content_index": 0, "text": text})
        elif item["type"] == "custom_tool_call":
            text = item["input"]
            events += [{"type": "response.custom_tool_call_input.delta", "item_id": item["id"], "output_index": index,
                        "delta": text[at:at + STREAM_CHUNK]} for at in range(0, len(text), STREAM_CHUNK)]
            events.append({"type": "response.custom_tool_call_input.done", "item_id": item["id"],
                           "output_index": index, "input": text})
        else:
            text = item["arguments"]
            events += [{"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": index,
                        "delta": text[at:at + STREAM_CHUNK]} for at in range(0, len(text), STREAM_CHUNK)]
            events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                           "output_index": index, "arguments": text})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": response_object(body, reply, usage)})
    return events


# -- the server -------------------------------------------------------------------------------------------
def _handler_for(api: LoopbackOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(EventHandler):
        paths = api.paths

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            api.paths.append(f"GET {self.path}")
            if self.path.split("?")[0].rstrip("/").endswith("/models"):
                models = sorted({str(b.get("model")) for b in api.requests if b.get("model")})
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                              "owned_by": "loopback"} for m in models]})
                return
            self._json(404, _error(404, f"loopback does not serve GET {self.path}"))

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            path = self.path.split("?")[0].rstrip("/")
            api.paths.append(f"POST {self.path}")
            kind = "chat" if path.endswith("/chat/completions") else "responses" if path.endswith("/responses") else None
            if kind is None:
                self._json(404, _error(404, f"loopback serves chat/completions and responses, not {self.path}"))
                return
            body = json.loads(raw or b"{}")
            reply = api.next_reply(body)
            if isinstance(reply, Fault):
                self._fault(kind, body, reply)
                return
            usage = api.usage_for(body, reply)
            if kind == "chat" and body.get("stream"):
                self.send_events([(None, chunk) for chunk in chat_chunks(body, reply, usage)], done=True)
            elif kind == "chat":
                self._json(200, chat_completion(body, reply, usage))
            elif body.get("stream"):
                self.send_events([(event["type"], event) for event in response_events(body, reply, usage)])
            else:
                self._json(200, response_object(body, reply, usage))

        def _fault(self, kind: str, body: dict[str, Any], fault: Fault) -> None:
            if fault.status is None:
                self.close_connection = True
            elif fault.mid_stream and kind == "responses":
                failed = dict(response_object(body, None, None, "failed"),
                              error={"code": "server_error", "message": fault.message or "loopback failure"})
                self.send_events([("response.created", {"type": "response.created", "response": response_object(body, None, None, "in_progress")}),
                              ("response.failed", {"type": "response.failed", "response": failed})])
            elif fault.mid_stream:
                first = chat_chunks(body, Reply(), (0, 0))[0]
                self.send_events([(None, first), (None, {"error": _error(500, fault.message or "loopback failure")["error"]})])
            elif fault.raw_body is not None:
                self.send_bytes(fault.status, fault.raw_body.encode())
            else:
                self._json(fault.status, _error(fault.status, fault.message))

        def _json(self, code: int, payload: dict[str, Any]) -> None:
            self.send_bytes(code, json.dumps(payload).encode())

    return Handler


def _error(code: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             429: "rate_limit_exceeded", 500: "server_error"}
    return {"error": {"message": message or f"loopback {code}", "type": kinds.get(code, "server_error"),
                      "param": None, "code": {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(code)}}
