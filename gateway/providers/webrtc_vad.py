"""WebRTC VAD: a cheap GMM speech detector, one small C state per session."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np
import webrtcvad

try:  # the C module behind webrtcvad.Vad: calling it directly skips a Python frame
    import _webrtcvad
except ImportError:  # pragma: no cover - another build of webrtcvad
    _webrtcvad = None
try:  # C, ~0.5 µs a frame against ~4 µs for numpy; audioop-lts provides it from 3.13
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
except ImportError:  # pragma: no cover
    audioop = None  # type: ignore[assignment]

from gateway.config import Config

from .base import ProviderError

SAMPLE_RATE = 16000
# libwebrtc takes these; it judges at 8 kHz whatever it is given (higher rates are
# first decimated to 8 kHz inside), so telephony audio needs no resampling for it.
RATES = (8000, 16000, 32000, 48000)
_FRAME_MS = (10, 20, 30)  # the only frame lengths libwebrtc accepts


class WebRTCVADStream:
    """Per-session detector; libwebrtc keeps a little smoothing state inside."""

    __slots__ = ("_frame_bytes", "_min_energy", "_min_rms", "_process", "_samples", "_vad")

    def __init__(self, aggressiveness: int, frame_ms: int, min_dbfs: float = -50.0,
                 rate: int = SAMPLE_RATE) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_bytes = rate * frame_ms // 1000 * 2
        self._samples = self._frame_bytes // 2
        # Looked up once: this runs ~50 times a second per session.
        inner = getattr(self._vad, "_vad", None)
        self._process: Callable[[bytes, int], bool] = (
            functools.partial(_webrtcvad.process, inner, rate)
            if _webrtcvad is not None and inner is not None
            else lambda frame, _n: self._vad.is_speech(frame, rate))
        self._min_rms = 32768.0 * 10 ** (min_dbfs / 20)
        self._min_energy = self._samples * self._min_rms**2  # sum of squares at min_dbfs

    def is_speech(self, frame: bytes) -> bool:
        try:
            if len(frame) != self._frame_bytes:
                raise ValueError("wrong frame length")
            if not self._process(frame, self._samples):
                return False
            # libwebrtc smooths its verdict over ~100 ms, so it keeps saying "speech"
            # into the silence after a sound; an energy floor cuts that tail, so a
            # 200 ms cough measures ~200 ms, not ~320 ms, against the barge-in minimum.
            if audioop is not None:
                return bool(audioop.rms(frame, 2) >= self._min_rms)
            x = np.frombuffer(frame, dtype=np.int16).astype(np.int64)  # int32 dot overflows
            return float(np.dot(x, x)) >= self._min_energy
        except Exception as exc:  # webrtcvad.Error on a wrong frame length
            raise ProviderError(
                f"webrtcvad rejected a {len(frame)}-byte frame "
                f"(expected {self._frame_bytes}): {exc}",
                retryable=False,
            ) from exc


class WebRTCVAD:
    name = "webrtcvad"
    sample_rate = SAMPLE_RATE
    rates = RATES

    def __init__(self, aggressiveness: int = 2, min_dbfs: float = -50.0) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ProviderError("webrtcvad aggressiveness must be 0..3", retryable=False)
        self.aggressiveness = aggressiveness
        self.min_dbfs = min_dbfs

    @classmethod
    def from_config(cls, cfg: Config) -> WebRTCVAD:
        return cls(cfg.vad.aggressiveness, cfg.vad.min_speech_dbfs)

    def stream(self, frame_ms: int, threshold: float | None = None,
               rate: int = SAMPLE_RATE) -> WebRTCVADStream:
        """``threshold`` (0..1, as OpenAI's ``server_vad``) picks the aggressiveness:
        below 0.25 -> 0 ... 0.75 and up -> 3, so the usual 0.5 is the default 2.
        ``rate``: the frames' sample rate, one of ``RATES``."""
        if frame_ms not in _FRAME_MS:
            raise ProviderError(
                f"webrtcvad needs 10, 20 or 30 ms frames, not {frame_ms}", retryable=False
            )
        if rate not in RATES:
            raise ProviderError(f"webrtcvad takes {RATES} Hz, not {rate}", retryable=False)
        level = self.aggressiveness
        if threshold is not None:
            level = min(3, max(0, int(threshold * 4)))
        return WebRTCVADStream(level, frame_ms, self.min_dbfs, rate)
