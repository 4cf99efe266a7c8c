"""WebRTC VAD on the recorded utterances: speech found, silence ignored."""

from __future__ import annotations

import pytest

from gateway.config import Config
from gateway.providers.base import VAD, ProviderError, VADStream
from gateway.providers.webrtc_vad import WebRTCVAD

RATE = 16000
LEAD_MS, TAIL_MS = 300, 700  # silence around each utterance (tests/data/make_wavs.py)


@pytest.fixture(scope="module")
def vad() -> WebRTCVAD:
    return WebRTCVAD.from_config(Config())


def decisions(stream: VADStream, pcm: bytes, frame_ms: int) -> list[bool]:
    size = RATE * frame_ms // 1000 * 2
    return [stream.is_speech(pcm[i : i + size]) for i in range(0, len(pcm) - size + 1, size)]


def test_protocol(vad: WebRTCVAD) -> None:
    assert isinstance(vad, VAD)
    assert isinstance(vad.stream(20), VADStream)
    assert vad.name == "webrtcvad" and vad.sample_rate == RATE


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_speech_detected_and_silence_not(
    vad: WebRTCVAD, speech_wavs: dict[str, bytes], frame_ms: int
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


def test_digital_silence(vad: WebRTCVAD) -> None:
    stream = vad.stream(20)
    assert not any(stream.is_speech(b"\x00" * 640) for _ in range(50))


def test_streams_are_independent(vad: WebRTCVAD, speech_wavs: dict[str, bytes]) -> None:
    pcm = speech_wavs["what_is_the_gateway.wav"]
    a, b = vad.stream(20), vad.stream(20)
    # Interleaving another session's silence must not change this session's decisions.
    flags_a = []
    for i in range(0, len(pcm) - 640 + 1, 640):
        flags_a.append(a.is_speech(pcm[i : i + 640]))
        b.is_speech(b"\x00" * 640)
    assert flags_a == decisions(vad.stream(20), pcm, 20)


def test_bad_frames_and_settings(vad: WebRTCVAD) -> None:
    with pytest.raises(ProviderError):
        vad.stream(25)
    with pytest.raises(ProviderError):
        vad.stream(20).is_speech(b"\x00" * 100)
    with pytest.raises(ProviderError):
        WebRTCVAD(5)
