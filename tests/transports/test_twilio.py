"""Telephony: a Twilio-shaped client (μ-law 8 kHz JSON frames) over a real WebSocket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from voice_client import silence, wav

from gateway.audio import pcm
from gateway.protocol import twilio as tw
from gateway.store.db import Database
from gateway.store.keys import KeyStore

FRAME_8K = 160  # μ-law bytes per 20 ms


async def api_key(gw) -> str:
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("telephony")
    await db.close()
    return key


async def twiml_token(gw, key: str) -> str:
    async with httpx.AsyncClient(base_url=gw.base) as http:
        resp = await http.post("/api/v1/voice/twilio/twiml", auth=("twilio", key))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    body = resp.text
    assert "<Connect><Stream url=" in body and "/api/v1/voice/twilio" in body
    start = body.index('name="token" value="') + len('name="token" value="')
    return body[start : body.index('"', start)]


class PhoneCall:
    """Plays Twilio's part: sends media in real time, echoes marks as they 'play'."""

    def __init__(self, ws: Any, stream_sid: str = "MZ0001") -> None:
        self.ws = ws
        self.sid = stream_sid
        self.log: list[tuple[float, dict[str, Any]]] = []
        self.seq = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.log.append((time.monotonic(), msg))
                if msg["event"] == "mark":  # Twilio echoes a mark once played
                    await self.send("mark", mark=msg["mark"])
        except websockets.ConnectionClosed:
            pass

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"event": event, "sequenceNumber": str(self.seq),
                                       "streamSid": self.sid, **body}))

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                       "version": "1.0.0"}))
        await self.send("start", start={
            "accountSid": "AC1", "streamSid": self.sid, "callSid": "CA1",
            "tracks": ["inbound"], "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})

    async def speak(self, pcm16k: bytes, speed: float = 2.0) -> None:
        ulaw = pcm.mulaw_encode(pcm.resample(pcm16k, 16000, 8000))
        t0 = time.monotonic()
        for i, off in enumerate(range(0, len(ulaw), FRAME_8K)):
            delay = t0 + i * 0.02 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = base64.b64encode(ulaw[off : off + FRAME_8K]).decode()
            await self.send("media", media={"track": "inbound", "chunk": str(i + 1),
                                            "timestamp": str(i * 20), "payload": payload})

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.log if m["event"] == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events(kind)) < count:
            assert time.monotonic() < deadline, f"no {kind}: {[m['event'] for _, m in self.log]}"
            await asyncio.sleep(0.02)

    def reply_audio(self) -> bytes:
        return b"".join(pcm.mulaw_decode(base64.b64decode(m["media"]["payload"]))
                        for m in self.events("media"))


def stream_url(gw) -> str:
    return f"ws://127.0.0.1:{gw.cfg.server.port}/api/v1/voice/twilio"


async def test_call_turn_with_marks(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    token = await twiml_token(gw, await api_key(gw))
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({"token": token})
        await call.speak(wav("what_is_the_gateway.wav") + silence(700))
        # The reply's last mark (each spoken segment has one; the reply ends with ":end").
        deadline = time.monotonic() + 60
        while not any(m["mark"]["name"].endswith(":end") for m in call.events("mark")):
            assert time.monotonic() < deadline, [m["event"] for _, m in call.log]
            await asyncio.sleep(0.02)
        sid = next(iter(gw.app.state.sessions.live))
        while len(gw.app.state.sessions.history_of(sid)) < 2:  # stored once heard
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        history = gw.app.state.sessions.history_of(sid)
        await call.send("stop", stop={"accountSid": "AC1", "callSid": "CA1"})
    media = call.events("media")
    assert media and all(m["streamSid"] == "MZ0001" for m in media)
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in media]
    # 20 ms of mu-law, but for the last of each spoken segment (each ends with a mark).
    segments = len(call.events("mark"))
    assert all(n <= FRAME_8K for n in sizes) and sum(n < FRAME_8K for n in sizes) <= max(
        1, segments), sizes
    audio = call.reply_audio()
    assert pcm.rms_dbfs(audio) > -35
    assert pcm.duration_ms(len(audio), 8000) > 1000
    marks = [m["mark"]["name"] for m in call.events("mark")]
    assert marks[-1].endswith(":end") or any(n.endswith(":0") for n in marks)
    assert "gateway" in history[0].content.lower()  # what the caller said
    assert "voice server" in history[1].content


async def test_barge_in_sends_clear_and_stops_media(gateway) -> None:
    async with websockets.connect(stream_url(gateway)) as ws:
        call = PhoneCall(ws)
        await call.start({})
        await call.speak(wav("tell_me_about_barge_in.wav") + silence(700))
        await call.wait("media", count=40)
        await call.speak(wav("hello_weather.wav") + silence(700), speed=1.0)
        await call.wait("clear")
        await asyncio.sleep(0.3)
    t_clear = next(t for t, m in call.log if m["event"] == "clear")
    after = [t for t, m in call.log if m["event"] == "media" and t > t_clear]
    # Nothing of the interrupted reply after the clear: the next media is a new reply,
    # which needs STT + LLM + TTS first (well over 150 ms).
    assert not after or after[0] - t_clear > 0.15


async def test_dtmf_reaches_the_llm_as_user_input(gateway_factory) -> None:
    class Echo:
        name = "echo"

        def generate(self, request):
            yield f"You said: {request.question}"

    gw = gateway_factory(providers={"llm": Echo()})
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({})
        await asyncio.sleep(0.2)
        for digit in "42#":
            await call.send("dtmf", dtmf={"track": "inbound_track", "digit": digit})
        await call.wait("media", count=5)
        sid = next(iter(gw.app.state.sessions.live))
        await asyncio.sleep(0.2)
        history = gw.app.state.sessions.history_of(sid)
    assert "4 2" in history[0].content


async def test_telnyx_dialect() -> None:
    state = tw.CallState()
    start = state.receive(json.dumps({
        "event": "start", "stream_id": "st1",
        "start": {"call_control_id": "cc1", "media_format": {"encoding": "PCMU",
                                                              "sample_rate": 8000}}}))
    assert isinstance(start, tw.CallStart) and start.dialect == "telnyx"
    assert json.loads(state.clear()) == {"event": "clear", "stream_id": "st1"}
    audio = state.receive(json.dumps({"event": "media", "media": {
        "payload": base64.b64encode(b"\xff" * 160).decode()}}))
    assert isinstance(audio, tw.CallAudio) and len(audio.pcm) == 320
    assert np.all(np.frombuffer(audio.pcm, "<i2") == 0)


async def test_bad_frames_do_not_end_the_call() -> None:
    state = tw.CallState()
    assert isinstance(state.receive("not json"), tw.CallError)
    assert isinstance(state.receive('{"event":"media","media":{"payload":"AA=="}}'),
                      tw.CallError)  # before start
    assert isinstance(state.receive('{"event":"connected"}'), tw.Ignored)


def _start(**custom: Any) -> str:
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        "customParameters": custom}})


async def test_hostile_custom_parameters_are_left_out_and_the_call_goes_on() -> None:
    start = tw.CallState().receive(_start(
        token="eyJ.eyJ.sig", assistant_id="default", voice="joe\x00", lang="en",
        note="\ud800", big="x" * 5000))
    assert isinstance(start, tw.CallStart)
    assert start.custom == {"token": "eyJ.eyJ.sig", "assistant_id": "default", "lang": "en"}
    assert start.dropped == 3


@pytest.mark.parametrize("custom", [
    {"assistant_id": "a" * 80}, {"assistant_id": "def\x00ault"}, {"token": "tok en"},
    {"token": "t" * 5000}, {f"k{i}": "v" for i in range(33)}])
async def test_a_malformed_credential_or_assistant_refuses_the_start(
        custom: dict[str, str]) -> None:
    state = tw.CallState()
    refused = state.receive(_start(**custom))
    assert isinstance(refused, tw.CallError) and "customParameters" in refused.message
    assert state.start is None


@pytest.mark.parametrize(("event", "body"), [
    ("dtmf", {"digit": "1\x00" * 3000}), ("dtmf", {"digit": "12"}), ("dtmf", {"digit": None}),
    ("mark", {"name": "m" * 129}), ("mark", {"name": "\ud800"}), ("mark", {"name": 7})])
async def test_bad_dtmf_and_marks_are_errors_not_user_text(event: str,
                                                          body: dict[str, Any]) -> None:
    state = tw.CallState()
    assert isinstance(state.receive(_start()), tw.CallStart)
    assert isinstance(state.receive(json.dumps({"event": event, event: body})), tw.CallError)
    assert state.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}})) == tw.Dtmf("#")
    assert state.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": 5}})) == tw.Dtmf("5")


async def test_shutdown_deadline_clears_the_reply_and_ends_the_call(gateway_factory) -> None:
    """At the drain's deadline a call still hearing a reply gets ``clear`` (the phone
    drops the audio it holds), then the stream is closed (1012): the call's TwiML goes on
    after <Connect> instead of hearing a reply cut off by a dead socket."""
    gw = gateway_factory(server={"allow_anonymous": "false", "drain_timeout_s": 1.0})
    token = await twiml_token(gw, await api_key(gw))
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({"token": token})
        await call.speak(wav("what_is_the_gateway.wav") + silence(700))
        await call.wait("media")
        stopped = time.monotonic()
        gw.server.should_exit = True  # what SIGTERM does
        await asyncio.wait_for(call.reader, 15)
        assert ws.close_code == 1012 and time.monotonic() - stopped >= 0.9
    kinds = [m["event"] for _, m in call.log]
    assert "clear" in kinds and kinds.index("clear") > kinds.index("media"), kinds


async def test_media_on_the_fast_path_keeps_the_idle_timer_alive(gateway_factory,
                                                                 monkeypatch) -> None:
    """Media the text sink takes never wakes the reader: the call's idle timer counts it
    all the same, and closes the call (4408) once the media stops."""
    taken: list[int] = []
    fast = tw.CallState.media_fast

    def counting(self: tw.CallState, frame: bytes) -> tw.CallAudio | None:
        audio = fast(self, frame)
        taken.append(audio is not None)
        return audio

    monkeypatch.setattr(tw.CallState, "media_fast", counting)
    gw = gateway_factory(server={"idle_timeout_s": 1.0})
    async with websockets.connect(stream_url(gw)) as ws:
        call = PhoneCall(ws)
        await call.start({})
        payload = base64.b64encode(b"\xff" * FRAME_8K).decode()  # μ-law silence
        end, i = time.monotonic() + 2.5, 0
        while time.monotonic() < end:  # as Twilio writes it: compact, this order
            i += 1
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(i), "media": {
                "track": "inbound", "chunk": str(i), "timestamp": str(20 * i),
                "payload": payload}, "streamSid": call.sid}, separators=(",", ":")))
            await asyncio.sleep(0.02)
        assert ws.close_code is None  # 2.5 s of media through the sink: not idle
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 4408
    assert sum(taken) > 0.9 * i  # (a few may queue behind the start while it is read)
