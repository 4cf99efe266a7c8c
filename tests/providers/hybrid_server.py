"""A local "company backend" for the hybrid LLM (SmarterAvatar's Hybrid Integration).

``POST /your-api/chat`` takes ``{"message", "sessionId", "context"}`` and answers, by
``server.mode``:

- ``json``: ``{"response": "...", "sources": [...]}``;
- ``sse_data``: ``text/event-stream`` with ``data: {"token": "..."}`` lines, then
  ``data: {"response", "sources"}`` and ``data: [DONE]``;
- ``sse_event``: ``event: token`` / ``data: {"text": "..."}`` events, then ``event: done``;
- ``sse_final``: only the final ``{"response", "sources"}`` event.

Behaviours: ``unauthorized`` (401; also when the bearer token is wrong), ``rate_limit``
(429), ``server_error`` (500 ``{"error": {"message"}}``), ``bad_json`` (200, not JSON),
``error_event`` (an ``event: error`` mid-stream), ``hang``, ``stall`` (tokens, then silence).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from local_server import ThreadedServer

DEFAULT_TOKEN = "hyb-test-0123456789abcdefLOCAL"
PATH = "/your-api/chat"


class LocalHybridServer(ThreadedServer):
    thread_name = "hybrid-test-server"

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        super().__init__()
        self._default_token = token
        self.app = FastAPI()
        self.requests: list[dict[str, Any]] = []  # {"headers", "body", "outcome"}
        self._lock = threading.Lock()
        self.reset()
        self.app.post(PATH)(self._chat)

    def reset(self) -> None:
        self.token = self._default_token  # the bearer token it accepts
        self.mode = "json"
        self.behaviour = "normal"
        self.reply = "The gateway is a voice server for browsers and kiosks."
        self.sources = [{"title": "About", "url": "https://example.com/about"}]
        self.token_delay_s = 0.0
        self.stall_after = 2
        self.echo_token_in_errors = False
        with self._lock:
            self.requests.clear()
        self.release_hung()

    def __enter__(self) -> LocalHybridServer:
        self.start(self.app)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def last(self) -> dict[str, Any]:
        with self._lock:
            return self.requests[-1]

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        rec = {"headers": dict(request.headers), "body": body, "outcome": "pending"}
        with self._lock:
            self.requests.append(rec)
        behaviour = self.behaviour
        if request.headers.get("authorization") != f"Bearer {self.token}":
            behaviour = "unauthorized"
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        early = self._early(behaviour, body, sent)
        if early is not None:
            rec["outcome"] = f"error:{early.status_code}"
            return early
        if behaviour == "hang":
            await self.hang(request)
            rec["outcome"] = "hung"
            return Response(status_code=504)
        if self.mode == "json":
            rec["outcome"] = "completed"
            return JSONResponse({"response": self.reply, "sources": self.sources})
        return StreamingResponse(self._events(rec, behaviour), media_type="text/event-stream")

    def _early(self, behaviour: str, body: Any, sent: str) -> Response | None:
        # A misbehaving backend that quotes the token it was sent.
        note = f" (token {sent})" if self.echo_token_in_errors else ""
        if behaviour == "unauthorized":
            return JSONResponse({"error": {"message": f"invalid token{note}"}}, status_code=401)
        if behaviour == "rate_limit":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if behaviour == "server_error":
            return JSONResponse({"error": {"message": f"database unavailable{note}"}},
                                status_code=500)
        if behaviour == "bad_json":
            return PlainTextResponse("<html>oops</html>", status_code=200)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return JSONResponse({"error": {"message": "message is required"}}, status_code=400)
        return None

    async def _events(self, rec: dict[str, Any], behaviour: str) -> AsyncIterator[str]:
        tokens = re.findall(r"\S+\s*", self.reply)
        final = json.dumps({"response": self.reply, "sources": self.sources})
        try:
            yield ": keep-alive\n\n"
            for i, token in enumerate(tokens if self.mode != "sse_final" else []):
                if behaviour == "stall" and i == self.stall_after:
                    rec["outcome"] = "released" if await self.wait_released() else "capped"
                    return
                if behaviour == "error_event" and i == self.stall_after:
                    yield 'event: error\ndata: {"error": {"message": "backend exploded"}}\n\n'
                    rec["outcome"] = "error_event"
                    return
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if self.mode == "sse_event":
                    yield f"event: token\ndata: {json.dumps({'text': token})}\n\n"
                else:
                    yield f"data: {json.dumps({'token': token})}\n\n"
            # Marked before the last write: a client that stops reading at the final event
            # may close the stream before this generator is resumed after its last yield.
            rec["outcome"] = "completed"
            if self.mode == "sse_event":
                yield f"event: done\ndata: {final}\n\n"
            else:
                yield f"data: {final}\n\ndata: [DONE]\n\n"
        finally:
            if rec["outcome"] == "pending":
                rec["outcome"] = "disconnected"
