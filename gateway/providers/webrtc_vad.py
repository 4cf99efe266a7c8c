"""WebRTC VAD: a cheap GMM speech detector, one small C state per session."""

from __future__ import annotations

import webrtcvad

from gateway.config import Config

from .base import ProviderError

SAMPLE_RATE = 16000
_FRAME_MS = (10, 20, 30)  # the only frame lengths libwebrtc accepts


class WebRTCVADStream:
    """Per-session detector; libwebrtc keeps a little smoothing state inside."""

    __slots__ = ("_frame_bytes", "_is_speech")

    def __init__(self, aggressiveness: int, frame_ms: int) -> None:
        vad = webrtcvad.Vad(aggressiveness)
        # Bound method looked up once: this runs ~50 times a second per session.
        self._is_speech = vad.is_speech
        self._frame_bytes = SAMPLE_RATE * frame_ms // 1000 * 2

    def is_speech(self, frame: bytes) -> bool:
        try:
            return bool(self._is_speech(frame, SAMPLE_RATE))
        except Exception as exc:  # webrtcvad.Error on a wrong frame length
            raise ProviderError(
                f"webrtcvad rejected a {len(frame)}-byte frame "
                f"(expected {self._frame_bytes}): {exc}",
                retryable=False,
            ) from exc


class WebRTCVAD:
    name = "webrtcvad"
    sample_rate = SAMPLE_RATE

    def __init__(self, aggressiveness: int = 2) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ProviderError("webrtcvad aggressiveness must be 0..3", retryable=False)
        self.aggressiveness = aggressiveness

    @classmethod
    def from_config(cls, cfg: Config) -> WebRTCVAD:
        return cls(cfg.vad.aggressiveness)

    def stream(self, frame_ms: int) -> WebRTCVADStream:
        if frame_ms not in _FRAME_MS:
            raise ProviderError(
                f"webrtcvad needs 10, 20 or 30 ms frames, not {frame_ms}", retryable=False
            )
        return WebRTCVADStream(self.aggressiveness, frame_ms)
