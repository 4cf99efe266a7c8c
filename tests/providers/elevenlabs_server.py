"""A real local server speaking ElevenLabs' text-to-speech wire format, for provider tests.

HTTP (the official ``elevenlabs`` client on the other side):
- ``POST /v1/text-to-speech/{voice_id}/stream``: the audio bytes, chunked;
- ``POST /v1/text-to-speech/{voice_id}/stream/with-timestamps``: newline-delimited JSON
  ``{"audio_base64", "alignment", "normalized_alignment"}`` (``characters``,
  ``character_start_times_seconds``, ``character_end_times_seconds``; times absolute);
- ``POST /v1/text-to-speech/{voice_id}/with-timestamps``: one such JSON object.
``output_format`` (query) picks ``pcm_<rate>`` or ``ulaw_8000``. The key is the
``xi-api-key`` header. Errors: ``{"detail": {"status", "message"}}`` with 401
(invalid_api_key, quota_exceeded), 422, 429 (too_many_concurrent_requests), 500; a body
without ``text`` gets FastAPI's validation list (422).

WebSocket ``/v1/text-to-speech/{voice_id}/stream-input?model_id=&output_format=``: the
first message ``{"text": " ", "voice_settings", "generation_config"?, "xi_api_key"?}``
(or the key as a header), then ``{"text": "...", "try_trigger_generation"?, "flush"?}``
messages and ``{"text": ""}`` to end. Replies ``{"audio", "isFinal", "alignment",
"normalizedAlignment"}`` (``chars``, ``charStartTimesMs``, ``charDurationsMs``, relative to
the message's audio with ``sync_alignment=true``, else to the generation's first message,
which alone carries it), then ``{"isFinal": true}`` and a 1000 close. Errors are a JSON
message ``{"message", "error", "code": 1008}`` and a 1008 close; 1011 for a server error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fake_speech import CharTiming, speech, split_bytes
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse
from local_server import ThreadedServer

from gateway.audio import pcm

DEFAULT_KEY = "xi-test-0123456789abcdefLOCAL"
BEHAVIOURS = ("normal", "unauthorized", "quota", "busy", "unprocessable", "server_error",
              "hang", "stall", "reject_handshake")
ERRORS: dict[str, tuple[int, str, str]] = {
    "unauthorized": (401, "invalid_api_key", "Invalid API key"),
    "quota": (401, "quota_exceeded", "This request exceeds your quota of 10000. You have 3 "
              "credits remaining, while 52 credits are required for this request."),
    "busy": (429, "too_many_concurrent_requests", "Too many concurrent requests. Your "
             "current subscription is limited to 2 concurrent requests."),
    "unprocessable": (422, "invalid_voice_settings", "stability must be between 0 and 1"),
    "server_error": (500, "internal_error", "We are sorry, something went wrong."),
}


@dataclass
class Recorded:
    kind: str  # "http" | "ws"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # ws: what the client sent
    outcome: str = "pending"
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, outcome: str) -> None:
        if not self.finished.is_set():
            self.outcome = outcome
            self.finished.set()

    def wait(self, timeout: float = 2.0) -> str:
        self.finished.wait(timeout)
        return self.outcome


class LocalElevenLabsServer(ThreadedServer):
    thread_name = "elevenlabs-test-server"

    def __init__(self, api_key: str = DEFAULT_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.app = FastAPI()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.reset()
        self._add_http_routes()
        self._add_ws_route()

    def reset(self) -> None:
        self.behaviour = "normal"
        self.ms_per_char = 60.0
        self.chunk_ms = 100  # audio per message/chunk
        self.chunk_delay_s = 0.0
        self.stall_after = 1  # messages sent before a stall
        self.inactivity_timeout_s = 20.0
        self.echo_key_in_errors = False  # a misbehaving upstream that quotes the key it got
        self.sync_alignment: bool | None = None  # None: as the client asks (query)
        with self._lock:
            self.requests.clear()
        self.release_hung()

    def __enter__(self) -> LocalElevenLabsServer:
        self.start(self.app)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def last(self) -> Recorded:
        with self._lock:
            return self.requests[-1]

    def _record(self, rec: Recorded) -> Recorded:
        with self._lock:
            self.requests.append(rec)
        return rec

    def _error(self, behaviour: str, sent_key: str = "") -> tuple[int, dict[str, Any]] | None:
        if behaviour not in ERRORS:
            return None
        status, code, message = ERRORS[behaviour]
        if self.echo_key_in_errors:
            message += f" (key {sent_key or self.api_key})"
        return status, {"detail": {"status": code, "message": message}}

    # --- HTTP ---------------------------------------------------------------------------

    def _add_http_routes(self) -> None:
        base = "/v1/text-to-speech/{voice_id}"

        @self.app.post(base + "/stream")
        async def stream(voice_id: str, request: Request) -> Response:
            return await self._http(request, voice_id, "audio")

        @self.app.post(base + "/stream/with-timestamps")
        async def stream_ts(voice_id: str, request: Request) -> Response:
            return await self._http(request, voice_id, "ndjson")

        @self.app.post(base + "/with-timestamps")
        async def convert_ts(voice_id: str, request: Request) -> Response:
            return await self._http(request, voice_id, "json")

    async def _http(self, request: Request, voice_id: str, shape: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        rec = self._record(Recorded("http", request.url.path, dict(request.query_params),
                                    dict(request.headers), body))
        behaviour = self.behaviour
        sent_key = request.headers.get("xi-api-key") or ""
        if sent_key != self.api_key:
            behaviour = "unauthorized"
        failed = self._error(behaviour, sent_key)
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        if failed is None and not fmt.startswith(("pcm_", "ulaw_")):
            failed = (422, {"detail": {"status": "invalid_output_format", "message":
                                       f"the local server makes pcm_* and ulaw_8000, not {fmt}"}})
        if failed is None and not isinstance(body.get("text"), str):
            failed = (422, {"detail": [{"type": "missing", "loc": ["body", "text"],
                                        "msg": "Field required", "input": body}]})
        if failed is not None:
            rec.finish(f"error:{failed[0]}")
            return JSONResponse(failed[1], status_code=failed[0])
        if behaviour == "hang":
            await self.hang(request)
            rec.finish("disconnected")
            return Response(status_code=504)
        audio, timings = _render(body["text"], fmt, self.ms_per_char)
        if shape == "json":
            rec.finish("completed")
            return JSONResponse(_http_chunk(audio, timings))
        media = "application/json" if shape == "ndjson" else _media_type(fmt)
        return StreamingResponse(self._http_body(rec, audio, timings, fmt, shape),
                                 media_type=media)

    async def _http_body(self, rec: Recorded, audio: bytes, timings: list[CharTiming],
                         fmt: str, shape: str) -> AsyncIterator[bytes]:
        size = _rate(fmt) * _width(fmt) * self.chunk_ms // 1000
        try:
            for i, chunk in enumerate(split_bytes(audio, size)):
                if self.behaviour == "stall" and i == self.stall_after:
                    rec.finish("released" if await self.wait_released() else "capped")
                    return
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                if shape == "audio":
                    yield chunk
                    continue
                start_ms = i * self.chunk_ms
                mine = [t for t in timings if start_ms <= t.start_ms < start_ms + self.chunk_ms]
                line = _http_chunk(chunk, mine)
                yield (json.dumps(line) + "\n").encode()
            rec.finish("completed")
        finally:
            rec.finish("disconnected")

    # --- WebSocket stream-input ---------------------------------------------------------

    def _add_ws_route(self) -> None:
        @self.app.websocket("/v1/text-to-speech/{voice_id}/stream-input")
        async def stream_input(websocket: WebSocket, voice_id: str) -> None:
            rec = self._record(Recorded("ws", websocket.url.path,
                                        dict(websocket.query_params), dict(websocket.headers)))
            if self.behaviour in ("reject_handshake", "busy"):
                busy = self.behaviour == "busy"
                status, body = self._error("busy" if busy else "unauthorized") or (0, {})
                status = status if busy else 403
                await websocket.send_denial_response(JSONResponse(body, status_code=status))
                rec.finish(f"error:{status}")
                return
            await websocket.accept()
            try:
                await _StreamInput(self, websocket, rec).run()
            except WebSocketDisconnect:
                rec.finish("disconnected")


class _StreamInput:
    """One stream-input connection: buffer text, generate, send audio with alignment."""

    def __init__(self, server: LocalElevenLabsServer, ws: WebSocket, rec: Recorded) -> None:
        self.server, self.ws, self.rec = server, ws, rec
        query = rec.query
        self.fmt = query.get("output_format", "mp3_44100_128")
        forced = server.sync_alignment
        self.sync = query.get("sync_alignment") == "true" if forced is None else forced
        self.auto = query.get("auto_mode") == "true"
        self.schedule = [120, 160, 250, 290]
        self.buffer = ""
        self.generations = 0
        self.sent = 0
        self.key = rec.headers.get("xi-api-key") or ""

    async def run(self) -> None:
        first = await self._receive()
        if first is None:
            return
        self.key = self.key or str(first.get("xi_api_key") or first.get("xi-api-key") or "")
        if not self.fmt.startswith(("pcm_", "ulaw_")):
            await self._fail("invalid_output_format", f"unsupported here: {self.fmt}")
            return
        if first.get("text") != " ":
            await self._fail("invalid_input_message", "The first message must be a blank "
                             "space ' '.")
            return
        if self.key != self.server.api_key:
            await self._fail("invalid_api_key", "Invalid API key")
            return
        if self.server.behaviour in ("unauthorized", "quota"):
            _, code, message = ERRORS[self.server.behaviour]
            await self._fail(code, message)
            return
        schedule = (first.get("generation_config") or {}).get("chunk_length_schedule")
        if schedule:
            self.schedule = [int(x) for x in schedule]
        await self._loop()

    async def _loop(self) -> None:
        while True:
            msg = await self._receive()
            if msg is None:
                return
            if self.server.behaviour == "server_error":
                await self.ws.close(1011, "We are sorry, something went wrong.")
                self.rec.finish("error:1011")
                return
            text = msg.get("text")
            if text == "":
                if not await self._generate(self.buffer):
                    return
                await self.ws.send_json({"audio": None, "isFinal": True,
                                         "normalizedAlignment": None, "alignment": None})
                await self.ws.close(1000)
                self.rec.finish("completed")
                return
            self.buffer += str(text)
            ready = self.auto or msg.get("flush") or len(self.buffer) >= self._threshold()
            if ready and not await self._generate(self.buffer):
                return

    def _threshold(self) -> int:
        return self.schedule[min(self.generations, len(self.schedule) - 1)]

    async def _receive(self) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self.server.inactivity_timeout_s):
                raw = await self.ws.receive_text()
        except TimeoutError:
            await self._fail("input_timeout_exceeded", "Have not received a new text input "
                             f"within the timeout of {self.server.inactivity_timeout_s:g} "
                             "seconds. Streaming input terminated.")
            return None
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("text"), str):
            await self._fail("invalid_input_message", "Could not parse input message, make "
                             "sure it is a json and follows the schema outlined in protocol.")
            return None
        self.rec.messages.append(msg)
        return msg

    async def _fail(self, code: str, message: str) -> None:
        if self.server.echo_key_in_errors:
            message += f" (key {self.key or self.server.api_key})"
        await self.ws.send_json({"message": message, "error": code, "code": 1008})
        await self.ws.close(1008, message[:120])
        self.rec.finish(f"error:{code}")

    async def _generate(self, text: str) -> bool:
        """Audio for the buffered text, in messages of ``chunk_ms``; False if it stalled."""
        self.buffer = ""
        if not text:
            return True
        self.generations += 1
        audio, timings = _render(text, self.fmt, self.server.ms_per_char)
        rate, width = _rate(self.fmt), _width(self.fmt)
        chunk_ms = self.server.chunk_ms
        for i, chunk in enumerate(split_bytes(audio, rate * width * chunk_ms // 1000)):
            if self.server.behaviour == "stall" and self.sent == self.server.stall_after:
                self.rec.finish("released" if await self.server.wait_released() else "capped")
                return False
            if self.server.chunk_delay_s:
                await asyncio.sleep(self.server.chunk_delay_s)
            start = i * chunk_ms
            if self.sync:
                mine = [t for t in timings if start <= t.start_ms < start + chunk_ms]
                alignment = _ws_alignment(mine, start)
            else:  # the generation's first message carries all of it
                alignment = _ws_alignment(timings, 0.0) if i == 0 else None
            await self.ws.send_json({"audio": base64.b64encode(chunk).decode(),
                                     "isFinal": None, "normalizedAlignment": alignment,
                                     "alignment": alignment})
            self.sent += 1
        return True


# --- audio and alignment shapes ------------------------------------------------------------


def _rate(fmt: str) -> int:
    return int(fmt.split("_")[1])


def _width(fmt: str) -> int:
    return 1 if fmt.startswith(("ulaw", "alaw")) else 2


def _media_type(fmt: str) -> str:
    return "audio/basic" if fmt.startswith("ulaw") else "audio/pcm"


def _render(text: str, fmt: str, ms_per_char: float) -> tuple[bytes, list[CharTiming]]:
    if not fmt.startswith(("pcm_", "ulaw_")):
        raise ValueError(f"the local server makes pcm_* and ulaw_8000 only, not {fmt}")
    audio, timings = speech(text, _rate(fmt), ms_per_char)
    return (pcm.mulaw_encode(audio) if fmt.startswith("ulaw") else audio), timings


def _ws_alignment(timings: list[CharTiming], origin_ms: float) -> dict[str, Any] | None:
    if not timings:
        return None
    return {"chars": [t.char for t in timings],
            "charStartTimesMs": [round(t.start_ms - origin_ms) for t in timings],
            "charDurationsMs": [round(t.duration_ms) for t in timings]}


def _http_chunk(audio: bytes, timings: list[CharTiming]) -> dict[str, Any]:
    """Times absolute (from the start of the whole audio), in seconds."""
    alignment = None
    if timings:
        alignment = {
            "characters": [t.char for t in timings],
            "character_start_times_seconds": [t.start_ms / 1000 for t in timings],
            "character_end_times_seconds": [(t.start_ms + t.duration_ms) / 1000
                                            for t in timings],
        }
    return {"audio_base64": base64.b64encode(audio).decode(), "alignment": alignment,
            "normalized_alignment": alignment}
