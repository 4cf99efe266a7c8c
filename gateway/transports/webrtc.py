"""WebRTC transport (aiortc); the offer arrives at ``POST /api/v1/voice/webrtc/offer``
(``gateway.api.voice_routes``).

The client posts an SDP offer (an audio track, and a data channel it creates, e.g.
``"events"``); the gateway answers, and one peer connection is one voice session:

- microphone: the client's Opus track, decoded by aiortc to ``av.AudioFrame``s, is
  mixed to mono, resampled to 16 kHz and fed to the session;
- reply audio: ``ReplyTrack``, an audio track whose ``recv()`` hands the Opus encoder
  20 ms frames in real time: the session's reply audio, or silence when there is none.
  On ``interrupted`` it drops what it holds at once (the client cannot flush its own
  jitter buffer, so the server must stop sending);
- the data channel carries the protocol-v1 JSON events (not the binary audio, not the
  internal ``_`` events) and accepts the v1 client messages (``text``, ``interrupt``,
  ``end_of_speech``, ``ping``, ``start`` for language/voice/prompt).

The session lives as long as the peer connection: it ends when the connection fails or
closes, when nothing arrives for ``server.idle_timeout_s``, when an answered peer never
connects within ``webrtc.connect_timeout_s``, or on server shutdown (drain).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine
from typing import Any

import av
import structlog
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from gateway.audio import frames, pcm
from gateway.errors import ClientError, GatewayError
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, OutboxClosed
from gateway.pipeline.session_items import SessionSettings
from gateway.pipeline.vad_input import PIPELINE_RATE
from gateway.protocol import v1
from gateway.protocol import webrtc as channel_wire
from gateway.protocol.webrtc import OPUS
from gateway.session_host import SessionHost
from gateway.transports.webrtc_ice import allowed_hosts, ice_servers

log = structlog.get_logger("gateway.webrtc")

FRAME_MS = 20
TRACK_MAX_MS = 2000  # reply audio the track holds; the session runs ≤200 ms ahead anyway
RESYNC_S = 0.2  # a recv() later than this behind schedule restarts the clock (no burst)
EVENT_BACKLOG = 256  # events kept until the client's data channel opens
CHANNEL_MAX_BUFFERED = 1 << 20  # bytes queued on the data channel: the client is not reading
CHECK_INTERVAL_S = 1.0


class ReplyTrack(MediaStreamTrack):
    """Outgoing audio: 20 ms mono s16 frames at ``sample_rate``, paced at real time."""

    kind = "audio"

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.samples = sample_rate * FRAME_MS // 1000
        self._frames: deque[bytes] = deque(maxlen=TRACK_MAX_MS // FRAME_MS)
        self._reframer = pcm.Reframer(self.samples * pcm.SAMPLE_WIDTH)
        self._silence = bytes(self.samples * pcm.SAMPLE_WIDTH)
        self._start: float | None = None
        self._pts = 0
        self.audio_frames = 0  # non-silent frames sent, for logs and tests

    def push(self, data: bytes) -> None:
        self._frames.extend(self._reframer.push(data))

    def clear(self) -> None:
        """Barge-in: whatever is queued is never sent."""
        self._frames.clear()
        self._reframer.flush()

    def _next_chunk(self) -> bytes:
        if self._frames:
            self.audio_frames += 1
            return self._frames.popleft()
        rest = self._reframer.flush()  # the tail of a reply: pad it to a whole frame
        return rest + self._silence[len(rest):] if rest else self._silence

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = asyncio.get_running_loop().time()
        if self._start is None:
            self._start = now
        else:
            self._pts += self.samples
            due = self._start + self._pts / self.sample_rate
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > RESYNC_S:
                self._start = now - self._pts / self.sample_rate
        # Taken after the wait, so a barge-in during it already silences this frame.
        return frames.from_mono_pcm(self._next_chunk(), self.sample_rate, self._pts)


class WebRTCHub:
    """Per-app WebRTC state: the live peers, and how many are not connected yet."""

    def __init__(self) -> None:
        self.peers: set[WebRTCPeer] = set()
        self.pending = 0


def hub_of(app: Any) -> WebRTCHub:
    hub: WebRTCHub | None = getattr(app.state, "webrtc", None)
    if hub is None:
        hub = app.state.webrtc = WebRTCHub()
    return hub


# --- one peer connection = one session ---------------------------------------------------


class WebRTCPeer:
    def __init__(self, host: SessionHost, hub: WebRTCHub) -> None:
        self.host = host
        self.cfg = host.cfg
        self.grant = host.grant
        self.hub = hub
        self.log = host.log
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.cfg.webrtc)))
        self.outbox = host.outbox
        self.track = ReplyTrack(self.cfg.webrtc.output_sample_rate)
        self.proto = v1.ProtocolState(input=v1.AudioFormat("pcm_s16le", PIPELINE_RATE),
                                      max_chunk_ms=self.cfg.audio.max_chunk_ms)
        self.session = host.open(self._settings(None))
        host.close_wire, host.wire = self._close_wire, self
        self.channel: RTCDataChannel | None = None
        self._backlog: deque[str] = deque(maxlen=EVENT_BACKLOG)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self.created = self.last_activity = self._loop.time()
        self.connected = False
        self._closing: str | None = None
        self._closed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        hub.peers.add(self)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def _settings(self, start: v1.Start | None) -> SessionSettings:
        pcm_in = v1.AudioFormat("pcm_s16le", PIPELINE_RATE)
        pcm_out = v1.AudioFormat("pcm_s16le", self.cfg.webrtc.output_sample_rate)
        if start is None:
            return self.host.settings(pcm_in, pcm_out)
        return self.host.settings(pcm_in, pcm_out, language=start.language, voice=start.voice,
                                  system_prompt=start.system_prompt)

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        wcfg = self.cfg.webrtc
        # Gathering happens in setLocalDescription; its tasks inherit this context.
        with allowed_hosts(wcfg.host_candidates, wcfg.ipv6):
            try:
                await self.pc.setRemoteDescription(offer)
            except Exception as exc:  # aiortc's parser raises assorted errors on bad SDP
                self.log.info("webrtc_bad_offer", error=repr(exc))
                raise ClientError("bad SDP offer") from None
            if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
                raise ClientError("the offer has no audio track")
            self.pc.addTrack(self.track)
            try:
                async with asyncio.timeout(wcfg.ice_gathering_timeout_s):
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
            except TimeoutError:
                raise GatewayError("ICE gathering timed out") from None
        local = self.pc.localDescription
        assert local is not None
        return local

    def start(self) -> None:
        self.host.start()
        self._spawn(self._pump())
        self._supervisor = asyncio.create_task(self._supervise())
        self.log.info("webrtc_session_started", key_id=self.grant.key_id,
                      output_rate=self.track.sample_rate)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- peer connection events ----------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._microphone(track))

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.debug("webrtc_connection_state", state=state)
        if state == "connected" and not self.connected:
            self.connected = True
            self.hub.pending -= 1
        elif state in ("failed", "closed"):
            self.close_soon(f"connection {state}")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        channel.on("message", self._on_message)
        if self.channel is not None:
            return  # messages from further channels are taken; events go on the first
        self.channel = channel
        if channel.readyState == "open":
            self._channel_open()
        else:
            channel.on("open", self._channel_open)

    def _channel_open(self) -> None:
        self._send_event(self._session_started())
        while self._backlog and self.channel is not None:
            self._send_text(self._backlog.popleft())

    def _session_started(self) -> dict[str, Any]:
        s = self.session
        return {"type": "session_started", "session_id": s.session_id,
                "conversation_id": s.conversation_id,
                "input": OPUS, "output": OPUS}

    # -- media in ------------------------------------------------------------------------

    async def _microphone(self, track: MediaStreamTrack) -> None:
        resampler: pcm.Resampler | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.last_activity = self._loop.time()
            if not isinstance(frame, av.AudioFrame):
                continue
            if resampler is None or resampler.src_rate != frame.sample_rate:
                resampler = pcm.Resampler(frame.sample_rate, PIPELINE_RATE, pcm.CLIENT_AUDIO)
            data = resampler.process(frames.to_mono_pcm(frame))
            if data:
                self.session.feed_audio(data)

    # -- data channel in -----------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        self.last_activity = self._loop.time()
        if isinstance(message, bytes):
            self.session.emit(ev.Passthrough(v1.error(
                v1.INVALID_REQUEST, "binary messages are not taken: audio goes on the track")))
            return
        match self.proto.receive_text(message):
            case v1.Text(text=text):
                self.session.user_text(text)
            case v1.Interrupt():
                self.session.interrupt()
            case v1.EndOfSpeech():
                self.session.end_of_speech()
            case v1.Ping():
                self.session.emit(ev.Passthrough({"type": "pong"}))
            case v1.Audio(pcm=data):
                self.session.feed_audio(data)
            case v1.Start() as start:
                self.proto.input = self.session.settings.input  # Opus in: fixed format
                self.session.reconfigure(self._settings(start))
                self.session.emit(ev.Passthrough(self._session_started()))
            case v1.ProtocolError() as err:
                self.session.emit(ev.Passthrough(err.event()))

    # -- session out ---------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, AudioOut):
                    self.track.push(item.pcm)
                    continue
                if isinstance(item, ev.Interrupted):
                    self.track.clear()
                message = channel_wire.render(item)
                if message is not None:
                    self._send_event(message)
        except OutboxClosed:
            reason = "client is not reading" if self.outbox.overflowed else "session ended"
            self.close_soon(reason)

    def _send_event(self, event: dict[str, Any]) -> None:
        self._send_text(v1.encode(event))

    def _send_text(self, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            self._backlog.append(text)  # bounded: the oldest go first
            return
        channel.send(text)
        if channel.bufferedAmount > CHANNEL_MAX_BUFFERED:
            self.close_soon("client is not reading the data channel")

    # -- lifetime ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        wcfg, idle = self.cfg.webrtc, self.cfg.server.idle_timeout_s
        while self._closing is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_INTERVAL_S):
                    await self._closed.wait()
            now = self._loop.time()
            if not self.connected and now - self.created > wcfg.connect_timeout_s:
                self.close_soon("never connected")
            elif now - self.last_activity > idle:
                self.close_soon(f"idle for {idle:.0f} s")
        await self._teardown(self._closing or "closed")

    def close_soon(self, reason: str) -> None:
        if self._closing is None:
            self._closing = reason
            self._closed.set()

    async def close(self, reason: str) -> None:
        self.close_soon(reason)
        if self._supervisor is None:  # never started: tear down here
            self._supervisor = asyncio.create_task(self._teardown(reason))
        await asyncio.shield(self._supervisor)

    async def _close_wire(self, _code: int, reason: str) -> None:
        await self.close(reason)  # the host's drain, once the reply is over

    async def _teardown(self, reason: str) -> None:
        self.log.info("webrtc_session_closing", reason=reason, connected=self.connected,
                      audio_frames=self.track.audio_frames)
        self.track.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.cfg.server.session_close_timeout_s):
                await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.connected:
            self.hub.pending -= 1
            self.connected = True  # counted once
        self.hub.peers.discard(self)
        # Last: leaving the session registry means this peer is entirely gone.
        await self.host.close()
