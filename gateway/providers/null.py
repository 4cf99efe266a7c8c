"""Providers that cost (almost) nothing: for benchmarks of the runtime around them."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from gateway.audio import pcm
from gateway.config import Config

from .base import ChatRequest, Speech

SAMPLE_RATE = 16000
SPEECH_DBFS = -45.0  # louder than this counts as speech
REPLY_TOKENS = ("Hello!", " This", " is", " a", " benchmark", " reply.")


class NullVADStream:
    """Energy gate: RMS above -45 dBFS is speech; no state, no smoothing."""

    __slots__ = ()
    # Compare sum(x^2) with n * threshold^2 on raw s16 values: no sqrt, no scaling.
    _THRESHOLD_SQ = (32768.0 * 10.0 ** (SPEECH_DBFS / 20.0)) ** 2

    def is_speech(self, frame: bytes) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        return bool(x.size) and float(np.dot(x, x)) > self._THRESHOLD_SQ * x.size


_NULL_STREAM = NullVADStream()


class NullVAD:
    name = "null"
    sample_rate = SAMPLE_RATE
    rates = (8000, SAMPLE_RATE)  # a mean-energy gate: the rate does not matter

    @classmethod
    def from_config(cls, cfg: Config) -> NullVAD:
        return cls()

    def stream(self, frame_ms: int, rate: int = SAMPLE_RATE) -> NullVADStream:
        return _NULL_STREAM  # stateless, so one instance serves every session


class NullSTT:
    name = "null"
    # Instant and non-blocking: the runtime calls it inline, not in the worker pool.
    inline = True

    def __init__(self, text: str = "hello") -> None:
        self.text = text

    @classmethod
    def from_config(cls, cfg: Config) -> NullSTT:
        return cls()

    def transcribe(self, pcm: bytes, *, language: str | None = None) -> str:
        return self.text


class NullLLM:
    """A BlockingLLM that replies instantly with a fixed sentence, a few tokens."""

    name = "null"
    # Instant and non-blocking: the runtime calls it inline, not in the worker pool.
    inline = True
    uses_passages = False  # no knowledge-base lookup for it

    def __init__(self, tokens: tuple[str, ...] = REPLY_TOKENS) -> None:
        self.tokens = tokens

    @classmethod
    def from_config(cls, cfg: Config) -> NullLLM:
        return cls()

    def generate(self, request: ChatRequest) -> Iterator[str]:
        yield from self.tokens


def _tone(freq_hz: float = 440.0, ms: int = 200, dbfs: float = -12.0) -> bytes:
    n = SAMPLE_RATE * ms // 1000
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    amp = 32767.0 * 10.0 ** (dbfs / 20.0)
    wave = amp * np.sin(2.0 * math.pi * freq_hz * t)
    # 5 ms fades so that concatenated sentences do not click.
    fade = min(n // 2, SAMPLE_RATE // 200)
    ramp = np.linspace(0.0, 1.0, fade)
    wave[:fade] *= ramp
    wave[n - fade :] *= ramp[::-1]
    return bytes(wave.astype("<i2").tobytes())


class NullTTS:
    """Every sentence becomes the same precomputed 200 ms, 440 Hz tone."""

    name = "null"
    # Instant and non-blocking: the runtime calls it inline, not in the worker pool.
    inline = True
    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        self._speech = {SAMPLE_RATE: Speech(_tone(), SAMPLE_RATE)}

    @classmethod
    def from_config(cls, cfg: Config) -> NullTTS:
        return cls()

    def synthesize(self, text: str, *, voice: str | None = None,
                   sample_rate: int | None = None) -> Speech:
        """At the session's output rate when asked (as ElevenLabs can): the bench
        measures the runtime, and a resample per sentence (~0.4 ms, done once here)
        would be a tenth of the per-turn CPU at hundreds of sessions."""
        rate = sample_rate if sample_rate in (8000, 16000, 22050, 24000, 44100, 48000) else None
        if rate is None:
            return self._speech[SAMPLE_RATE]
        speech = self._speech.get(rate)
        if speech is None:
            pcm16k = self._speech[SAMPLE_RATE].pcm
            speech = self._speech[rate] = Speech(pcm.resample(pcm16k, SAMPLE_RATE, rate), rate)
        return speech
