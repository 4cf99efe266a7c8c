"""Pure PCM helpers: s16le <-> float, resampling, G.711 codecs, framing, levels.

No I/O, no asyncio. Resampling uses libsoxr (``soxr``), not a hand-written filter.
"""

from __future__ import annotations

import base64
import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pybase64
import soxr

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float32]

SAMPLE_WIDTH = 2  # bytes per s16le sample


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A stream's audio: ``pcm_s16le`` or ``mulaw`` at a sample rate."""

    encoding: str = "pcm_s16le"
    sample_rate: int = 16000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm_s16le" else 1

    def chunk_ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_sample / self.sample_rate * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


def bytes_per_ms(sample_rate: int) -> float:
    return sample_rate * SAMPLE_WIDTH / 1000.0


def frame_bytes(sample_rate: int, frame_ms: int) -> int:
    return sample_rate * frame_ms // 1000 * SAMPLE_WIDTH


def duration_ms(pcm_len: int, sample_rate: int) -> float:
    return pcm_len / SAMPLE_WIDTH / sample_rate * 1000.0


def to_float(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def from_float(samples: npt.NDArray[np.floating]) -> bytes:
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return bytes((clipped * 32767.0).astype("<i2").tobytes())


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole mono s16le buffer (one-shot; use Resampler for streams)."""
    if src_rate == dst_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    out = soxr.resample(samples, src_rate, dst_rate, quality="HQ")
    return bytes(np.asarray(out, dtype="<i2").tobytes())


# soxr's 16-bit recipe: for 16-bit client audio it is as exact as "HQ" (70 dB from
# "VHQ" on speech, like HQ's 71) and cheaper per 20 ms chunk: 8 -> 16 kHz 6.4 us
# against 9.3 with 300 streams live (each stream's filter competes for the cache).
CLIENT_AUDIO = "MQ"


class Resampler:
    """Streaming resampler for chunked input (keeps filter state across chunks)."""

    def __init__(self, src_rate: int, dst_rate: int, quality: str = "HQ") -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._stream = (
            None
            if src_rate == dst_rate
            else soxr.ResampleStream(src_rate, dst_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return bytes(np.asarray(out, dtype="<i2").tobytes())


def rms_dbfs(pcm: bytes) -> float:
    """Level of a buffer in dBFS (-inf for digital silence)."""
    if len(pcm) < SAMPLE_WIDTH:
        return float("-inf")
    x = to_float(pcm)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


# --- G.711 (ITU-T) ---------------------------------------------------------------
# Table-driven: decode tables have 256 entries, encode tables 65536 (one per s16 value).

_MULAW_BIAS = 0x84


def _mulaw_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _mulaw_encode_table() -> npt.NDArray[np.uint8]:
    # The reference G.711 segment search on 14-bit magnitudes (as in Sun's g711.c).
    v = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(v), 8159) + (_MULAW_BIAS >> 2)
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, mag)
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    s = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(s >= 0, 0x80, 0)
    mag = np.minimum(np.where(s >= 0, s, -s - 1), 32767) >> 3
    exponent = np.where(mag >= 32, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4, 0)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    table: npt.NDArray[np.uint8] = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


# Decode tables stored as little-endian s16: a lookup is then the output, no conversion.
_ULAW_DEC = _mulaw_decode_table().astype("<i2")
_ALAW_DEC = _alaw_decode_table().astype("<i2")
# Encode tables rolled to be indexed by the sample's bits read as unsigned (s & 0xFFFF):
# a lookup straight from the buffer, no widening and offsetting per sample.
_ULAW_ENC = np.roll(_mulaw_encode_table(), 32768)
_ALAW_ENC = np.roll(_alaw_encode_table(), 32768)


def mulaw_decode(data: bytes) -> bytes:
    return _ULAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def mulaw_encode(pcm: bytes) -> bytes:
    return _ULAW_ENC.take(np.frombuffer(pcm, dtype="<u2")).tobytes()


def alaw_decode(data: bytes) -> bytes:
    return _ALAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    return _ALAW_ENC.take(np.frombuffer(pcm, dtype="<u2")).tobytes()


class Reframer:
    """Cuts a byte stream into fixed-size frames, keeping the remainder."""

    def __init__(self, frame_size: int) -> None:
        self.frame_size = frame_size
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        if not self._buf and len(data) == self.frame_size:
            return [data]  # the usual case: one 20 ms chunk, no copy
        self._buf += data
        n = len(self._buf) // self.frame_size
        if n == 0:
            return []
        cut = n * self.frame_size
        view = bytes(self._buf[:cut])
        del self._buf[:cut]
        fs = self.frame_size
        return [view[i * fs : (i + 1) * fs] for i in range(n)]

    def flush(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


# --- encodings by name, and base64 (JSON-framed audio) -----------------------------

ENCODERS = {"pcm_s16le": lambda pcm: pcm, "mulaw": mulaw_encode, "alaw": alaw_encode}
DECODERS = {"pcm_s16le": lambda data: data, "mulaw": mulaw_decode, "alaw": alaw_decode}


def encode(pcm: bytes, encoding: str) -> bytes:
    """s16le -> ``encoding`` (pcm_s16le | mulaw | alaw)."""
    return bytes(ENCODERS[encoding](pcm))


def decode(data: bytes, encoding: str) -> bytes:
    """``encoding`` (pcm_s16le | mulaw | alaw) -> s16le."""
    return bytes(DECODERS[encoding](data))


def b64encode(data: bytes) -> str:
    """Standard base64 (SIMD, pybase64: 0.4 us for 20 ms of 24 kHz audio, 2.7 stdlib)."""
    return pybase64.b64encode_as_string(data)


def b64decode(text: str) -> bytes:
    """Strict base64 (ValueError on anything else, as binascii.Error is one)."""
    return base64.b64decode(text, validate=True)


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """Mono s16le as a WAV file in memory (what upload-style speech APIs accept)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm[: len(pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH])
    return out.getvalue()
