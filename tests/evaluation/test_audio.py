"""Caller audio: voiced spans, exact pauses, noises, WAV callers (real speech)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.evaluation.audio import (
    FRAME_BYTES,
    LEAD_MS,
    Voices,
    frame_levels,
    make_clip,
    noise,
    silence,
    voiced_span,
)
from gateway.evaluation.scenario import Utterance, Voice

DATA = Path(__file__).resolve().parents[1] / "data"


def tone(ms: int, level: float = 0.3) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (np.sin(2 * np.pi * 220 * t) * level * 32767).astype("<i2").tobytes()


def test_voiced_span_ignores_silence_and_a_faint_floor() -> None:
    audio = silence(100) + tone(300) + silence(60) + tone(200, 0.001) + silence(200)
    first, last = voiced_span(audio)
    assert (first, last) == (5, 19)  # 100 ms of silence, then 15 frames of tone
    assert voiced_span(silence(200)) == (-1, -1)
    assert len(frame_levels(audio)) == len(audio) // FRAME_BYTES


def test_clip_from_a_wav_caller() -> None:
    clip = make_clip((DATA / "what_is_the_gateway.wav").read_bytes()[44:], "wav")
    assert clip.first_voiced >= LEAD_MS // 20 and clip.last_voiced < clip.frames
    assert 600 < (clip.last_voiced - clip.first_voiced) * 20 < 2500
    from_file = Voices().clip(Utterance(wav=DATA / "what_is_the_gateway.wav"))
    assert abs(from_file.last_voiced - clip.last_voiced) <= 1  # same speech, read as a WAV
    with pytest.raises(ValueError, match="no voiced audio"):
        make_clip(silence(300), "quiet")


def test_a_pause_is_exactly_as_long_as_asked() -> None:
    v = Voices()
    u = Utterance(text="What time do you | open on Sundays?", voice=Voice("espeak", "en-us"),
                  pause_ms=600)
    clip = v.clip(u)
    levels = frame_levels(clip.audio)[clip.first_voiced : clip.last_voiced + 1]
    quiet = (levels < -90).astype(int)  # digital silence: the pause (and espeak's word gaps)
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], quiet, [0])))))[::2]
    assert max(runs) == 30  # the longest is the pause: 30 frames of 20 ms
    assert v.clip(u) is clip  # cached


def test_noises_are_voiced_and_short() -> None:
    for kind in ("cough", "burst"):
        clip = make_clip(noise(kind), kind)
        assert 200 <= (clip.last_voiced - clip.first_voiced + 1) * 20 <= 420
