"""End to end over a real WebSocket, with real speech and the embedded models."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from voice_client import VoiceClient, silence, wav

from gateway.audio import pcm
from gateway.providers.base import ProviderError


async def ask(gateway, name: str = "what_is_the_gateway.wav", speed: float = 3.0,
              **start) -> VoiceClient:
    client = await VoiceClient.connect(gateway.ws_url)
    if start:
        await client.send_json({"type": "start", **start})
    await client.wait_for("session_started")
    await client.stream(wav(name) + silence(600), speed=speed)
    return client


async def test_whole_turn_with_real_speech(gateway) -> None:
    client = await ask(gateway)
    end = await client.wait_for("stream_end", timeout=60)
    rid = end["response_id"]
    await client.close()

    finals = client.events("transcription")
    final = [e for e in finals if e["final"]][0]
    assert "gateway" in final["text"].lower()
    tokens = [e for e in client.events("token") if e["response_id"] == rid]
    assert len(tokens) > 3
    reply = client.events("agent_response")[0]
    assert reply["text"] == "".join(t["text"] for t in tokens).strip()
    assert "voice server" in reply["text"]

    types = client.types()
    order = ["speech_started", "speech_stopped", "stream_start", "token", "tts_start",
             "<audio>", "tts_complete", "stream_end"]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    assert types.index("agent_response") < types.index("stream_end")

    started = client.events("session_started")[0]
    rate = started["output"]["sample_rate"]
    tts_start = client.events("tts_start")[0]
    assert tts_start["sample_rate"] == rate == 24000
    audio = client.audio_between("tts_start", "tts_complete", rid)
    complete = client.events("tts_complete")[0]
    assert complete["interrupted"] is False
    duration = pcm.duration_ms(len(audio), rate)
    assert abs(duration - complete["duration_ms"]) <= 25
    assert duration > 1000
    assert pcm.rms_dbfs(audio) > -35  # speech, not silence
    samples = np.frombuffer(audio, dtype="<i2")
    # Real speech has pauses and loud parts: the level varies a lot across 50 ms windows.
    windows = samples[: len(samples) // 1200 * 1200].reshape(-1, 1200).astype(float)
    levels = np.sqrt((windows**2).mean(axis=1))
    assert levels.max() > 10 * max(levels.min(), 1.0)

    # Lip-sync for avatars: mouth shapes and word timings within the reply audio.
    cues = [c for e in client.events("viseme") for c in e["visemes"]]
    assert cues and {c["viseme"] for c in cues} - {"sil"}
    offsets = [c["offset_ms"] for c in cues]
    assert offsets == sorted(offsets) and offsets[-1] <= complete["duration_ms"] + 20
    words = [w["word"] for e in client.events("word_timing") for w in e["words"]]
    assert " ".join(words).lower().startswith("the gateway is a voice server")
    assert types.index("viseme") > types.index("tts_start")


async def test_reply_audio_is_paced_not_burst(gateway) -> None:
    client = await ask(gateway)
    end = await client.wait_for("stream_end", timeout=60)
    await client.close()
    rid = end["response_id"]
    chunks = [r for r in client.log if r.audio is not None]
    first, last = chunks[0].at, chunks[-1].at
    audio_ms = pcm.duration_ms(len(client.audio_between("tts_start", "tts_complete", rid)),
                               24000)
    # Sent at real time with <= 200 ms lead: the span of arrival is the audio length
    # minus the lead (give or take scheduling).
    assert (last - first) * 1000 >= audio_ms - 200 - 60


async def test_interim_transcriptions_while_speaking(gateway) -> None:
    client = await ask(gateway, "count_numbers.wav", speed=1.0)
    await client.wait_for("transcription", final=True, timeout=60)
    await client.close()
    interims = [e for e in client.events("transcription") if not e["final"]]
    assert interims, client.types()
    events = client.events("transcription")
    assert events[0]["final"] is False and events[-1]["final"] is True
    # Interim results come before the final one (while speaking, on an unloaded machine).
    assert max(i for i, e in enumerate(events) if not e["final"]) < len(events) - 1


async def test_typed_text_turn(gateway) -> None:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "How is the weather?"})
    await client.wait_for("stream_end", timeout=60)
    await client.close()
    assert "sunny" in client.events("agent_response")[0]["text"]


async def test_barge_in_stops_audio_and_truncates_history(gateway) -> None:
    client = await ask(gateway, "tell_me_about_barge_in.wav")
    start = await client.wait_for("tts_start", timeout=60)
    rid = start["response_id"]
    await asyncio.sleep(1.2)  # let part of the reply play
    barge = asyncio.create_task(client.stream(wav("hello_weather.wav") + silence(600)))
    interrupted = await client.wait_for("interrupted", timeout=30)
    assert interrupted["response_id"] == rid
    await barge
    await client.wait_for("stream_end", count=2, timeout=60)
    sid = client.events("session_started")[0]["session_id"]
    session_history = gateway.app.state.sessions.history_of(sid)
    await client.close()

    log = client.log
    i_int = next(i for i, r in enumerate(log) if r.event and r.event["type"] == "interrupted")
    i_speech = max(i for i, r in enumerate(log[:i_int])
                   if r.event and r.event["type"] == "speech_started")
    # The VAD decision (speech_started of the barge-in) and the stop come together:
    # no reply audio in between, and within 100 ms.
    assert not any(r.audio for r in log[i_speech:i_int])
    assert (log[i_int].at - log[i_speech].at) * 1000 < 100
    old_audio_after = [r for r in log[i_int:] if r.audio is not None]
    second_start = [e for e in client.events("tts_start") if e["response_id"] != rid]
    if old_audio_after:
        # any audio after the interruption belongs to the new reply
        i_new = next(i for i, r in enumerate(log)
                     if r.event and r.event["type"] == "tts_start" and r.event["response_id"]
                     != rid)
        assert i_new < i_int + next(i for i, r in enumerate(log[i_int:]) if r.audio)
    complete = [e for e in client.events("tts_complete") if e["response_id"] == rid][0]
    assert complete["interrupted"] is True
    assert 0 < complete["played_ms"] < complete["duration_ms"] + 1
    assert second_start, "the barge-in question got its own reply"

    full = [e for e in client.events("agent_response") if e["response_id"] == rid][0]["text"]
    heard = [m.content for m in session_history if m.role == "assistant"][0]
    assert heard and len(heard) < len(full)
    assert full.startswith(heard)


async def test_a_cough_does_not_interrupt(gateway) -> None:
    client = await ask(gateway, "tell_me_about_barge_in.wav")
    await client.wait_for("tts_start", timeout=60)
    await asyncio.sleep(0.5)
    speech = wav("hello_weather.wav")
    loud = int(np.argmax(np.abs(np.frombuffer(speech, dtype="<i2")) > 3000)) * 2
    cough = speech[loud : loud + 6400 - loud % 2]  # 200 ms of voice, under the 250 ms minimum
    await client.stream(cough + silence(600))
    complete = await client.wait_for("tts_complete", timeout=60)
    await client.close()
    assert complete["interrupted"] is False
    assert not client.events("interrupted")


async def test_client_interrupt_message(gateway) -> None:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "Tell me about barge-in."})
    await client.wait_for("tts_start", timeout=60)
    await asyncio.sleep(0.4)
    await client.send_json({"type": "interrupt"})
    await client.wait_for("interrupted", timeout=5)
    t0 = time.monotonic()
    await asyncio.sleep(0.3)
    await client.close()
    idx = max(i for i, r in enumerate(client.log) if r.event and r.event["type"] == "interrupted")
    assert not any(r.audio for r in client.log[idx:]), "audio after interrupted"
    assert t0 > 0


class FlakyLLM:
    """Fails its first call, then answers: a provider outage during one turn."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, request):
        self.calls += 1
        if self.calls == 1:
            raise ProviderError("upstream model unavailable")
        yield "Back again."


async def test_failing_provider_gives_error_and_session_goes_on(gateway_factory) -> None:
    gw = gateway_factory(providers={"llm": FlakyLLM()})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "first"})
    err = await client.wait_for("error", timeout=10)
    assert err["code"] == "PROVIDER_ERROR" and err["retryable"] is True
    await client.wait_for("stream_end", timeout=10)
    await client.send_json({"type": "text", "text": "second"})
    await client.wait_for("agent_response", timeout=10)
    await client.wait_for("stream_end", count=2, timeout=30)
    await client.close()
    assert client.events("agent_response")[0]["text"] == "Back again."
    assert "Traceback" not in err["message"]


@pytest.mark.postgres
async def test_voice_turns_are_stored_as_conversation_messages(gateway_factory) -> None:
    from gateway.store.conversations import list_messages
    from gateway.store.db import Database

    # One turn for "Hello? What is the weather like today?" (see test_barge_in_words).
    gateway = gateway_factory(turn={"pause_ms": 400})

    client = await ask(gateway, "tell_me_about_barge_in.wav")
    conv = client.events("session_started")[0]["conversation_id"]
    await client.wait_for("tts_start", timeout=60)
    await asyncio.sleep(1.0)
    await client.stream(wav("hello_weather.wav") + silence(600))
    await client.wait_for("interrupted", timeout=30)
    await client.wait_for("stream_end", count=2, timeout=60)
    await client.close()
    await asyncio.sleep(0.5)  # the writes run beside the audio path
    db = Database.from_config(gateway.cfg)
    async with db.session() as s:
        rows = await list_messages(s, conv, 50, 0)
    await db.close()
    messages = rows[0] if isinstance(rows, tuple) else rows
    roles = [m.role for m in messages]
    assert roles[:2] == ["user", "assistant"] and len(messages) >= 3
    first_reply = messages[1]
    assert first_reply.meta["interrupted"] is True
    assert len(first_reply.content) < len(first_reply.meta["full_reply"])
    assert set(first_reply.meta["latency_ms"]) == {"stt_ms", "first_token_ms", "first_audio_ms"}
    assert "weather" in messages[2].content.lower()


async def test_a_late_start_switches_the_reply_audio_to_mulaw(gateway) -> None:
    # The defaults apply after 0.5 s without a ``start``; one that comes later (still the
    # first message) changes the formats, the reply audio's encoding included.
    client = await VoiceClient.connect(gateway.ws_url)
    started = await client.wait_for("session_started")
    assert started["output"]["encoding"] == "pcm_s16le"
    await asyncio.sleep(0.8)
    await client.send_json({"type": "start", "encoding": "mulaw", "sample_rate": 8000})
    await client.send_json({"type": "text", "text": "How is the weather?"})
    end = await client.wait_for("stream_end", timeout=60)
    await client.close()
    rid = end["response_id"]
    tts = [e for e in client.events("tts_start") if e["response_id"] == rid][0]
    assert (tts["encoding"], tts["sample_rate"]) == ("mulaw", 8000)
    done = [e for e in client.events("tts_complete") if e["response_id"] == rid][0]
    audio = client.audio_between("tts_start", "tts_complete", rid)
    # One byte per sample at 8 kHz: 8 bytes a millisecond (s16le would be 16).
    assert abs(len(audio) / 8 - done["duration_ms"]) <= 40
