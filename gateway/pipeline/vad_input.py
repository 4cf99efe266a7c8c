"""The VAD stage's audio path: client audio -> VAD frames, and utterances back to 16 kHz.

The VAD runs at the client's own rate when it can take it (webrtcvad takes 8 kHz
telephony audio as is; libwebrtc judges speech at 8 kHz whatever it is given), so a
telephony frame costs no resampling at all on its way through the VAD. Only the
utterances the endpointer hands on (to the STT, the turn model, the overlap decode) are
brought to ``PIPELINE_RATE``, once per event and off the per-frame path. Other client
rates are resampled as a stream to ``PIPELINE_RATE`` before the VAD, as before.
"""

from __future__ import annotations

import contextlib
from typing import Any

from gateway.audio import pcm

PIPELINE_RATE = 16000  # what the STT, the turn model and overlap decodes are given


def vad_rate(vad: Any, input_rate: int) -> int:
    """The rate the VAD runs at: the input's own if the provider takes it, else 16 kHz."""
    rates: tuple[int, ...] = getattr(vad, "rates", (PIPELINE_RATE,))
    return input_rate if input_rate in rates else PIPELINE_RATE


class VadInput:
    """Per session: resampler (if needed), reframer and VAD stream, at one rate."""

    __slots__ = ("_frame_ms", "_reframer", "_resampler", "_vad", "rate", "stream")

    def __init__(self, vad: Any, frame_ms: int, input_rate: int,
                 threshold: float | None = None) -> None:
        self._vad = vad
        self._frame_ms = frame_ms
        self.rate = vad_rate(vad, input_rate)
        self._resampler = (None if self.rate == input_rate
                           else pcm.Resampler(input_rate, self.rate, pcm.CLIENT_AUDIO))
        self._reframer = pcm.Reframer(pcm.frame_bytes(self.rate, frame_ms))
        self.stream: Any = self.new_stream(threshold)

    def new_stream(self, threshold: float | None) -> Any:
        """A fresh detector (new per-session VAD settings take effect at a silence)."""
        kw: dict[str, Any] = {} if self.rate == PIPELINE_RATE else {"rate": self.rate}
        if threshold is not None:
            with contextlib.suppress(TypeError):  # a VAD without a threshold knob
                return self._vad.stream(self._frame_ms, threshold=threshold, **kw)
        return self._vad.stream(self._frame_ms, **kw)

    def frames(self, chunk: bytes) -> list[bytes]:
        """Client audio at the input rate -> whole VAD frames (the rest is kept)."""
        if self._resampler is not None:
            chunk = self._resampler.process(chunk)
        return self._reframer.push(chunk)

    def to_pipeline(self, audio: bytes) -> bytes:
        """An utterance cut from VAD frames, at ``PIPELINE_RATE``."""
        if self.rate == PIPELINE_RATE:
            return audio
        return pcm.resample(audio, self.rate, PIPELINE_RATE)
