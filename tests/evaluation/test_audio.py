"""Caller audio: voiced spans, exact pauses, noises, WAV callers (real speech)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.evaluation.audio import (
    FRAME_BYTES,
    LEAD_MS,
    Clip,
    Voices,
    frame_levels,
    make_clip,
    noise,
    silence,
    trim,
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


def silent_runs(clip: Clip) -> list[int]:
    """Lengths (frames) of the runs of digital silence inside the speech."""
    levels = frame_levels(clip.audio)[clip.first_voiced : clip.last_voiced + 1]
    quiet = (levels < -90).astype(int)
    return list(np.diff(np.flatnonzero(np.diff(np.concatenate(([0], quiet, [0])))))[::2])


@pytest.mark.parametrize("voice, apart", [(Voice("espeak", "en-us"), False),
                                          (Voice("piper", "joe"), False),
                                          (Voice("espeak", "en-us"), True)])
def test_a_pause_is_as_long_as_asked(voice: Voice, apart: bool) -> None:
    v = Voices()
    u = Utterance(text="What time do you | open on Sundays?", voice=voice, pause_ms=600,
                  apart=apart)
    clip = v.clip(u)
    # The longest run of silence is the pause (espeak-ng's SSML break, or the silence put
    # between Piper's words: not on a frame boundary, so a frame of it may be partly voiced).
    assert 29 <= max(silent_runs(clip)) <= 31
    assert v.clip(u) is clip  # cached


def test_a_paused_sentence_is_one_synthesis_cut_between_words() -> None:
    """Piper: the speech on each side of the pause is the sentence's own, cut where the
    engine's timing puts the word boundary (so no half ends like a sentence)."""
    v = Voices()
    joe = Voice("piper", "joe")
    whole = v.speak("What time do you open on Sundays?", joe)
    clip = v.clip(Utterance(text="What time do you | open on Sundays?", voice=joe,
                            pause_ms=600))
    speech = (clip.last_voiced - clip.first_voiced + 1) * 20
    # The sentence's length plus the pause (Piper varies a little from one run to the next),
    # shorter than the two halves said apart, each with its own ending.
    apart = v.clip(Utterance(text="What time do you | open on Sundays?", voice=joe,
                             pause_ms=600, apart=True))
    assert abs(speech - (len(trim(whole)) / 32 + 600)) < 250
    assert speech < (apart.last_voiced - apart.first_voiced + 1) * 20


def test_noises_are_voiced_and_short() -> None:
    for kind in ("cough", "burst"):
        clip = make_clip(noise(kind), kind)
        assert 200 <= (clip.last_voiced - clip.first_voiced + 1) * 20 <= 420
