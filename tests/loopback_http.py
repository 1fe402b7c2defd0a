"""What the loopback model servers share: a scripted queue served by a stdlib HTTP server in a thread, and
a request handler that answers HEAD probes and writes server-sent events with chunked encoding.

tests/loopback_api.py (Anthropic Messages) and tests/loopback_openai.py (OpenAI chat completions and
Responses) build on it; each says what its script items are and how they become replies.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Self


class ScriptedServer:
    """A loopback server whose model requests each take the next item of a script. Use as a context manager."""

    def _serve(self, script: Iterable[Any], handler: type[BaseHTTPRequestHandler]) -> None:
        self._queue = list(script)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def extend(self, items: Iterable[Any]) -> None:
        with self._lock:
            self._queue.extend(items)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def _take(self, body: dict[str, Any], record: Callable[[], None]) -> Any | None:
        """The next item's answer to `body` (a callable item is called with it); None when the script is out.
        `record` runs under the lock first, so what was asked is kept in order."""
        with self._lock:
            record()
            if not self._queue:
                return None
            item = self._queue.pop(0)
        return item(body) if callable(item) else item


EXHAUSTED = "loopback script exhausted: the test scripted fewer replies than were asked for"


class EventHandler(BaseHTTPRequestHandler):
    """Quiet, HTTP/1.1, HEAD answered 200 (a client's connectivity probe), server-sent events chunked."""

    protocol_version = "HTTP/1.1"
    paths: list[str]
    """Every method and path asked for: the owning server's list, set on the subclass."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self.paths.append(f"HEAD {self.path}")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def send_events(self, events: list[tuple[str | None, dict[str, Any]]], done: bool = False,
                    headers: dict[str, str] | None = None) -> None:
        """`event: NAME` (when named) and `data: JSON` for each event, then `data: [DONE]` when `done`."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self._chunk(f"{head}data: {json.dumps(data)}\n\n".encode())
        if done:
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_bytes(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
