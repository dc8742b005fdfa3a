"""A local Slack-compatible Web API server for tests: real HTTP on 127.0.0.1, a free port.

It records every ``chat.postMessage`` (body and whether/which Authorization header came) and can be told to answer the
next calls with an HTTP error or a 429 with Retry-After, the way Slack does during an outage or under rate limits.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Call:
    method: str
    body: dict
    authorization: str | None
    status: int
    at: float = field(default_factory=time.monotonic)
    raw: bytes = b""


class SlackServer:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._script: deque[tuple[int, dict[str, str]]] = deque()
        self._lock = threading.Lock()
        self._seq = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or b"{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                server._answer(self, self.path.rsplit("/", 1)[-1], body, raw)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/api/"

    def start(self) -> "SlackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._script.extend([(status, {})] * n)

    def rate_limit_next(self, n: int, retry_after_s: int) -> None:
        with self._lock:
            self._script.extend([(429, {"Retry-After": str(retry_after_s)})] * n)

    @property
    def posts(self) -> list[Call]:
        """Messages Slack accepted (HTTP 200), in order."""
        return [c for c in self.calls if c.method == "chat.postMessage" and c.status == 200]

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, body: dict, raw: bytes) -> None:
        with self._lock:
            status, headers = self._script.popleft() if self._script else (200, {})
            self._seq += 1
            seq = self._seq
            self.calls.append(Call(method, body, handler.headers.get("Authorization"), status, raw=raw))
        if status == 200:
            payload = json.dumps({"ok": True, "channel": body.get("channel"), "ts": f"1700000000.{seq:06d}"}).encode()
        elif status == 429:
            payload = json.dumps({"ok": False, "error": "ratelimited"}).encode()
        else:
            payload = b"<html>upstream error</html>"
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if status != 500 else "text/html")
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
