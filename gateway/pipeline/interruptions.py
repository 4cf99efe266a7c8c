"""Interruptions like a person: what the user said over a reply decides. Pure.

While the assistant speaks, speech that lasts ``vad.barge_in_min_ms`` is only a
*candidate*: the reply keeps playing while a quick decode of the overlapping speech
says what it was (see ``classify``):

- ``Overlap.WORDS``: at least ``min_words`` words that are not backchannels: a real
  interruption. The reply stops (queued audio purged, history keeps what was heard) and
  the speech becomes the next user turn.
- ``Overlap.BACKCHANNEL``: only "mhm", "okay", "right", "I see" ... (and hums however
  they are spelled: "M. H. M.", "hmm", "uh huh"): the reply goes on.
- ``Overlap.NO_WORDS``: a cough, a door, noise (or words the recogniser itself doubts,
  below ``min_confidence``: Whisper turns hums into words): the reply goes on.
- ``Overlap.UNSURE``: a decode of speech still going on, shorter than
  ``partial_min_ms``, whose words hold none that people interrupt with ("wait",
  "sorry", "stop" ...): the reply goes on and a later decode decides (the next one, or
  the one when the speech ends). tiny.en hears the first 250 ms of a hummed "Mhm" as
  "and make." or "and make chin." as surely as a real "Wait," (0.475-0.515 against
  0.477); the whole hum, decoded when it ends, is mostly a hum. Backchannels last
  0.2-0.6 s (Piper and espeak-ng); speech that goes on longer is not one.
- Speech shorter than ``partial_min_ms``, decoded whole when it ends, with no such
  word: its words count only from ``short_min_confidence`` (a whole "Mhm" was heard as
  "and make them." at 0.486; whole short questions score 0.53-0.89). Not a cure: the
  eval's voices spell "Mhm" ("em aitch em"), heard so at up to 0.74 by tiny.en and base.

Why keep playing instead of pausing at the onset and resuming: backchannels and noises
are the common case while someone listens, and a listener hears them cost nothing at
all (no gap, no repeated words). The price is paid only by real interruptions: the
assistant talks on for the time of one decode (about half a second here) before it
yields, as people do. ``mode = "speech"`` restores the old rule (any speech over
``barge_in_min_ms`` interrupts at once).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from . import overrides

DEFAULT_BACKCHANNELS: tuple[str, ...] = (
    "mhm", "mm", "mmm", "hm", "hmm", "mm-hmm", "mm hmm", "mhmm", "uh-huh", "uh huh",
    "um-hum", "aha", "ah",
    "oh", "uh", "um", "ok", "okay", "right", "yeah", "yes", "yep", "yup", "yea", "sure",
    "i see", "got it", "alright", "all right", "cool", "nice", "great", "wow", "really",
    "exactly", "true", "indeed", "of course", "thank you", "thanks", "go on", "oh really",
    "makes sense", "that makes sense", "fine", "good",
)

# Words people open an interruption with: heard alone in a decode of speech still going
# on, they interrupt at once (other short decodes wait for more words, see UNSURE).
INTERRUPT_WORDS = frozenset({
    "wait", "stop", "sorry", "actually", "hold", "hang", "excuse", "pardon", "hey", "no",
    "but", "hello", "listen"})

MODES = ("words", "speech")
ON_OVERLAP = ("play", "pause")

# Recogniser annotations of non-speech: "[Music]", "(coughing)", "*cough*".
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
_WORD = re.compile(r"[a-z0-9']+")
# A hum however the recogniser spells it ("Mhm" as "M. H. M. H.", "Mmm-hmm", "hmm",
# "uh huh", "um"): a token of the letters m, h, n, u alone, with an m or an h. It carries
# no word in any language, so it is a backchannel whatever the configured list.
_HUM = re.compile(r"[mhnu]*[mh][mhnu]*")
_MAX_WORD_CHARS = 40


class Overlap(Enum):
    WORDS = "words"
    BACKCHANNEL = "backchannel"
    NO_WORDS = "no_words"
    UNSURE = "unsure"  # too few words yet (speech still going on): a later decode decides


@dataclass(frozen=True, slots=True)
class InterruptionSettings:
    mode: str = "words"  # words: decided from the transcript | speech: any speech
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS
    min_words: int = 1  # words beyond backchannels that make an interruption
    # A decode of speech still going on interrupts once the speech lasts this long, or
    # at once with a word people interrupt with (INTERRUPT_WORDS); before, it waits.
    partial_min_ms: int = 700
    min_confidence: float = 0.45  # transcripts the STT is less sure of count as no words
    # Speech shorter than partial_min_ms (voiced), decoded whole when it ends: its words
    # count from this confidence, or with a word people interrupt with. Whisper heard a
    # whole "Mhm" as "and make them." at 0.486 (live), "And make him..." at 0.398; whole
    # short questions scored 0.53-0.89 ("What?", "How much?", "Which one?": Piper and
    # three espeak-ng voices).
    short_min_confidence: float = 0.5
    check_interval_ms: int = 500  # re-decode this often while overlapping speech goes on
    # Speech that starts this soon after the user's own turn ended is them going on (a
    # mid-sentence pause the end-of-turn check misjudged), not a sound over the reply:
    # its words count however unsure the STT is (min_confidence does not apply).
    continuation_ms: int = 800
    # While the words are being decided: "play" on (a backchannel costs nothing), or
    # "pause" the reply's audio at once and resume it where it stopped when the speech
    # turns out to carry no words, or after resume_ms without a verdict of words.
    on_overlap: str = "play"
    resume_ms: int = 1000

    @property
    def by_words(self) -> bool:
        return self.mode == "words"


def words(text: str) -> list[str]:
    """Lower-case words, hyphens joined ("Mm-hmm." -> "mmhmm"), annotations dropped."""
    text = _ANNOTATION.sub(" ", text.lower()).replace("-", "")
    return _WORD.findall(text.replace("\u2019", "'"))


@functools.lru_cache(maxsize=64)
def _phrases(backchannels: tuple[str, ...]) -> list[tuple[str, ...]]:
    found = {tuple(words(p)) for p in backchannels}
    return sorted((p for p in found if p), key=len, reverse=True)  # longest match first


def content_words(text: str, backchannels: tuple[str, ...]) -> list[str]:
    """The words of ``text`` that are not part of a backchannel phrase (nor hums)."""
    ws = [w for w in words(text) if not _HUM.fullmatch(w)]
    phrases = _phrases(backchannels)
    left: list[str] = []
    i = 0
    while i < len(ws):
        hit = next((p for p in phrases if tuple(ws[i:i + len(p)]) == p), None)
        if hit is None:
            left.append(ws[i])
            i += 1
        else:
            i += len(hit)
    return left


def classify(text: str, settings: InterruptionSettings,
             confidence: float | None = None, *, partial: bool = False,
             speech_ms: float = 0.0, voiced_ms: float = 0.0) -> Overlap:
    """What the overlapping speech was, from its transcript (``partial``: of speech
    still going on for ``speech_ms`` so far; its final decode comes when it ends;
    ``voiced_ms``: how much of it was voiced, 0 when not known)."""
    if not words(text):
        return Overlap.NO_WORDS
    content = content_words(text, settings.backchannels)
    if len(content) < settings.min_words:
        return Overlap.BACKCHANNEL
    # Words that would interrupt, heard unsure: likely a hum or noise misheard.
    if confidence is not None and confidence < settings.min_confidence:
        return Overlap.NO_WORDS
    if INTERRUPT_WORDS.intersection(content):
        return Overlap.WORDS
    if partial and speech_ms < settings.partial_min_ms:
        return Overlap.UNSURE
    if not partial and 0 < voiced_ms < settings.partial_min_ms and confidence is not None \
            and confidence < settings.short_min_confidence:
        return Overlap.NO_WORDS  # a short sound, decoded whole, heard unsure: a hum
    return Overlap.WORDS


_RULES = overrides.rules(
    "interruptions", (f.name for f in fields(InterruptionSettings)),
    choices={"mode": MODES, "on_overlap": ON_OVERLAP},
    ints={"min_words": (1, 20), "partial_min_ms": (0, 10000), "check_interval_ms": (100, 10000),
          "continuation_ms": (0, 5000), "resume_ms": (100, 10000)},
    numbers={"min_confidence": (0.0, 1.0), "short_min_confidence": (0.0, 1.0)})


def parse_settings(base: InterruptionSettings, raw: Mapping[str, Any]) -> InterruptionSettings:
    """``base`` with the overrides in ``raw`` (an assistant's ``turn_taking.interruptions``
    or a config section). Raises ValueError with a message fit for a client."""
    values = overrides.parse(raw, _RULES)
    if "backchannels" in raw:
        values["backchannels"] = _backchannels(raw["backchannels"])
    return replace(base, **values)


@functools.lru_cache(maxsize=8)
def from_config(c: Any) -> InterruptionSettings:
    """The defaults from the config's ``[interruptions]`` (validated like an override)."""
    raw: dict[str, Any] = {"mode": c.mode, "min_words": c.min_words,
                           "partial_min_ms": c.partial_min_ms,
                           "min_confidence": c.min_confidence,
                           "short_min_confidence": c.short_min_confidence,
                           "check_interval_ms": c.check_interval_ms,
                           "continuation_ms": c.continuation_ms,
                           "on_overlap": c.on_overlap, "resume_ms": c.resume_ms}
    if c.backchannels:
        raw["backchannels"] = list(c.backchannels)
    return parse_settings(InterruptionSettings(), raw)


def as_dict(s: InterruptionSettings) -> dict[str, Any]:
    return {"mode": s.mode, "backchannels": list(s.backchannels), "min_words": s.min_words,
            "partial_min_ms": s.partial_min_ms,
            "min_confidence": s.min_confidence,
            "short_min_confidence": s.short_min_confidence,
            "check_interval_ms": s.check_interval_ms,
            "continuation_ms": s.continuation_ms, "on_overlap": s.on_overlap,
            "resume_ms": s.resume_ms}


def _backchannels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > 200 or \
            not all(isinstance(v, str) for v in value):
        raise ValueError("interruptions.backchannels must be a list of at most 200 strings")
    out: list[str] = []
    for phrase in value:
        ws = words(phrase)
        if not ws or len(ws) > 6 or any(len(w) > _MAX_WORD_CHARS for w in ws):
            raise ValueError("interruptions.backchannels: each entry is 1 to 6 words, "
                             f"not {phrase[:40]!r}")
        out.append(" ".join(ws))
    return tuple(out)
