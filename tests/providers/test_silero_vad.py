"""Silero VAD (ONNX, no torch) on the recorded utterances."""

from __future__ import annotations

import sys

import pytest

from gateway.config import Config
from gateway.providers.base import VAD, ProviderError, VADStream
from gateway.providers.silero_vad import SileroVAD, SileroVADStream, model_path

RATE = 16000
LEAD_MS, TAIL_MS = 300, 700  # silence around each utterance (tests/data/make_wavs.py)


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD.from_config(Config())


def decisions(stream: VADStream, pcm: bytes, frame_ms: int) -> list[bool]:
    size = RATE * frame_ms // 1000 * 2
    return [stream.is_speech(pcm[i : i + size]) for i in range(0, len(pcm) - size + 1, size)]


def test_model_found_without_importing_the_package(vad: SileroVAD) -> None:
    assert model_path().name == "silero_vad.onnx"
    assert "silero_vad" not in sys.modules  # it would drag in torch
    assert isinstance(vad, VAD) and isinstance(vad.stream(20), VADStream)
    assert vad.name == "silero" and vad.sample_rate == RATE


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_speech_detected_and_silence_not(
    vad: SileroVAD, speech_wavs: dict[str, bytes], frame_ms: int
) -> None:
    for name, pcm in speech_wavs.items():
        flags = decisions(vad.stream(frame_ms), pcm, frame_ms)
        total_ms = len(flags) * frame_ms
        lead = flags[: (LEAD_MS - 20) // frame_ms]
        speech = flags[(LEAD_MS + 100) // frame_ms : (total_ms - TAIL_MS - 100) // frame_ms]
        tail = flags[(total_ms - TAIL_MS + 300) // frame_ms :]
        assert not any(lead), f"{name}: speech in the leading silence"
        assert sum(speech) / len(speech) > 0.7, f"{name}: speech missed"
        assert not any(tail), f"{name}: speech in the trailing silence"


def test_state_is_per_stream(vad: SileroVAD, speech_wavs: dict[str, bytes]) -> None:
    pcm = speech_wavs["hello_weather.wav"]
    a, b = vad.stream(20), vad.stream(20)
    flags_a = []
    for i in range(0, len(pcm) - 640 + 1, 640):
        flags_a.append(a.is_speech(pcm[i : i + 640]))
        b.is_speech(b"\x00" * 640)
    assert flags_a == decisions(vad.stream(20), pcm, 20)


def test_probability_exposed(vad: SileroVAD, speech_wavs: dict[str, bytes]) -> None:
    stream = vad.stream(30)
    assert isinstance(stream, SileroVADStream)
    pcm = speech_wavs["count_numbers.wav"]
    probs = []
    for i in range(0, len(pcm) - 960 + 1, 960):
        stream.is_speech(pcm[i : i + 960])
        probs.append(stream.last_prob)
    assert max(probs) > 0.9 and min(probs) < 0.1


def test_errors() -> None:
    with pytest.raises(ProviderError):
        SileroVAD(1.5)
    with pytest.raises(ProviderError):
        SileroVAD().stream(20).is_speech(b"\x00" * 3)
