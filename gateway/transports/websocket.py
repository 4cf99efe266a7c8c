"""Protocol v1 over a WebSocket (``/api/v1/voice/ws``): a thin adapter.

The reader feeds each message to the sans-I/O ``ProtocolState`` and hands the
resulting events to the session; the writer drains the session's outbox to the
socket. Auth is settled before any audio is taken; a refusal closes with 4401.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import MutableMapping
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.access.auth import AuthError, SessionGrant
from gateway.audio import pcm
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, OutboxClosed
from gateway.pipeline.session import Session
from gateway.pipeline.session_items import SessionSettings
from gateway.protocol import v1
from gateway.session_host import Refusal, SessionHost

log = structlog.get_logger("gateway.ws")

CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_SLOW_CONSUMER = 4413
CLOSE_OVERLOADED = 1013
CLOSE_RATE_LIMITED = 4429
# ASGI scope extension offered by gateway.server: ``set_sink(callback | None)``. While
# a sink is set, binary messages go straight to ``callback(data)`` from the protocol,
# with no queue and no task wake-up (one per 20 ms audio frame per session otherwise);
# text messages, and binary ones while earlier messages still wait, go the ASGI way.
BINARY_SINK = "gateway.binary_sink"
# Offered beside it: ``(ready, write)``. While ``ready()``, ``write(messages)`` puts
# whole messages (bytes: binary, str: text) on the wire at once, in one system call,
# without the ASGI send path; otherwise the app awaits ``websocket.send`` as usual
# (which waits for the client to read).
FRAME_WRITER = "gateway.frame_writer"
# Beside it: ``set_text_sink(callback | None)``. While set, each whole text message that
# arrives with nothing queued before it goes to ``callback(payload: bytes)`` first (the
# raw UTF-8); the callback returns True when it took the message, False to have it
# delivered the ASGI way (checked, decoded) as usual. For audio in JSON (Twilio, Realtime).
# The bytes are not yet checked as UTF-8: a callback takes only what it has parsed whole.
TEXT_SINK = "gateway.text_sink"
START_WAIT_S = 0.5  # how long to wait for an optional ``start`` before the defaults apply


async def voice_ws(websocket: WebSocket) -> None:
    grant = await _authenticate(websocket)
    if grant is None:
        return
    host = SessionHost(websocket.app.state, "ws")
    try:
        refusal = await host.admit(grant)
        if refusal is not None:
            await _refuse(websocket, refusal)
            return
        await websocket.accept()
        await VoiceConnection(websocket, host).run()
    finally:
        await host.close()


async def _authenticate(websocket: WebSocket) -> SessionGrant | None:
    auth = websocket.app.state.auth
    token = websocket.query_params.get("token")
    requested = (websocket.query_params.get("assistant_id")
                 or websocket.headers.get("x-chat-model-id"))
    client = websocket.client.host if websocket.client else "unknown"
    headers: Any = websocket.headers
    access_token = websocket.query_params.get("access_token")
    if access_token and not token:  # browsers cannot set headers on a WebSocket
        headers = {**dict(websocket.headers), "authorization": f"Bearer {access_token}"}
    try:
        grant: SessionGrant = await auth.websocket_grant(token, headers, client, requested)
        return grant
    except AuthError as exc:
        await websocket.accept()
        await websocket.close(CLOSE_UNAUTHORIZED, str(exc))
        log.info("ws_auth_refused", reason=str(exc))
        return None


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    """Over the caller's limit: an error event, then 4429; at capacity or shutting down: 1013."""
    await websocket.accept()
    with contextlib.suppress(Exception):
        if refusal.reason == "rate_limited":
            event = v1.error(refusal.code, refusal.message, retryable=True)
            event["retry_after"] = refusal.retry_after
            await websocket.send_text(v1.encode(event))
            await websocket.close(CLOSE_RATE_LIMITED, "rate limited")
        else:
            await websocket.close(CLOSE_OVERLOADED, refusal.message)
    log.info("ws_refused", reason=refusal.reason)


class VoiceConnection:
    def __init__(self, websocket: WebSocket, host: SessionHost) -> None:
        self.ws = websocket
        self.host = host
        self.cfg = host.cfg
        self.proto = v1.ProtocolState(
            input=v1.AudioFormat(self.cfg.audio.input_encoding, self.cfg.audio.input_sample_rate),
            max_chunk_ms=self.cfg.audio.max_chunk_ms,
        )
        self.outbox = host.outbox
        self.log = host.log
        self.session: Session | None = None
        self._loop = asyncio.get_running_loop()
        self._last_rx = self._loop.time()

    def _settings(self, start: v1.Start | None) -> SessionSettings:
        fmt = self.proto.input
        out_rate = (start.output_sample_rate if start else None) or (
            8000 if fmt.encoding == "mulaw" else self.cfg.audio.output_sample_rate
        )
        if start is None:
            return self.host.settings(fmt, v1.AudioFormat(fmt.encoding, out_rate))
        return self.host.settings(fmt, v1.AudioFormat(fmt.encoding, out_rate),
                                  language=start.language, voice=start.voice,
                                  system_prompt=start.system_prompt)

    def _session_started(self, session: Session) -> ev.Passthrough:
        return ev.Passthrough({
            "type": "session_started", "session_id": session.session_id,
            "conversation_id": session.conversation_id,
            "input": session.settings.input.as_dict(),
            "output": session.settings.output.as_dict(),
        })

    async def run(self) -> None:
        host = self.host
        await host.resolve()
        first = await self._receive(timeout=START_WAIT_S)
        event = self._parse(first) if first is not None else None
        start = event if isinstance(event, v1.Start) else None
        conv, history = await host.conversation(start.conversation_id if start else None)
        session = self.session = host.open(self._settings(start), conv, history)
        host.close_wire, host.wire = self._close, self
        session.emit(self._session_started(session))
        host.start()
        writer = asyncio.create_task(self._writer())
        try:
            if event is not None and start is None:
                self._dispatch(event)
            if first is None or first.get("type") != "websocket.disconnect":
                await self._reader()
        finally:
            await host.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _receive(self, timeout: float) -> MutableMapping[str, Any] | None:
        try:
            async with asyncio.timeout(timeout):
                message: MutableMapping[str, Any] = await self.ws.receive()
                return message
        except TimeoutError:
            return None

    def _parse(self, message: MutableMapping[str, Any]) -> v1.ClientEvent | None:
        if message["type"] != "websocket.receive":
            return None
        data = message.get("bytes")
        if data is not None:
            return self.proto.receive_bytes(data)
        return self.proto.receive_text(message.get("text") or "")

    def _on_binary(self, data: bytes) -> None:
        """A binary message straight from the server protocol (no queue, no wake-up)."""
        self._last_rx = self._loop.time()
        event = self.proto.receive_bytes(data)
        if type(event) is v1.Audio and self.session is not None:
            self.session.feed_audio(event.pcm)  # every 20 ms: no match statement
        elif event is not None:
            self._dispatch(event)

    async def _reader(self) -> None:
        # One watchdog per connection instead of a timeout around every receive: a timer
        # per 20 ms frame costs more than the VAD does.
        watchdog = asyncio.create_task(self._watchdog())
        loop = self._loop
        set_sink = self.ws.scope.get("extensions", {}).get(BINARY_SINK)
        if set_sink is not None:
            set_sink(self._on_binary)
        try:
            while True:
                message: MutableMapping[str, Any] = await self.ws.receive()
                self._last_rx = loop.time()
                if message["type"] == "websocket.disconnect":
                    return
                event = self._parse(message)
                if event is not None:
                    self._dispatch(event)
                if self.outbox.closed:
                    return  # the watchdog closes the socket with the right code
        finally:
            if set_sink is not None:
                set_sink(None)
            watchdog.cancel()

    async def _watchdog(self) -> None:
        """Closes the socket for idleness, a client that stopped reading, or a dead session."""
        idle = self.cfg.server.idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(idle, 1.0) if not self.outbox.closed else 0)
            if self.outbox.overflowed:
                await self._close(CLOSE_SLOW_CONSUMER, "client is not reading")
                return
            if self.outbox.closed:  # the session ended itself (internal error)
                await self._close(1011, "internal error")
                return
            if loop.time() - self._last_rx > idle:
                await self._close(CLOSE_IDLE, f"idle for {idle:.0f} s")
                return

    def _dispatch(self, event: v1.ClientEvent) -> None:
        session = self.session
        assert session is not None
        match event:
            case v1.Audio(pcm=data):
                session.feed_audio(data)
            case v1.Start():
                session.reconfigure(self._settings(event))
                session.emit(self._session_started(session))
            case v1.Text(text=text):
                session.user_text(text)
            case v1.Interrupt():
                session.interrupt()
            case v1.EndOfSpeech():
                session.end_of_speech()
            case v1.Ping():
                session.emit(ev.Passthrough({"type": "pong"}))
            case v1.ProtocolError():
                session.emit(ev.Passthrough(event.event()))

    async def _writer(self) -> None:
        session = self.session
        assert session is not None
        ready, write = self.ws.scope.get("extensions", {}).get(FRAME_WRITER, (None, None))
        try:
            while True:
                item = await self.outbox.get()
                # Read each time: a ``start`` may change the output encoding.
                mulaw = session.settings.output.encoding == "mulaw"
                if ready is not None and ready():
                    # Everything queued now goes out in one write (a reply's first
                    # chunks, its events): one system call instead of one per message.
                    batch = [item, *self.outbox.take_all()]
                    write([m for it in batch if (m := self._wire(it, mulaw)) is not None])
                    continue
                message = self._wire(item, mulaw)
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                elif message is not None:
                    await self.ws.send_text(message)
        except (OutboxClosed, WebSocketDisconnect, RuntimeError):
            return

    @staticmethod
    def _wire(item: Any, mulaw: bool) -> bytes | str | None:
        if isinstance(item, AudioOut):
            return pcm.mulaw_encode(item.pcm) if mulaw else item.pcm
        event = v1.render(item)
        return None if event is None else v1.encode(event)

    async def _close(self, code: int, reason: str) -> None:
        self.log.info("ws_closing", code=code, reason=reason)
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)


def audio_event(data: bytes) -> dict[str, Any]:
    """The JSON form of an audio chunk (for clients that cannot send binary)."""
    return {"type": "audio", "data": base64.b64encode(data).decode()}
