"""Lip-sync data from TTS phoneme timings: visemes and word timings. Pure.

Visemes are the 15 Oculus/Microsoft shapes (sil PP FF TH DD kk CH SS nn RR aa E ih oh ou).
Phonemes are espeak-ng IPA as Piper produces them; stress and length marks carry no shape
of their own (their time goes to the neighbouring phoneme), spaces and punctuation are
word boundaries and mouth rest. TTS engines that report character timings instead
(ElevenLabs ``alignment``) go through ``alignment_phonemes``: letters as rough phonemes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.providers.base import PhonemeTiming

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih",
           "oh", "ou")

_MAP: dict[str, str] = {}
for _viseme, _phones in {
    "PP": "p b m",
    "FF": "f v",
    "TH": "θ ð",
    "DD": "t d ɾ",
    "kk": "k g ɡ ŋ h x ʔ",
    "CH": "ʃ ʒ tʃ dʒ ç",
    "SS": "s z",
    "nn": "n l ɫ ɲ",
    "RR": "ɹ r ɻ ɚ ɝ",
    "aa": "a ɑ æ ʌ ɐ ɒ",
    "E": "e ɛ ə ɜ",
    "ih": "i ɪ j ɨ y",
    "oh": "o ɔ ɵ",
    "ou": "u ʊ w ʉ",
}.items():
    for _p in _phones.split():
        _MAP[_p] = _viseme

_MARKS = frozenset("ˈˌːˑ̃")
_BOUNDARY = re.compile(r"^[\s.,;:!?¡¿\-—–…\"'()]+$")
_WORD = re.compile(r"[^\W_][\w'’\-]*")


def viseme_of(phoneme: str) -> str:
    if not phoneme or _BOUNDARY.match(phoneme):
        return "sil"
    return _MAP.get(phoneme) or _MAP.get(phoneme[0], "E" if phoneme[0].isalpha() else "sil")


@dataclass(frozen=True, slots=True)
class VisemeCue:
    offset_ms: int
    viseme: str


@dataclass(frozen=True, slots=True)
class WordTiming:
    word: str
    start_ms: int
    end_ms: int


def visemes(phonemes: Sequence[PhonemeTiming], offset_ms: float = 0.0) -> list[VisemeCue]:
    """One cue per change of mouth shape, at ``offset_ms`` + the phoneme's start."""
    cues: list[VisemeCue] = []
    pending_mark_start: float | None = None
    for p in phonemes:
        if p.phoneme in _MARKS:
            # A stress mark's time belongs to the vowel after it.
            pending_mark_start = p.start_ms if pending_mark_start is None else pending_mark_start
            continue
        start = pending_mark_start if pending_mark_start is not None else p.start_ms
        pending_mark_start = None
        shape = viseme_of(p.phoneme)
        if cues and cues[-1].viseme == shape:
            continue
        cues.append(VisemeCue(round(offset_ms + start), shape))
    if phonemes and (not cues or cues[-1].viseme != "sil"):
        cues.append(VisemeCue(round(offset_ms + phonemes[-1].end_ms), "sil"))
    return cues


def _phoneme_words(phonemes: Sequence[PhonemeTiming]) -> list[tuple[float, float, int]]:
    """(start, end, phoneme count) of each spoken word: runs between boundaries."""
    groups: list[tuple[float, float, int]] = []
    start = end = 0.0
    count = 0
    in_word = False
    for p in phonemes:
        if _BOUNDARY.match(p.phoneme or " "):
            if count:
                groups.append((start, end, count))
            count = 0
            in_word = False
            continue
        if not in_word:  # a word may open with a stress mark: its time is the word's
            start = p.start_ms
            in_word = True
        end = p.end_ms
        if p.phoneme not in _MARKS:
            count += 1
    if count:
        groups.append((start, end, count))
    return groups


def spoken_words(text: str) -> list[str]:
    """The words of ``text`` as ``word_timings`` counts them."""
    return _WORD.findall(text)


def word_timings(text: str, phonemes: Sequence[PhonemeTiming],
                 offset_ms: float = 0.0) -> list[WordTiming]:
    """Each word of ``text`` with its span in the audio.

    When the phonemizer's words match the text's one to one (the usual case) they are
    paired directly; otherwise (numbers read out, words run together) each text word is
    placed by its position in the text relative to the phoneme stream.
    """
    words = spoken_words(text)
    groups = _phoneme_words(phonemes)
    if not words or not groups:
        return []
    if len(words) == len(groups):
        pairs = [(w, g[0], g[1]) for w, g in zip(words, groups, strict=True)]
    else:
        pairs = _spread(words, groups)
    return [WordTiming(w, round(offset_ms + s), round(offset_ms + e)) for w, s, e in pairs]


def _spread(words: list[str], groups: list[tuple[float, float, int]]
            ) -> list[tuple[str, float, float]]:
    total_chars = sum(len(w) for w in words)
    total_ph = sum(g[2] for g in groups)
    # Cumulative phoneme position -> time, through the groups (skipping the pauses).
    def at(fraction: float) -> float:
        target = fraction * total_ph
        for start, end, count in groups:
            if target <= count:
                return start + (end - start) * (target / count)
            target -= count
        return groups[-1][1]

    out: list[tuple[str, float, float]] = []
    pos = 0
    for w in words:
        begin, pos = pos, pos + len(w)
        start = at(begin / total_chars)
        end = at(pos / total_chars)
        out.append((w, start, max(end, start + 1)))
    return out


# --- character alignment (ElevenLabs): letters as approximate phonemes ----------------------

_DIGRAPHS = {"th": "θ", "sh": "ʃ", "ch": "tʃ", "ph": "f", "ng": "ŋ", "wh": "w", "ck": "k",
             "qu": "k", "gh": "f"}
_LETTERS = dict(zip("abcdefghijklmnopqrstuvwxyz",
                    ["a", "b", "k", "d", "e", "f", "g", "h", "i", "dʒ", "k", "l", "m", "n",
                     "o", "p", "k", "ɹ", "s", "t", "u", "v", "w", "k", "j", "z"], strict=True))
_JOINERS = frozenset("'’-")  # inside a word: part of it ("don't", "well-known")


def _letter_phone(ch: str) -> str:
    base = unicodedata.normalize("NFD", ch.lower())[:1]  # "é" -> "e"
    return _LETTERS.get(base, "ə")  # digits and other scripts: a neutral open mouth


def _is_word_char(chars: Sequence[str], i: int) -> bool:
    ch = chars[i]
    if ch.isalnum():
        return True
    if ch not in _JOINERS:
        return False
    # Inside a word; at the edge of a chunk of alignment one letter beside it will do.
    before = chars[i - 1].isalnum() if i > 0 else None
    after = chars[i + 1].isalnum() if i + 1 < len(chars) else None
    return bool(before and after) if None not in (before, after) else bool(before or after)


def alignment_phonemes(chars: Sequence[str], starts_ms: Sequence[float],
                       durations_ms: Sequence[float],
                       offset_ms: float = 0.0) -> tuple[PhonemeTiming, ...]:
    """Character timings (ElevenLabs ``alignment``) as rough phonemes from the letters.

    Letters map to the sound they usually make (common digraphs as one sound); spaces and
    punctuation become word boundaries, so ``visemes`` and ``word_timings`` work on the
    result as on real phonemes. Apostrophes and hyphens inside a word stay in the word.
    """
    n = min(len(chars), len(starts_ms), len(durations_ms))
    out: list[PhonemeTiming] = []
    i = 0
    while i < n:
        start = offset_ms + starts_ms[i]
        end = start + max(durations_ms[i], 0.0)
        if not _is_word_char(chars, i):
            out.append(PhonemeTiming(" ", start, end))
            i += 1
            continue
        if chars[i] in _JOINERS:  # its time goes to the letter before it
            if out:
                out[-1] = PhonemeTiming(out[-1].phoneme, out[-1].start_ms, end)
            i += 1
            continue
        pair = (chars[i] + chars[i + 1]).lower() if i + 1 < n else ""
        if pair in _DIGRAPHS:
            end = offset_ms + starts_ms[i + 1] + max(durations_ms[i + 1], 0.0)
            out.append(PhonemeTiming(_DIGRAPHS[pair], start, end))
            i += 2
            continue
        out.append(PhonemeTiming(_letter_phone(chars[i]), start, end))
        i += 1
    return tuple(out)


def alignment_word_timings(chars: Sequence[str], starts_ms: Sequence[float],
                           durations_ms: Sequence[float],
                           offset_ms: float = 0.0) -> list[WordTiming]:
    """Words straight from character timings: each run of word characters is a word."""
    n = min(len(chars), len(starts_ms), len(durations_ms))
    words: list[WordTiming] = []
    letters: list[str] = []
    start = end = 0.0
    for i in range(n + 1):
        if i < n and _is_word_char(chars, i):
            if not letters:
                start = offset_ms + starts_ms[i]
            letters.append(chars[i])
            end = offset_ms + starts_ms[i] + max(durations_ms[i], 0.0)
        elif letters:
            words.append(WordTiming("".join(letters), round(start), round(max(end, start + 1))))
            letters = []
    return words


def alignment_visemes(chars: Sequence[str], starts_ms: Sequence[float],
                      durations_ms: Sequence[float], offset_ms: float = 0.0) -> list[VisemeCue]:
    """Approximate mouth shapes from character timings (letters, not real phonemes)."""
    return visemes(alignment_phonemes(chars, starts_ms, durations_ms), offset_ms)
