"""OpenAI-Realtime-compatible endpoint, driven by the OFFICIAL ``openai`` package's realtime
client (``AsyncOpenAI(base_url=…/v1).realtime.connect``) with real speech over a real
socket. Only the base URL points at the gateway. Every server event a test reads is
validated against the SDK's own pydantic models (``RealtimeServerEvent``), strictly: the
client itself only constructs them unchecked."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter, ValidationError
from voice_client import silence, wav

from gateway.audio import pcm
from gateway.store.db import Database
from gateway.store.keys import KeyStore

RATE = 24000
CHUNK_MS = 40
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


async def api_key(gw: Any) -> str:
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("realtime")
    await db.close()
    return key


def speech(name: str, rate: int = RATE, tail_ms: int = 900) -> bytes:
    """A test WAV (16 kHz) resampled to ``rate``, with silence after it."""
    return pcm.resample(wav(name) + silence(tail_ms), 16000, rate)


def client(gw: Any, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{gw.base}/v1", api_key=key)


async def connect(gw: Any, model: str = "gpt-realtime") -> Any:
    """The official client's connection manager, with a fresh API key."""
    return client(gw, await api_key(gw)).realtime.connect(model=model)


class Recorder:
    """Reads every server event (validated into the SDK's models) with its arrival time;
    ``wait`` fails once any event did not validate."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.log: list[tuple[float, Any]] = []
        self.invalid: list[str] = []
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.conn.recv_bytes()
                try:
                    event = SERVER_EVENT.validate_json(raw)
                except ValidationError as exc:
                    self.invalid.append(f"{raw[:200]!r}: {exc}"[:2000])
                    event = self.conn.parse_event(raw)
                self.log.append((time.monotonic(), event))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def kinds(self) -> set[str]:
        return {e.type for _, e in self.log}

    def of(self, kind: str) -> list[Any]:
        return [e for _, e in self.log if e.type == kind]

    def at(self, event: Any) -> float:
        return next(t for t, e in self.log if e is event)

    def types(self) -> list[str]:
        return [e.type for _, e in self.log if not e.type.endswith(".delta")]

    async def wait(self, kind: str, count: int = 1, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            assert not self.invalid, self.invalid
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError(f"no {kind} (#{count}) within {timeout}s: {self.types()}")
            await asyncio.sleep(0.01)
        assert not self.invalid, self.invalid
        return self.of(kind)[count - 1]

    async def speak(self, audio: bytes, encoding: str = "pcm_s16le", rate: int = RATE) -> None:
        """Append audio in real time, CHUNK_MS per event, as a microphone would."""
        step = rate * CHUNK_MS // 1000 * 2
        data = pcm.encode(audio, encoding)
        if encoding != "pcm_s16le":
            step //= 2
        start = time.monotonic()
        for i, off in enumerate(range(0, len(data), step)):
            delay = start + i * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.conn.input_audio_buffer.append(
                audio=base64.b64encode(data[off: off + step]).decode())

    def audio(self, response_id: str, encoding: str = "pcm_s16le") -> bytes:
        return b"".join(pcm.decode(base64.b64decode(e.delta), encoding)
                        for e in self.of("response.output_audio.delta")
                        if e.response_id == response_id)

    def text(self, kind: str, response_id: str) -> str:
        return "".join(e.delta for e in self.of(kind) if e.response_id == response_id)


VAD_SESSION = {
    "type": "realtime",
    "instructions": "You are a helpful voice assistant.",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000},
                  "transcription": {"model": "whisper-1"},
                  "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                     "prefix_padding_ms": 300, "silence_duration_ms": 500}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}


async def test_server_vad_turn(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    async with client(gw, await api_key(gw)).realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn)
        created = await rec.wait("session.created")
        assert created.session.model == "gpt-realtime" and created.session.id.startswith("sess_")
        await conn.session.update(session=VAD_SESSION)
        updated = await rec.wait("session.updated")
        vad = updated.session.audio.input.turn_detection
        assert (vad.type, vad.silence_duration_ms, vad.prefix_padding_ms) == ("server_vad", 500,
                                                                              300)
        await rec.speak(speech("what_is_the_gateway.wav"))
        done = await rec.wait("response.done")
        history = gw.app.state.sessions.history_of(created.session.id)
        # The listener heard only the first second: the history keeps only that.
        await conn.conversation.item.truncate(item_id=done.response.output[0].id,
                                              content_index=0, audio_end_ms=1000)
        await rec.wait("conversation.item.truncated")
        cut = gw.app.state.sessions.history_of(created.session.id)
    started = await rec.wait("input_audio_buffer.speech_started")
    stopped = await rec.wait("input_audio_buffer.speech_stopped")
    committed = await rec.wait("input_audio_buffer.committed")
    heard = await rec.wait("conversation.item.input_audio_transcription.completed")
    assert started.item_id == stopped.item_id == committed.item_id == heard.item_id
    assert "gateway" in heard.transcript.lower()
    assert done.response.status == "completed" and done.response.usage.output_tokens > 0
    rid = done.response.id
    assert rid == (await rec.wait("response.created")).response.id
    out = done.response.output[0]
    assert out.role == "assistant" and out.content[0].type == "output_audio"
    transcript = rec.text("response.output_audio_transcript.delta", rid)
    assert "voice server" in transcript
    assert (await rec.wait("response.output_audio_transcript.done")).transcript == \
        transcript.strip() == out.content[0].transcript
    audio = rec.audio(rid)
    deltas = [e for e in rec.of("response.output_audio.delta") if e.response_id == rid]
    sizes = [len(base64.b64decode(e.delta)) for e in deltas]
    # 20 ms at 24 kHz, but for the last of each spoken segment (the first phrase, the rest).
    assert all(n <= 960 for n in sizes) and sum(n < 960 for n in sizes) <= 2, sizes
    assert pcm.duration_ms(len(audio), RATE) > 1500 and pcm.rms_dbfs(audio) > -35
    order = rec.types()
    for a, b in [("response.created", "response.output_item.added"),
                 ("response.content_part.added", "response.output_audio.done"),
                 ("response.output_audio.done", "response.content_part.done"),
                 ("response.output_item.done", "response.done"),
                 ("response.done", "rate_limits.updated")]:
        assert order.index(a) < order.index(b), (a, b, order)
    limits = (await rec.wait("rate_limits.updated")).rate_limits
    assert limits[0].name == "requests" and limits[0].limit == 30  # sessions a minute
    assert history[0].role == "user" and "gateway" in history[0].content.lower()
    assert "voice server" in history[1].content
    assert cut[0] == history[0] and cut[1].role == "assistant"
    assert 0 < len(cut[1].content.split()) <= 4
    assert history[1].content.startswith(cut[1].content)


async def test_manual_turns(gateway) -> None:
    """turn_detection null: the client commits the buffer and asks for the response."""
    async with await connect(gateway, "m") as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "whisper-1"}}}})
        assert (await rec.wait("session.updated")).session.audio.input.turn_detection is None
        audio = speech("what_is_the_gateway.wav")
        step = RATE // 10 * 2  # 100 ms, as fast as the client can send
        for off in range(0, len(audio), step):
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(audio[off: off + step]).decode())
        await conn.input_audio_buffer.commit()
        heard = await rec.wait("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(0.3)
        assert not rec.of("response.created")  # nothing until the client asks
        await conn.response.create()
        done = await rec.wait("response.done")
        # Too short a buffer is refused, and the session goes on.
        await conn.input_audio_buffer.append(audio=base64.b64encode(bytes(960)).decode())
        await conn.input_audio_buffer.commit()
        error = await rec.wait("error")
    assert "gateway" in heard.transcript.lower()
    assert heard.item_id == (await rec.wait("input_audio_buffer.committed")).item_id
    assert not rec.of("input_audio_buffer.speech_started")
    assert done.response.status == "completed"
    assert "voice server" in rec.text("response.output_audio_transcript.delta", done.response.id)
    assert pcm.rms_dbfs(rec.audio(done.response.id)) > -35
    assert error.error.code == "input_audio_buffer_commit_empty"


async def test_text_conversation(gateway) -> None:
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await rec.wait("session.updated")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]})
        added = await rec.wait("conversation.item.added")
        await conn.response.create()
        done = await rec.wait("response.done")
        # Per response: audio this time, in a text session.
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]})
        await conn.response.create(response={"output_modalities": ["audio"]})
        spoken = await rec.wait("response.done", count=2)
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Never mind."}]})
        extra = await rec.wait("conversation.item.added", count=5)
        await conn.conversation.item.delete(item_id=extra.item.id)
        deleted = await rec.wait("conversation.item.deleted")
        sid = (await rec.wait("session.created")).session.id
        history = gateway.app.state.sessions.history_of(sid)
    assert added.item.role == "user" and added.item.content[0].text == "What is the gateway?"
    assert done.response.status == "completed"
    assert done.response.output_modalities == ["text"]
    assert done.response.output[0].content[0].type == "output_text"
    text = rec.text("response.output_text.delta", done.response.id)
    assert "voice server" in text
    assert (await rec.wait("response.output_text.done")).text == text.strip()
    assert not rec.audio(done.response.id)
    assert spoken.response.status == "completed"
    assert pcm.rms_dbfs(rec.audio(spoken.response.id)) > -35
    assert deleted.item_id == extra.item.id
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]


async def test_server_vad_without_auto_response(gateway) -> None:
    """create_response false: VAD events and the transcript, but the client asks."""
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        created = await rec.wait("session.created")
        session = json.loads(json.dumps(VAD_SESSION))
        session["audio"]["input"]["turn_detection"]["create_response"] = False
        await conn.session.update(session=session)
        await rec.wait("session.updated")
        await rec.speak(speech("what_is_the_gateway.wav"))
        heard = await rec.wait("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(0.3)
        assert not rec.of("response.created")
        await conn.response.create()
        done = await rec.wait("response.done")
        history = gateway.app.state.sessions.history_of(created.session.id)
    assert "gateway" in heard.transcript.lower() and done.response.status == "completed"
    assert [m.role for m in history] == ["user", "assistant"]
    assert "voice server" in history[1].content


async def test_barge_in_cancels_and_truncate_is_honoured(gateway) -> None:
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        created = await rec.wait("session.created")
        await conn.session.update(session=VAD_SESSION)
        await rec.wait("session.updated")
        await rec.speak(speech("tell_me_about_barge_in.wav"))
        first = await rec.wait("response.output_audio.delta")
        await rec.wait("response.output_audio.delta", count=60)  # 1.2 s of the reply
        talk = asyncio.create_task(rec.speak(speech("hello_weather.wav")))
        started = await rec.wait("input_audio_buffer.speech_started", count=2)
        done = await rec.wait("response.done")
        # The client played the audio as it came (paced at real time by the server).
        played_ms = int((rec.at(started) - rec.at(first)) * 1000)
        await conn.conversation.item.truncate(item_id=first.item_id, content_index=0,
                                              audio_end_ms=played_ms)
        truncated = await rec.wait("conversation.item.truncated")
        history = gateway.app.state.sessions.history_of(created.session.id)
        await talk
        await rec.wait("response.done", count=2)
    rid = done.response.id
    assert done.response.status == "cancelled"
    assert done.response.status_details.reason == "turn_detected"
    assert rec.at(done) - rec.at(started) < 0.15
    late = [t for t, e in rec.log if e.type == "response.output_audio.delta"
            and e.response_id == rid and t > rec.at(done)]
    assert not late
    assert truncated.item_id == first.item_id and truncated.audio_end_ms == played_ms
    full = rec.text("response.output_audio_transcript.delta", rid).split()
    said = [m.content for m in history if m.role == "assistant"]
    assert len(said) == 1
    kept = said[0].split()
    assert 0 < len(kept) < len(full) and kept == full[: len(kept)]
    # What was heard: about 2.5 words a second of audio, give or take a sentence.
    assert len(kept) < played_ms / 1000 * 4 + 8


async def test_mulaw_audio(gateway) -> None:
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        session = json.loads(json.dumps(VAD_SESSION))
        session["audio"]["input"]["format"] = {"type": "audio/pcmu"}
        session["audio"]["output"]["format"] = {"type": "audio/pcmu"}
        await conn.session.update(session=session)
        updated = await rec.wait("session.updated")
        assert updated.session.audio.output.format.type == "audio/pcmu"
        await rec.speak(speech("what_is_the_gateway.wav", rate=8000), "mulaw", rate=8000)
        done = await rec.wait("response.done")
    heard = await rec.wait("conversation.item.input_audio_transcription.completed")
    assert "gateway" in heard.transcript.lower()
    deltas = [e for e in rec.of("response.output_audio.delta")
              if e.response_id == done.response.id]
    sizes = [len(base64.b64decode(e.delta)) for e in deltas]
    # 20 ms of μ-law, but for the last of each spoken segment (the first phrase, the rest).
    assert all(n <= 160 for n in sizes) and sum(n < 160 for n in sizes) <= 2, sizes
    audio = rec.audio(done.response.id, "mulaw")
    assert pcm.duration_ms(len(audio), 8000) > 1500 and pcm.rms_dbfs(audio) > -35


async def test_client_secret_opens_one_session(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    key = await api_key(gw)
    secret = await client(gw, key).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "realtime", "instructions": "Be brief.", "output_modalities": ["text"]})
    assert secret.value.startswith("ek_") and 100 < secret.expires_at - time.time() <= 121
    assert secret.session.instructions == "Be brief."
    browser = client(gw, secret.value)
    async with browser.realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn)
        created = await rec.wait("session.created")
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]})
        await conn.response.create()
        done = await rec.wait("response.done")
    assert created.session.instructions == "Be brief."
    assert created.session.output_modalities == ["text"]
    assert done.response.status == "completed"
    async with browser.realtime.connect(model="gpt-realtime") as conn:  # the same secret again
        rec = Recorder(conn)
        refused = await rec.wait("error")
        await asyncio.wait_for(rec.closed.wait(), 5)
    assert refused.error.code == "invalid_api_key" and "already used" in refused.error.message
    async with httpx.AsyncClient(base_url=gw.base) as http:
        beta = await http.post("/v1/realtime/sessions", json={"model": "gpt-4o-realtime-preview",
                               "voice": "alloy", "input_audio_format": "g711_ulaw"},
                               headers={"Authorization": f"Bearer {key}"})
        anonymous = await http.post("/v1/realtime/client_secrets", json={})
        bad = await http.post("/v1/realtime/client_secrets", headers={
            "Authorization": f"Bearer {key}"}, json={"session": {
                "type": "realtime", "audio": {"input": {"format": {"type": "audio/flac"}}}}})
    assert beta.status_code == 200
    body = beta.json()
    assert body["client_secret"]["value"].startswith("ek_")
    assert body["input_audio_format"] == "g711_ulaw" and body["object"] == "realtime.session"
    assert anonymous.status_code == 401 and anonymous.json()["error"]["message"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == \
        "session.audio.input.format"


async def test_bad_events_are_errors_and_the_session_goes_on(gateway) -> None:
    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")
        await conn.send_raw("this is not json")
        await conn.send_raw(json.dumps({"type": "no.such.event", "event_id": "evt_1"}))
        await conn.send_raw(json.dumps({"type": "input_audio_buffer.append",
                                        "audio": "%%%", "event_id": "evt_2"}))
        await conn.send_raw(json.dumps({"type": "session.update", "event_id": "evt_3",
                                        "session": {"audio": {"input": {"turn_detection": {
                                            "type": "server_vad", "threshold": 7}}}}}))
        await conn.conversation.item.truncate(item_id="item_nope", content_index=0,
                                              audio_end_ms=10, event_id="evt_4")
        await conn.response.cancel(event_id="evt_5")
        await conn.send_raw(b"\x00\x01")
        errors = [await rec.wait("error", count=n) for n in range(1, 8)]
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]})
        await conn.response.create()
        done = await rec.wait("response.done")
    codes = [(e.error.code, e.error.event_id) for e in errors]
    assert codes[:6] == [("invalid_json", None), ("invalid_event", "evt_1"),
                         ("invalid_value", "evt_2"), ("invalid_value", "evt_3"),
                         ("invalid_value", "evt_4"), ("response_cancel_not_active", "evt_5")]
    assert errors[3].error.param == "session.audio.input.turn_detection.threshold"
    assert codes[6][0] == "invalid_event"
    assert not rec.of("session.updated")  # the bad update changed nothing
    assert done.response.status == "completed"


async def test_browser_subprotocol_auth_and_beta_names(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    key = await api_key(gw)
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-4o-realtime-preview"
    protocols = ["realtime", f"openai-insecure-api-key.{key}", "openai-beta.realtime-v1"]
    async with websockets.connect(url, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["input_audio_format"] == "pcm16"  # the beta shape
        assert created["session"]["model"] == "gpt-4o-realtime-preview"
        await ws.send(json.dumps({"type": "session.update", "session": {"modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the gateway?"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        kinds: list[str] = []
        while "response.done" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["type"])
    assert "conversation.item.created" in kinds and "response.text.delta" in kinds
    assert not any(k.startswith("response.output_") and "delta" in k for k in kinds)
    async with websockets.connect(url) as ws:  # no credential at all
        refused = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert refused["type"] == "error" and refused["error"]["code"] == "missing_api_key"
    assert ws.close_code == 4401


async def test_session_rate_limit(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_voice": "1/minute"})
    key = await api_key(gw)
    async with client(gw, key).realtime.connect(model="gpt-realtime") as conn:
        assert (await Recorder(conn).wait("session.created")).type == "session.created"
    async with client(gw, key).realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn)
        refused = await rec.wait("error")
        await asyncio.wait_for(rec.closed.wait(), 5)
    assert refused.error.type == "rate_limit_error"
    assert refused.error.code == "rate_limit_exceeded"


async def test_appends_on_the_fast_path_keep_the_idle_timer_alive(gateway_factory,
                                                                  monkeypatch) -> None:
    """Appends the text sink takes never wake the reader: the idle timer counts them all
    the same, and closes the session once they stop."""
    from gateway.protocol import realtime as rt

    taken: list[bool] = []
    fast = rt.RealtimeParser.append_fast

    def counting(self: rt.RealtimeParser, frame: bytes) -> rt.AudioAppend | None:
        event = fast(self, frame)
        taken.append(event is not None)
        return event

    monkeypatch.setattr(rt.RealtimeParser, "append_fast", counting)
    gw = gateway_factory(server={"idle_timeout_s": 1.0})
    key = await api_key(gw)
    url = f"ws://127.0.0.1:{gw.cfg.server.port}/v1/realtime?model=gpt-realtime"
    append = json.dumps({"type": "input_audio_buffer.append",
                         "audio": base64.b64encode(bytes(960)).decode()})  # 20 ms, 24 kHz
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {key}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            await ws.send(append)
            await asyncio.sleep(0.02)
        assert ws.close_code is None  # 2.5 s of appends through the sink: not idle
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4408
    assert len(taken) > 50 and all(taken)
