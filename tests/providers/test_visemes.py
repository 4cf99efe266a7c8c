"""Lip-sync data: viseme mapping (pure) and word timings against real synthesised audio."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.providers import visemes as vz
from gateway.providers.base import PhonemeTiming


def ph(*items: tuple[str, float, float]) -> list[PhonemeTiming]:
    return [PhonemeTiming(p, s, e) for p, s, e in items]


def test_viseme_mapping() -> None:
    assert vz.viseme_of("p") == "PP" and vz.viseme_of("m") == "PP"
    assert vz.viseme_of("f") == "FF" and vz.viseme_of("ð") == "TH"
    assert vz.viseme_of("ʃ") == "CH" and vz.viseme_of("s") == "SS"
    assert vz.viseme_of("ɑ") == "aa" and vz.viseme_of("u") == "ou"
    assert vz.viseme_of(" ") == "sil" and vz.viseme_of(",") == "sil"
    assert all(vz.viseme_of(p) in vz.VISEMES for p in "abcdefghijklmnopqrstuvwxyzəɪʊɛæʌɔ")


def test_cues_merge_repeats_and_end_silent() -> None:
    cues = vz.visemes(ph(("m", 0, 50), ("b", 50, 90), ("ˈ", 90, 120), ("ɑ", 120, 200)), 1000)
    assert [(c.offset_ms, c.viseme) for c in cues] == [
        (1000, "PP"), (1090, "aa"), (1200, "sil")]


def test_word_timings_pair_words_with_phoneme_runs() -> None:
    phonemes = ph(("h", 0, 40), ("aɪ", 40, 120), (" ", 120, 160), ("j", 160, 200),
                  ("u", 200, 300), (".", 300, 400))
    words = vz.word_timings("Hi you.", phonemes, 500)
    assert [(w.word, w.start_ms, w.end_ms) for w in words] == [
        ("Hi", 500, 620), ("you", 660, 800)]


def test_word_timings_when_counts_differ() -> None:
    # "at once" phonemized as one run: both words still get ordered, non-empty spans.
    phonemes = ph(("ɐ", 0, 50), ("t", 50, 80), ("w", 80, 120), ("ʌ", 120, 200),
                  ("n", 200, 260), ("s", 260, 350))
    words = vz.word_timings("at once", phonemes)
    assert [w.word for w in words] == ["at", "once"]
    assert words[0].start_ms == 0 and words[0].end_ms <= words[1].start_ms + 1
    assert words[1].end_ms == 350


SENTENCES = [
    "One. Two. Three. Four.",
    "Hello, world. Barge in, now!",
    "The gateway listens; then it answers, quickly.",
]


def _onset_ms(samples: np.ndarray, rate: int, after_ms: float, floor: float,
              near_ms: float) -> float:
    """The energy onset (a rise after a quiet frame) from ``after_ms`` on that lies
    nearest ``near_ms``. Piper samples its noise anew each time, so a breath or a tail
    can rise in a pause too: the word's own onset is the one its timing points at."""
    hop = rate // 100  # 10 ms frames
    start = int(max(after_ms, 0) * rate / 1000) // hop
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    onsets: list[float] = []
    quiet = False  # first through the previous word's tail into the pause, then a rise
    for i in range(start, len(rms)):
        if rms[i] <= floor:
            quiet = True
        elif quiet:
            onsets.append(i * 10.0)
            quiet = False
    return min(onsets, key=lambda t: abs(t - near_ms), default=float("inf"))


@pytest.mark.parametrize("sentence", SENTENCES)
def test_word_starts_match_the_audio_energy(models, sentence: str) -> None:
    speech = models["tts"].synthesize(sentence)
    samples = np.frombuffer(speech.pcm, dtype="<i2")
    words = vz.word_timings(sentence, speech.phonemes)
    assert [w.word.lower() for w in words] == [
        w.strip(".,;!").lower() for w in sentence.split()]
    peak = np.sqrt((samples.astype(np.float64) ** 2).mean())
    floor = peak * 0.15
    prev_end = 0.0
    checked = 0
    for w in words:
        # The first energy after the previous word (the pause, if any) is this word's start.
        onset = _onset_ms(samples, speech.sample_rate, max(prev_end - 20, 0), floor,
                          w.start_ms)
        if _paused(samples, speech.sample_rate, prev_end, w.start_ms, floor):
            # After a real pause the word's energy onset is unambiguous.
            assert abs(onset - w.start_ms) <= 80, (w, onset)
            checked += 1
        # Every word's span holds speech.
        seg = samples[int(w.start_ms * speech.sample_rate / 1000):
                      int(w.end_ms * speech.sample_rate / 1000)].astype(np.float64)
        assert seg.size and np.sqrt((seg**2).mean()) > floor * 0.5, w
        prev_end = w.end_ms
    assert checked >= 2  # the sentences are built with pauses


def _paused(samples: np.ndarray, rate: int, a_ms: float, b_ms: float, floor: float) -> bool:
    if a_ms == 0:
        return True  # the first word follows the leading silence
    seg = samples[int(a_ms * rate / 1000): int(max(b_ms, a_ms + 10) * rate / 1000)]
    hop = rate // 100
    if seg.size < hop:
        return False
    frames = seg[: seg.size // hop * hop].reshape(-1, hop).astype(np.float64)
    return bool(np.sqrt((frames**2).mean(axis=1)).min() < floor * 0.2)
