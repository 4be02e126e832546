"""A loopback stand-in for the Google Cloud and Kubernetes REST APIs: records every request.

Not an emulator: each test installs a handler that answers the calls it expects, the way the real
service would shape its reply, and then asserts what the official client sent (method, path, body).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


Reply = tuple[int, Any]  # status, JSON-able body (a str is sent as text/plain)


@dataclass
class StandIn:
    handler: Callable[[Request], Reply] = lambda req: (404, {"error": {"code": 404, "message": "no handler"}})
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def only(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]


def serve() -> tuple[StandIn, ThreadingHTTPServer]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw.decode(errors="replace")
            parts = urlsplit(self.path)
            req = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
            state.requests.append(req)
            status, reply = state.handler(req)
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(reply, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    return state, server
