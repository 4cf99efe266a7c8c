"""A real local HTTP server standing in for a company's tool webhooks (function tools).

Routes (POST, JSON body = the tool's arguments):
  /echo           200 {"answer": <server.answer>, "got": <the arguments>}
  /slow?s=0.5     the same, after sleeping s seconds
  /fail           500 {"detail": "inventory database is down"}
  /text           200 text/plain
  /big            200 JSON of about 1 MB
Every request is recorded (path, headers, decoded body).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: Any


class WebhookServer:
    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.answer = "The parcel arrives on Friday."
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                url = urlsplit(self.path)
                server.hits.append(Hit(url.path, {k.lower(): v for k, v in self.headers.items()},
                                       body))
                server.route(self, url.path, parse_qs(url.query), body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def route(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]],
              body: Any) -> None:
        if path == "/slow":
            time.sleep(float(query.get("s", ["0.5"])[0]))
        if path in ("/echo", "/slow"):
            self._send(h, 200, "application/json", {"answer": self.answer, "got": body})
        elif path == "/fail":
            self._send(h, 500, "application/json", {"detail": "inventory database is down"})
        elif path == "/text":
            self._send(h, 200, "text/plain; charset=utf-8", "Open until 9 pm.")
        elif path == "/big":
            self._send(h, 200, "application/json", {"rows": ["x" * 1000] * 1000})
        else:
            self._send(h, 404, "text/plain", "no such hook")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, ctype: str, payload: Any) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        try:
            h.send_response(status)
            h.send_header("content-type", ctype)
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the caller gave up (timeout)
            pass

    def __enter__(self) -> WebhookServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
