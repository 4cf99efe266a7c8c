"""Semantic end of turn end to end: real speech over a real WebSocket, Smart Turn deciding."""

from __future__ import annotations

from voice_client import VoiceClient, silence, wav

PAUSED = "pool_holidays_pause.wav"  # "Is the swimming pool open during ... the holidays?"
# The model is what is tested: a check waits for the (shared, loaded) CI machine rather
# than being skipped, which would hand the pause to the silence timer.
PATIENT = {"wait_ms": 5000}


async def turns_of(gateway, audio: bytes, speed: float) -> VoiceClient:
    client = await VoiceClient.connect(gateway.ws_url)
    await client.wait_for("session_started")
    await client.stream(audio, speed=speed)
    await client.wait_for("transcription", final=True, timeout=60)
    await client.close()
    return client


async def test_a_600_ms_pause_mid_sentence_does_not_end_the_turn(gateway_factory) -> None:
    audio = wav(PAUSED) + silence(600)
    semantic = await turns_of(gateway_factory(turn=PATIENT), audio, speed=2.0)
    assert len(semantic.events("speech_stopped")) == 1, semantic.types()
    (final,) = [e for e in semantic.events("transcription") if e["final"]]
    text = final["text"].lower()
    assert "swimming" in text and "holidays" in text, text
    # The same audio on the old 400 ms timer is cut at the pause: two turns.
    timer = await VoiceClient.connect(gateway_factory(turn={"detector": "silence"}).ws_url)
    await timer.wait_for("session_started")
    await timer.stream(audio, speed=2.0)
    await timer.wait_for("speech_stopped", count=2, timeout=30)
    await timer.close()


async def test_a_finished_question_is_ended_by_the_model_not_a_timer(gateway_factory) -> None:
    # Timers far beyond the 1.3 s of silence sent: only the model can end this turn.
    gw = gateway_factory(vad={"stop_ms": 5000}, turn={"max_wait_ms": 5000, **PATIENT})
    client = await turns_of(gw, wav("hello_weather.wav") + silence(600), speed=3.0)
    assert len(client.events("speech_stopped")) == 1
    (final,) = [e for e in client.events("transcription") if e["final"]]
    assert "weather" in final["text"].lower()
