"""eSpeak NG fallback TTS."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gateway.config import Config
from gateway.providers.base import TTS, ProviderError
from gateway.providers.espeak_tts import EspeakTTS, parse_wav


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS.from_config(Config())


def test_synthesize(tts: EspeakTTS) -> None:
    assert isinstance(tts, TTS)
    speech = tts.synthesize("What is the gateway?")
    assert speech.sample_rate == 22050
    assert 500 < speech.duration_ms < 4000
    assert np.abs(np.frombuffer(speech.pcm, dtype="<i2")).max() > 3000


def test_text_is_not_parsed_as_options(tts: EspeakTTS) -> None:
    # Goes through stdin: a leading dash or shell characters are just text.
    speech = tts.synthesize("-v xx; rm -rf / $(echo hi)")
    assert speech.duration_ms > 500


def test_empty_and_bad_voice(tts: EspeakTTS) -> None:
    assert tts.synthesize("").pcm == b""
    with pytest.raises(ProviderError):
        tts.synthesize("hi", voice="en; rm -rf /")
    with pytest.raises(ProviderError):
        tts.synthesize("hi", voice="no-such-voice")


def test_timeout() -> None:
    slow = EspeakTTS(timeout_s=0.001)
    with pytest.raises(ProviderError, match="timed out"):
        slow.synthesize("A long sentence that takes a while to say. " * 50)


def test_speed() -> None:
    text = "One two three four five six seven eight nine ten."
    normal = EspeakTTS().synthesize(text).duration_ms
    assert EspeakTTS(speed=2.0).synthesize(text).duration_ms < 0.7 * normal


def test_parse_wav_streamed_header() -> None:
    pcm = b"\x01\x00\x02\x00\x03\x00"
    fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
    # espeak's --stdout placeholders: sizes 0x7ffff000 that do not match the stream.
    wav = (
        b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVE"
        + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", 0x7FFFF000) + pcm
    )
    assert parse_wav(wav) == (pcm, 22050)
    with pytest.raises(ValueError):
        parse_wav(b"not a wav")
