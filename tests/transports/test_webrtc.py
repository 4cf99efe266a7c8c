"""WebRTC: a real aiortc peer talks to the gateway over loopback-only ICE.

The peer sends real speech on an Opus track (from the test WAVs, in real time), reads
the protocol-v1 events on its data channel and decodes the gateway's reply track.
"""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any

import av
import httpx
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from voice_client import wav

from gateway.audio import pcm
from gateway.store.db import Database
from gateway.store.keys import KeyStore
from gateway.transports.webrtc_ice import allowed_hosts, candidate_hosts

OFFER = "/api/v1/voice/webrtc/offer"
RATE = 48000
SAMPLES = RATE // 50  # 20 ms
LOOPBACK = {"webrtc": {"host_candidates": ["127.0.0.1"]}}
SILENT_DBFS = -50.0


class MicTrack(MediaStreamTrack):
    """A microphone: speech handed to ``say`` in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()
        self.start: float | None = None
        self.pts = 0

    def say(self, pcm16k: bytes) -> None:
        self.buf += pcm.resample(pcm16k, 16000, RATE)

    async def speak(self, pcm16k: bytes) -> None:
        self.say(pcm16k)
        while self.buf:
            await asyncio.sleep(0.02)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += SAMPLES
            await asyncio.sleep(max(0.0, self.start + self.pts / RATE - time.monotonic()))
        chunk = bytes(self.buf[: SAMPLES * 2]).ljust(SAMPLES * 2, b"\0")
        del self.buf[: SAMPLES * 2]
        frame = av.AudioFrame.from_ndarray(np.frombuffer(chunk, "<i2").reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class Heard:
    at: float
    dbfs: float
    rate: int
    samples: int
    pcm: bytes


class Peer:
    """The client side: mic track out, reply track in, a data channel for events."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = MicTrack()
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("events")
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.log: list[tuple[float, dict[str, Any]]] = []
        self.heard: list[Heard] = []
        self.tasks: list[asyncio.Task[None]] = []

    def _on_message(self, message: str) -> None:
        self.log.append((time.monotonic(), json.loads(message)))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            channels = len(frame.layout.channels)
            mono = frame.to_ndarray().reshape(-1, channels).mean(axis=1).astype("<i2")
            data = mono.tobytes()
            self.heard.append(Heard(time.monotonic(), pcm.rms_dbfs(data), frame.sample_rate,
                                    frame.samples, data))

    async def connect(self, base: str, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        with allowed_hosts(["127.0.0.1"]):  # our side gathers loopback only, too
            await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer", **body}
        async with httpx.AsyncClient(base_url=base, timeout=15) as http:
            resp = await http.post(OFFER, json=offer, params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(self.opened.wait(), 10)
        return answer

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.log if e["type"] == kind]

    def at(self, kind: str, **match: Any) -> float:
        return next(t for t, e in self.log
                    if e["type"] == kind and all(e.get(k) == v for k, v in match.items()))

    async def wait(self, kind: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, e in self.log:
                if e["type"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {kind} {match}; got {[e['type'] for _, e in self.log]}")

    def audible_ms(self, since: float = 0.0) -> float:
        return sum(h.samples / h.rate * 1000 for h in self.heard
                   if h.at >= since and h.dbfs > -35)

    def sounding_ms(self, since: float) -> float:
        """From the first to the last non-silent frame heard after ``since``."""
        frames = [h for h in self.heard if h.at >= since]
        loud = [i for i, h in enumerate(frames) if h.dbfs > SILENT_DBFS]
        if not loud:
            return 0.0
        return sum(h.samples / h.rate * 1000 for h in frames[loud[0] : loud[-1] + 1])

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_spoken_turn_over_webrtc(gateway_factory) -> None:
    gw = gateway_factory(**LOOPBACK)
    peer = Peer()
    try:
        answer = await peer.connect(gw.base)
        assert answer["type"] == "answer" and answer["session_id"].startswith("sess_")
        hosts = candidate_hosts(answer["sdp"])
        assert hosts and all(addr == "127.0.0.1" for addr, _ in hosts), hosts
        assert all(addr == "127.0.0.1" for addr, _ in candidate_hosts(peer.pc.localDescription.sdp))
        started = await peer.wait("session_started")
        assert started["session_id"] == answer["session_id"]
        await peer.mic.speak(wav("what_is_the_gateway.wav"))
        final = await peer.wait("transcription", final=True)
        assert "gateway" in final["text"].lower()
        tts = await peer.wait("tts_start")
        done = await peer.wait("tts_complete", timeout=60, response_id=tts["response_id"])
        await peer.wait("stream_end", response_id=tts["response_id"])
        tokens = "".join(e["text"] for e in peer.events("token"))
        assert "voice server" in tokens
        assert not any(e["type"].startswith("_") for _, e in peer.log)
        await asyncio.sleep(0.2)  # the tail of the audio is still in flight
        reply = [h for h in peer.heard if h.at >= peer.at("tts_start")]
        assert reply and all(h.rate == RATE and h.samples == SAMPLES for h in reply)
        audio = b"".join(h.pcm for h in reply)
        assert pcm.rms_dbfs(audio) > -35
        # What the peer heard is about as long as what the session says it played.
        assert abs(peer.sounding_ms(peer.at("tts_start")) - done["duration_ms"]) < 300, \
            (peer.sounding_ms(peer.at("tts_start")), done)
        assert all(h.dbfs < SILENT_DBFS for h in peer.heard if h.at < peer.at("tts_start"))
    finally:
        await peer.close()
    # The session lives as long as the peer connection.
    await wait_until(lambda: not gw.app.state.sessions.live)
    assert gw.app.state.webrtc.pending == 0 and not gw.app.state.webrtc.peers


async def test_barge_in_silences_the_track(gateway_factory) -> None:
    gw = gateway_factory(**LOOPBACK)
    peer = Peer()
    try:
        await peer.connect(gw.base)
        await peer.mic.speak(wav("tell_me_about_barge_in.wav"))
        tts = await peer.wait("tts_start")
        await wait_until(lambda: peer.audible_ms(peer.at("tts_start")) > 600, timeout=10)
        peer.mic.say(wav("hello_weather.wav"))
        await peer.wait("interrupted", response_id=tts["response_id"])
        t_vad = peer.at("speech_started", turn_id=2)
        await asyncio.sleep(0.8)
    finally:
        await peer.close()
    done = next(e for e in peer.events("tts_complete") if e["response_id"] == tts["response_id"])
    assert done["interrupted"] is True
    assert [h for h in peer.heard if t_vad - 0.3 < h.at < t_vad and h.dbfs > -35], \
        "the reply was playing when the user barged in"
    window = [h for h in peer.heard if t_vad <= h.at < t_vad + 0.6]
    # "Hello" then a pause is a turn of its own: its reply may start inside the window.
    next_reply = min((t for t, e in peer.log if e["type"] == "tts_start"
                      and e["response_id"] != tts["response_id"]), default=float("inf"))
    last_loud = max((h.at for h in window if h.dbfs > SILENT_DBFS and h.at < next_reply),
                    default=t_vad)
    assert last_loud - t_vad < 0.15, f"audio went on {1000 * (last_loud - t_vad):.0f} ms"
    assert window[-1].at - t_vad > 0.4  # frames kept coming: silence, not a stalled track


async def test_data_channel_messages_and_auth(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"},
                         webrtc={"host_candidates": ["lo"], "output_sample_rate": 24000})
    async with httpx.AsyncClient(base_url=gw.base) as http:
        refused = await http.post(OFFER, json={"sdp": "v=0\r\n", "type": "offer"})
        assert refused.status_code == 401, refused.text
        bad = await http.post(OFFER, json={"sdp": "v=0\r\n", "type": "answer"})
        assert bad.status_code == 400
        db = Database.from_config(gw.cfg)
        _, key = await KeyStore(db).create("webrtc")
        await db.close()
        tokens = []
        for _ in range(2):
            minted = await http.post("/api/get-access-token", json={"voiceId": "joe"},
                                     headers={"Authorization": f"Bearer {key}"})
            assert minted.status_code == 200, minted.text
            tokens.append(minted.json())
    token, bearer = tokens
    other = Peer()  # a session token as Bearer works too
    try:
        auth = {"Authorization": f"Bearer {bearer['token']}"}
        answer = await other.connect(gw.base, headers=auth)
        assert answer["session_id"] == bearer["sessionId"]
    finally:
        await other.close()
    peer = Peer()
    try:
        answer = await peer.connect(gw.base, params={"token": token["token"]})
        assert answer["session_id"] == token["sessionId"]
        hosts = [addr for addr, _ in candidate_hosts(answer["sdp"])]  # interface "lo"
        assert "127.0.0.1" in hosts and all(ipaddress.ip_address(a).is_loopback for a in hosts)
        peer.send({"type": "ping"})
        await peer.wait("pong")
        peer.send({"type": "nonsense"})
        error = await peer.wait("error")
        assert error["code"] == "INVALID_REQUEST"
        peer.send({"type": "text", "text": "What is the gateway?"})
        reply = await peer.wait("agent_response")
        assert "voice server" in reply["text"]
        tts = await peer.wait("tts_start")
        assert (tts["encoding"], tts["sample_rate"]) == ("opus", 48000)
        # A 24 kHz session output reaches the peer as 48 kHz Opus, audible.
        await wait_until(lambda: peer.audible_ms(peer.at("tts_start")) > 200)
        assert {h.rate for h in peer.heard} == {RATE}
        peer.send({"type": "interrupt"})
        await peer.wait("interrupted", response_id=reply["response_id"])
    finally:
        await peer.close()
    async with httpx.AsyncClient(base_url=gw.base) as http:  # a token opens one session
        again = await http.post(OFFER, json={"sdp": "v=0\r\n", "type": "offer",
                                             "token": token["token"]})
    assert again.status_code == 401 and "already used" in again.text


async def test_unconnected_offers_are_bounded_and_dropped(gateway_factory) -> None:
    gw = gateway_factory(webrtc={"host_candidates": ["127.0.0.1"], "max_pending_offers": 1,
                                 "connect_timeout_s": 1})
    hub_peers = lambda: gw.app.state.webrtc.peers  # noqa: E731
    first, second = Peer(), Peer()
    try:
        with allowed_hosts(["127.0.0.1"]):
            await first.pc.setLocalDescription(await first.pc.createOffer())
            await second.pc.setLocalDescription(await second.pc.createOffer())
        async with httpx.AsyncClient(base_url=gw.base) as http:
            for sdp in ("v=0\r\n", "v=0\r\nm=foo\r\n", "v=0\r\n" + "a=x\r\n" * 9000):
                bad = await http.post(OFFER, json={"sdp": sdp, "type": "offer"})
                assert bad.status_code in (400, 413), bad.text
            good = first.pc.localDescription.sdp
            for hostile, field in ((good + "a=x\x00\r\n", "sdp"), (good + "\ud800", "sdp"),
                                   ("a" * 80, "assistant_id"), ("tok en", "token")):
                body = ({"sdp": hostile} if field == "sdp" else {"sdp": good, field: hostile})
                raw = json.dumps({**body, "type": "offer"})  # escapes, as a client sends them
                bad = await http.post(OFFER, content=raw,
                                      headers={"content-type": "application/json"})
                assert bad.status_code == 400, bad.text
                assert bad.json()["error"]["code"] == "INVALID_REQUEST"
                assert field in bad.json()["error"]["message"]
            assert gw.app.state.webrtc.pending == 0 and gw.app.state.sessions.active == 0
            # Answered, but the client never applies the answer: it stays pending.
            one = await http.post(OFFER, json={"sdp": first.pc.localDescription.sdp,
                                               "type": "offer"})
            assert one.status_code == 200
            busy = await http.post(OFFER, json={"sdp": second.pc.localDescription.sdp,
                                                "type": "offer"})
            assert busy.status_code == 503 and busy.headers["retry-after"]
        # The place is given back when the dropped peer's clean-up has run, just after
        # the hub forgets it (CI once read active == 1 in between).
        await wait_until(lambda: not hub_peers() and gw.app.state.webrtc.pending == 0
                         and gw.app.state.sessions.active == 0, 5)
        assert not gw.app.state.sessions.live
        await second.connect(gw.base)  # room again
        await second.wait("session_started")
    finally:
        await first.close()
        await second.close()


async def test_shutdown_closes_the_peer_connection(gateway_factory) -> None:
    gw = gateway_factory(**LOOPBACK)
    peer = Peer()
    try:
        await peer.connect(gw.base)
        await peer.wait("session_started")
        await asyncio.to_thread(gw.stop)
        await wait_until(lambda: peer.pc.connectionState in ("closed", "failed")
                         or peer.channel.readyState == "closed", 10)
        assert not gw.app.state.sessions.live
    finally:
        await peer.close()
