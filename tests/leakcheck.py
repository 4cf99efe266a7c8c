"""No client-visible error carries the server's internals (issue 9).

``client_errors`` (autouse, from tests/conftest.py) watches what every gateway server
started in the test process sends, at the wire: HTTP error bodies, Server-Sent
``error`` events, WebSocket ``error`` events (v1, Twilio, Realtime; the ASGI path and
the server protocol's direct writer), WebSocket close reasons and the WebRTC data
channel. At the end of each test it fails if one of them carries exception text (the
text of any ``ProviderError`` raised in the test, or what looks like an exception), a
traceback, a file path, a host, an IP address or a URL. So every fault test of the
suite (failover, providers answering 500 with a traceback, TTS at a closed port, ...)
is also a leak test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

import gateway.server
from gateway.providers.base import ProviderError
from gateway.server import WebSocketProtocol
from gateway.transports.webrtc import WebRTCPeer

# What a client must never read in an error.
LEAKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("traceback", r"Traceback \(most recent call last\)|\bFile \"|, line \d+, in "),
        ("exception", r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b(?!_)|\[Errno \d+\]"),
        ("path", r"(?<![\w.:/])/(?:srv|usr|home|root|tmp|var|etc|opt|work|app|proc)/"
                 r"|\b[\w-]+\.py\b"),
        ("url", r"\b[a-z][a-z0-9+.-]*://"),
        ("host", r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\blocalhost\b|\b[\w-]+(?:\.[\w-]+)+:\d{2,5}\b"
                 r"|\.(?:internal|corp|local|lan)\b"),
    ))


def leaks(text: str) -> list[str]:
    """The kinds of internals found in ``text``."""
    return [name for name, pattern in LEAKS if pattern.search(text)]


def error_texts(value: Any) -> list[str]:
    """The error messages a JSON message carries: its ``error`` members (the HTTP body,
    SSE and Realtime shapes) and the ``message`` of an event of type ``error`` (v1)."""
    found: list[str] = []
    if isinstance(value, dict):
        if str(value.get("type", "")).startswith("tool_"):
            return found  # a tool's result is for the model (its own errors are written)
        if value.get("type") == "error" and isinstance(value.get("message"), str):
            found.append(value["message"])
        for key, item in value.items():
            if key == "error":
                found += _messages(item)
            elif isinstance(item, dict | list):
                found += error_texts(item)
    elif isinstance(value, list):
        for item in value:
            found += error_texts(item)
    return found


def _messages(error: Any) -> list[str]:
    if isinstance(error, str):
        return [error]
    if isinstance(error, dict):
        return [v for k, v in error.items() if k in ("message", "detail") and isinstance(v, str)]
    return []


class Collector:
    """Every error message sent to a client during one test, by where it went."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.raised: set[str] = set()  # the text of every ProviderError made meanwhile

    def text(self, where: str, text: str) -> None:
        if "error" not in text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            return
        self.errors += [(where, t) for t in error_texts(value)]

    def reason(self, where: str, reason: str) -> None:
        if reason:
            self.errors.append((where, reason))

    def leaked(self) -> list[tuple[str, str, list[str]]]:
        found = []
        for where, text in self.errors:
            kinds = leaks(text)
            if any(len(r) >= 8 and (r in text or r[:40] in text) for r in self.raised):
                kinds.append("provider error text")
            if kinds:
                found.append((where, text, kinds))
        return found


class Sniffer:
    """An ASGI app around the gateway's: records what it sends to clients."""

    def __init__(self, app: Any, collector: Collector) -> None:
        self.app = app
        self.collector = collector

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        watch = _Response(self.collector, scope.get("path", ""))

        async def sniff(message: dict[str, Any]) -> None:
            watch.sent(message)
            await send(message)

        await self.app(scope, receive, sniff)


class _Response:
    MAX_BODY = 1 << 16  # error bodies are small; a success body is not kept

    def __init__(self, collector: Collector, path: str) -> None:
        self.c = collector
        self.path = path
        self.status = 0
        self.kind = ""
        self.body = bytearray()
        self.sse_tail = b""

    def sent(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = {k.lower(): v for k, v in message.get("headers", [])}
            self.kind = headers.get(b"content-type", b"").decode("latin-1")
        elif kind == "http.response.body":
            self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "websocket.send" and message.get("text") is not None:
            self.c.text(f"ws {self.path}", message["text"])
        elif kind == "websocket.close":
            self.c.reason(f"ws close {self.path}", message.get("reason") or "")
        elif kind == "websocket.http.response.body" and self.status >= 400:
            self.c.text(f"ws refusal {self.path}", bytes(message.get("body", b"")).decode())

    def _body(self, chunk: bytes, more: bool) -> None:
        if self.kind.startswith("text/event-stream"):
            lines = (self.sse_tail + chunk).split(b"\n")
            self.sse_tail = lines.pop()[-self.MAX_BODY:]
            for line in lines:
                if line.startswith(b"data:") and b"error" in line:
                    self.c.text(f"sse {self.path}", line[5:].decode(errors="replace"))
            return
        if self.status < 400 or len(self.body) > self.MAX_BODY:
            return
        self.body += chunk
        if not more and "json" in self.kind:
            self.c.text(f"http {self.status} {self.path}", self.body.decode(errors="replace"))


@pytest.fixture(autouse=True)
def client_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    """Fails a test in which a gateway sent a client an error with internals in it."""
    collector = Collector()
    make_config = gateway.server.uvicorn_config
    monkeypatch.setattr(gateway.server, "uvicorn_config",
                        lambda cfg, app: make_config(cfg, Sniffer(app, collector)))
    write = WebSocketProtocol._write

    def sniffed_write(self: WebSocketProtocol, messages: list[bytes | str]) -> None:
        for m in messages:
            if isinstance(m, str):
                collector.text("ws (direct)", m)
        write(self, messages)

    monkeypatch.setattr(WebSocketProtocol, "_write", sniffed_write)
    send_text = WebRTCPeer._send_text

    def sniffed_send(self: WebRTCPeer, text: str) -> None:
        collector.text("webrtc data channel", text)
        send_text(self, text)

    monkeypatch.setattr(WebRTCPeer, "_send_text", sniffed_send)
    made = ProviderError.__init__

    def recorded(self: ProviderError, message: str, *, retryable: bool = True) -> None:
        collector.raised.add(message)
        made(self, message, retryable=retryable)

    monkeypatch.setattr(ProviderError, "__init__", recorded)
    yield collector
    leaked = collector.leaked()
    assert not leaked, f"errors sent to clients carry internals: {leaked}"
