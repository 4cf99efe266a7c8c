"""Synthetic "speech" for the local TTS servers: audible per letter, silent between words.

Each character gets ``ms_per_char`` of audio: a letter or digit is a short tone burst, a
space or punctuation is silence. So a character's timing is known exactly (what the
server reports as alignment) and can be checked against the audio's energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CharTiming:
    char: str
    start_ms: float
    duration_ms: float


def speech(text: str, rate: int, ms_per_char: float = 60.0) -> tuple[bytes, list[CharTiming]]:
    """s16le mono PCM for ``text`` at ``rate`` and each character's timing in it."""
    per = max(1, round(rate * ms_per_char / 1000.0))
    pieces: list[np.ndarray] = []
    timings: list[CharTiming] = []
    t = np.arange(per) / rate
    envelope = np.sin(np.pi * np.arange(per) / per)  # no clicks at the edges
    for i, ch in enumerate(text):
        timings.append(CharTiming(ch, i * per * 1000.0 / rate, per * 1000.0 / rate))
        if ch.isalnum():
            freq = 180.0 + 12.0 * (ord(ch.lower()) % 20)
            tone = 0.4 * envelope * np.sin(2 * math.pi * freq * t)
            pieces.append((tone * 32767).astype("<i2"))
        else:
            pieces.append(np.zeros(per, dtype="<i2"))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype="<i2")
    return audio.tobytes(), timings


def split_bytes(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]
