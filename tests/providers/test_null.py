"""The zero-cost benchmark providers."""

from __future__ import annotations

import numpy as np

from gateway.config import Config
from gateway.providers.base import STT, TTS, VAD, BlockingLLM, ChatRequest, Message
from gateway.providers.null import NullLLM, NullSTT, NullTTS, NullVAD


def tone(dbfs: float, n: int = 320) -> bytes:
    amp = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)  # sine RMS = amplitude / sqrt(2)
    x = amp * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
    return bytes(x.astype("<i2").tobytes())


def test_vad_energy_gate(speech_wavs: dict[str, bytes]) -> None:
    vad = NullVAD.from_config(Config())
    assert isinstance(vad, VAD) and vad.sample_rate == 16000
    stream = vad.stream(20)
    assert not stream.is_speech(b"\x00" * 640)
    assert not stream.is_speech(b"")
    assert not stream.is_speech(tone(-55.0))
    assert stream.is_speech(tone(-35.0))
    pcm = speech_wavs["count_numbers.wav"]
    assert stream.is_speech(pcm[16000 * 2 : 16000 * 2 + 640])  # 1 s in: speech


def test_stt() -> None:
    stt = NullSTT.from_config(Config())
    assert isinstance(stt, STT)
    assert stt.transcribe(b"\x00" * 3200) == "hello"


def test_llm() -> None:
    llm = NullLLM.from_config(Config())
    assert isinstance(llm, BlockingLLM)
    tokens = list(llm.generate(ChatRequest([Message("user", "hi")])))
    assert len(tokens) > 2
    assert "".join(tokens) == "Hello! This is a benchmark reply."


def test_tts() -> None:
    tts = NullTTS.from_config(Config())
    assert isinstance(tts, TTS) and tts.sample_rate == 16000
    speech = tts.synthesize("Anything.")
    assert speech.sample_rate == 16000
    assert speech.duration_ms == 200.0
    assert np.abs(np.frombuffer(speech.pcm, dtype="<i2")).max() > 5000
    assert tts.synthesize("Other.") is speech  # precomputed once
