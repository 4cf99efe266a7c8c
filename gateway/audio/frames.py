"""PyAV audio frames <-> mono s16le PCM, for the WebRTC transport.

Opus itself is encoded and decoded by aiortc (libopus inside PyAV's FFmpeg); what
reaches the gateway is ``av.AudioFrame`` objects, which these two functions turn into
the PCM the pipeline uses and back.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

from gateway.audio import pcm


def to_mono_pcm(frame: av.AudioFrame) -> bytes:
    """Any PyAV audio frame (s16/flt, planar or packed, any channels) as mono s16le."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    # Packed formats come as one row of interleaved samples; planar as one row per channel.
    samples = data.reshape(-1, channels).T if not frame.format.is_planar else data
    if np.issubdtype(samples.dtype, np.floating):
        return pcm.from_float(samples.mean(axis=0))
    if samples.dtype != np.int16:
        raise ValueError(f"unsupported sample format {frame.format.name}")
    if channels == 1:
        return bytes(samples[0].astype("<i2").tobytes())
    mono = samples.astype(np.int32).mean(axis=0)
    return bytes(mono.astype("<i2").tobytes())


def from_mono_pcm(data: bytes, sample_rate: int, pts: int) -> av.AudioFrame:
    """A mono s16 frame holding ``data``, stamped ``pts`` in units of 1/sample_rate."""
    samples = np.frombuffer(data, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame
