"""Piper TTS with the joe voice: audio and per-phoneme timings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.config import Config
from gateway.providers.base import TTS, ProviderError, Speech
from gateway.providers.piper_tts import PiperTTS, expose_alignment_output, voice_paths


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS.from_config(Config())


def peak(speech: Speech) -> int:
    return int(np.abs(np.frombuffer(speech.pcm, dtype="<i2").astype(np.int32)).max())


def check_timings(speech: Speech) -> None:
    assert speech.phonemes
    prev_end = 0.0
    for t in speech.phonemes:
        assert t.phoneme
        assert prev_end - 1e-6 <= t.start_ms <= t.end_ms <= speech.duration_ms + 1e-6
        prev_end = t.end_ms


def test_audio(tts: PiperTTS) -> None:
    assert isinstance(tts, TTS)
    speech = tts.synthesize("What is the gateway?")
    assert speech.sample_rate == tts.sample_rate == 22050
    assert peak(speech) > 8000
    assert 700 < speech.duration_ms < 3000


def test_real_alignments(tts: PiperTTS) -> None:
    # The joe model is patched at load to output its phoneme durations.
    assert tts.aligned
    speech = tts.synthesize("Hello there. How are you today?")  # two sentences
    check_timings(speech)
    phonemes = "".join(t.phoneme for t in speech.phonemes)
    assert "h" in phonemes and "." in phonemes
    # Durations come from the model, so they differ per phoneme.
    assert len({round(t.end_ms - t.start_ms) for t in speech.phonemes}) > 3
    # Most of the audio is covered by timings (the rest is BOS/EOS padding).
    assert speech.phonemes[-1].end_ms > 0.8 * speech.duration_ms


def test_speed(tts: PiperTTS) -> None:
    fast = PiperTTS("joe", speed=2.0)
    text = "One two three four five six seven eight nine ten."
    assert fast.synthesize(text).duration_ms < 0.7 * tts.synthesize(text).duration_ms


def test_empty_text_and_unknown_voice(tts: PiperTTS) -> None:
    assert tts.synthesize("   ").pcm == b""
    with pytest.raises(ProviderError):
        tts.synthesize("hi", voice="nobody")
    with pytest.raises(ProviderError):
        PiperTTS("nobody")


def test_concurrent_calls(tts: PiperTTS) -> None:
    texts = ["Tell me about barge in.", "What is the gateway?", "Hello!", "Fine, thanks."]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(tts.synthesize, texts * 2))
    for speech in results:
        assert peak(speech) > 8000
        check_timings(speech)


def test_patch_is_idempotent() -> None:
    model, _ = voice_paths("joe")
    patched = expose_alignment_output(model.read_bytes())
    assert expose_alignment_output(patched) == patched
