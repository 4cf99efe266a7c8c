"""Telephony bridge: Twilio Media Streams (and Telnyx/FastRTC look-alikes) at
``/api/v1/voice/twilio``. One adapter between the call's JSON frames and the pipeline.

Inbound μ-law 8 kHz is decoded and fed to the session as PCM; reply audio goes back as
20 ms μ-law ``media`` frames (paced by the session), a ``mark`` after each reply segment
(the telephony side echoes it when that audio has really been played), and ``clear`` on
barge-in so the caller stops hearing the interrupted reply at once. DTMF digits become a
typed user turn after a short pause or ``#``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.access.auth import AuthError, SessionGrant
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, OutboxClosed, OutItem
from gateway.pipeline.session import Session
from gateway.protocol import twilio as tw
from gateway.protocol.v1 import AudioFormat
from gateway.session_host import SessionHost
from gateway.transports.websocket import FRAME_WRITER, TEXT_SINK

log = structlog.get_logger("gateway.twilio")

START_TIMEOUT_S = 10.0
DTMF_PAUSE_S = 1.5
MARKS_KEPT = 64
HANGUP_MARK_WAIT_S = 5.0  # end_call / transfer: how long the last words may take to play


async def twilio_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await TwilioCall(websocket).run()


class TwilioCall:
    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.cfg = websocket.app.state.cfg
        self.call = tw.CallState()
        self.session: Session | None = None
        # The last marks echoed (a hang-up waits for its own, sent just before): bounded,
        # whatever a client sends.
        self.marks_played: deque[str] = deque(maxlen=MARKS_KEPT)
        self.marks_count = 0
        self._digits = ""
        self._dtmf_task: asyncio.Task[None] | None = None
        self.log = log
        self._last_media = 0.0  # loop time of the last media taken by the sink

    async def run(self) -> None:
        start = await self._await_start()
        if start is None:
            return
        grant = await self._authenticate(start)
        if grant is None:
            return
        host = SessionHost(self.ws.app.state, "twilio")
        try:
            refusal = await host.admit(grant)
            if refusal is not None:
                await self._close(4429 if refusal.reason == "rate_limited" else 1013,
                                  refusal.message[:120])
                return
            await self._call(host, start)
        finally:
            await host.close()

    async def _call(self, host: SessionHost, start: tw.CallStart) -> None:
        self.log = host.log.bind(call=start.call_id)
        self.outbox = host.outbox
        await host.resolve()
        pcm8k = AudioFormat("pcm_s16le", 8000)
        session = self.session = host.open(host.settings(
            pcm8k, pcm8k, voice=start.custom.get("voice"), telephony=True))
        host.close_wire, host.wire = self._close, self
        host.start()
        writer = asyncio.create_task(self._writer())
        self.log.info("call_started", stream=start.stream_id, dialect=start.dialect,
                      parameters_dropped=start.dropped)
        set_sink = self.ws.scope.get("extensions", {}).get(TEXT_SINK)
        if set_sink is not None:  # media straight from the socket: no task wake-up per frame
            set_sink(self._media_sink(session))
        try:
            await self._reader(session)
        finally:
            if set_sink is not None:
                set_sink(None)
            if self._dtmf_task is not None:
                self._dtmf_task.cancel()
            await host.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.log.info("call_ended", marks_played=self.marks_count)

    async def _await_start(self) -> tw.CallStart | None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    event = self.call.receive(await self.ws.receive_text())
                    if isinstance(event, tw.CallStart):
                        return event
                    if isinstance(event, tw.CallError | tw.CallStop):
                        await self._close(1008, "expected a start event")
                        return None
        except (TimeoutError, WebSocketDisconnect, RuntimeError, KeyError):
            await self._close(1008, "no start event")
            return None

    async def _authenticate(self, start: tw.CallStart) -> SessionGrant | None:
        auth = self.ws.app.state.auth
        token = start.custom.get("token") or self.ws.query_params.get("token")
        requested = start.custom.get("assistant_id") or self.ws.query_params.get("assistant_id")
        client = self.ws.client.host if self.ws.client else "unknown"
        try:
            grant: SessionGrant = await auth.websocket_grant(token, self.ws.headers, client,
                                                             requested)
            return grant
        except AuthError as exc:
            await self._close(4401, str(exc))
            return None

    async def _reader(self, session: Session) -> None:
        idle = self.cfg.server.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    text = await self.ws.receive_text()
            except TimeoutError:
                if asyncio.get_running_loop().time() - self._last_media < idle:
                    continue  # media kept coming through the sink
                await self._close(4408, "idle")
                return
            except (WebSocketDisconnect, RuntimeError, KeyError):
                return
            event = self.call.receive(text)
            if isinstance(event, tw.CallAudio):
                session.feed_audio(event.pcm)
            elif isinstance(event, tw.Dtmf):
                self._dtmf(session, event.digit)
            elif isinstance(event, tw.MarkPlayed):
                self.marks_played.append(event.name)
                self.marks_count += 1
            elif isinstance(event, tw.CallStop):
                return
            elif isinstance(event, tw.CallError):
                self.log.info("bad_call_message", error=event.message)
            if self.outbox.closed:
                await self._close(1011, "session ended")
                return

    def _media_sink(self, session: Session) -> Callable[[bytes], bool]:
        loop = asyncio.get_running_loop()

        def take(frame: bytes) -> bool:
            # Once the session is over, messages go to the reader, which closes.
            audio = None if self.outbox.closed else self.call.media_fast(frame)
            if audio is None:
                return False
            self._last_media = loop.time()
            session.feed_audio(audio.pcm)
            return True

        return take

    def _dtmf(self, session: Session, digit: str) -> None:
        if self._dtmf_task is not None:
            self._dtmf_task.cancel()
        if digit == "#":
            self._flush_digits(session)
            return
        self._digits += digit

        async def later() -> None:
            await asyncio.sleep(DTMF_PAUSE_S)
            self._flush_digits(session)

        self._dtmf_task = asyncio.create_task(later())

    def _flush_digits(self, session: Session) -> None:
        digits, self._digits = self._digits, ""
        if digits:
            session.user_text(f"The caller pressed the keys {' '.join(digits)}.")

    async def _writer(self) -> None:
        ready, write = self.ws.scope.get("extensions", {}).get(FRAME_WRITER, (None, None))
        try:
            while True:
                item = await self.outbox.get()
                if ready is not None and ready():
                    # All that is queued now in one write, as v1 does; a hand-off ends it.
                    batch = [item, *self.outbox.take_all()]
                    cut = next((i for i, b in enumerate(batch) if isinstance(b, ev.Handoff)),
                               len(batch) - 1)
                    write([f for b in batch[: cut + 1] if (f := self._render(b)) is not None])
                    item = batch[cut]
                else:
                    frame = self._render(item)
                    if frame is not None:
                        await self.ws.send_text(frame)
                if isinstance(item, ev.Handoff):
                    await self._hang_up(item)
                    return
        except (OutboxClosed, WebSocketDisconnect, RuntimeError):
            return

    async def _hang_up(self, signal: ev.Handoff) -> None:
        """The end_call / transfer_call tools, after the reply: once the mark sent with the
        signal comes back (the caller heard everything), close the stream. Twilio then
        goes on with the TwiML after ``<Connect>``: nothing (hang up) or a ``<Dial>``."""
        name = tw.handoff_mark(signal)
        self.log.info("call_handoff", action=signal.action, destination=signal.destination,
                      reason=signal.reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANGUP_MARK_WAIT_S):
                while name not in self.marks_played:
                    await asyncio.sleep(0.02)
        await self._close(1000, "call transferred" if signal.action == ev.TRANSFER
                          else "call ended")

    def _render(self, item: OutItem) -> str | None:
        if isinstance(item, AudioOut):
            return self.call.media(item.pcm)
        if isinstance(item, ev.ProviderFailed | ev.SttBehind | ev.SessionCrashed
                      | ev.ReplyCrashed | ev.TurnNotStored):
            self.log.info("session_error", event=type(item).__name__)
        return self.call.render(item)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)
