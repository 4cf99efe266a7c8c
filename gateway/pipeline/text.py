"""Text helpers for the LLM -> TTS hop: streaming sentence splitting and reply truncation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_SURROGATE = re.compile("[\ud800-\udfff]")
# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e approx inc ltd co fig".split()
)
_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n+")
# A clause ends at a comma, semicolon or colon before a space, or a spaced dash.
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[–—-](?=\s)")
_MIN_CLAUSE = 12  # characters: "On Sundays," is a clause, "Yes," is not worth a cut
# The first sentence of a spoken reply is cut at a clause when longer than this.
FIRST_CLAUSE_CHARS = 50
# A phrase may start at these (prepositions, conjunctions, relative words): a speaker can
# pause before them. Not "to" or "of": they bind ("Monday to Friday", "a block of 10").
_PHRASE_START = frozenset(
    "from at in on onto into for with until till after before during between since "
    "except without within including unless because but and or which who where when "
    "while although though".split()
)
_MIN_PHRASE_WORDS = 4  # before a phrase cut: "The pool is open | from 8 am ..."
_MIN_TAIL_WORDS = 3  # after it, so the rest is not a lone "at 9."
# A piece does not end on these either: "Lessons are | on Wednesdays" dangles.
_NO_CUT_AFTER = _PHRASE_START | frozenset("is are was were be been".split())
_WORD = re.compile(r"\S+")


class SentenceSplitter:
    """Feed LLM tokens; get back whole sentences as soon as they are complete.

    A sentence ends at ., !, ? or … followed by whitespace (so "3.5" and "e.g." stay
    whole), or at a newline. Very long runs without punctuation are cut at a comma or
    space so TTS never waits for a whole paragraph.

    ``first_clause_chars``: a reply's first sentence longer than this is cut at its
    first clause (a comma, semicolon or dash after at least ``_MIN_CLAUSE`` characters)
    if that clause is no longer than this either, else at its first phrase boundary
    (``phrase_cut``), else at its first clause: speech starts after synthesising a few
    words, not the whole sentence (Piper's time grows with the audio's length). 0: off.
    """

    def __init__(self, max_chars: int = 220, min_chars: int = 2,
                 first_clause_chars: int = 0) -> None:
        self.max_chars = max_chars
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self._first = True
        self._buf = ""

    def push(self, token: str) -> list[str]:
        self._buf += token
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if sentence:
                out.append(sentence)
                self._first = False
        return out

    def flush(self) -> list[str]:
        out: list[str] = []
        if self._first and self.first_clause_chars:
            cut = self._first_cut(len(self._buf))  # the end: its last word is whole now
            if cut is not None:
                out.append(self._buf[:cut].strip())
                self._buf = self._buf[cut:]
        rest, self._buf = self._buf.strip(), ""
        self._first = True
        return [*out, rest] if rest else out

    def _find_cut(self) -> int | None:
        end = self._sentence_cut()
        if self._first and self.first_clause_chars:
            clause = self._first_cut(end)
            if clause is not None:
                return clause
        return end

    def _first_cut(self, sentence_end: int | None) -> int | None:
        """Where to cut a first sentence longer than ``first_clause_chars`` (in a
        streamed sentence: once that much of it has arrived)."""
        sentence = self._buf if sentence_end is None else self._buf[:sentence_end]
        lead = len(sentence) - len(sentence.lstrip())
        if len(sentence.strip()) <= self.first_clause_chars:
            return None
        m = _CLAUSE.search(sentence, lead + _MIN_CLAUSE)
        if m is not None and m.end() - lead <= self.first_clause_chars:
            return m.end()
        phrase = phrase_cut(sentence, complete=sentence_end is not None)
        if phrase is not None:
            return phrase
        return m.end() if m is not None else None

    def _sentence_cut(self) -> int | None:
        for m in _END.finditer(self._buf):
            end = m.end()
            head = self._buf[:end].strip()
            if len(head) < self.min_chars:
                continue
            if m.group().startswith(".") and self._is_abbreviation(m.start()):
                continue
            return end
        if len(self._buf) > self.max_chars:
            window = self._buf[: self.max_chars]
            pos = max(window.rfind(", "), window.rfind("; "))
            if pos < self.max_chars // 3:
                pos = window.rfind(" ")
            return pos + 1 if pos > 0 else self.max_chars
        return None

    def _is_abbreviation(self, dot: int) -> bool:
        word = self._buf[:dot].rsplit(None, 1)[-1].lower() if self._buf[:dot].strip() else ""
        word = word.lstrip("(\"'")
        return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


# English words a finished sentence does not end on: articles, possessives, conjunctions,
# a few prepositions that need an object, hesitations. Whisper keeps them when a speaker
# pauses after one ("until what time is the"), though it tends to add a "?". Not "on",
# "from", "for": phrasal verbs end on them ("what number can I ring you on?" waited the
# full 2.5 s when "on" was here); the language model judges those.
_DANGLING = frozenset(
    "a an the my your our their its and or but if because than whether of into onto "
    "um uh erm er".split()
)


def ends_mid_sentence(text: str) -> bool:
    """Whether an (English) transcript ends on a word a sentence cannot end on."""
    words = re.findall(r"[a-z']+", text.lower())
    return bool(words) and words[-1] in _DANGLING


def phrase_cut(text: str, *, complete: bool = True) -> int | None:
    """Where ``text`` (one sentence) can be cut before a preposition or conjunction
    (``_PHRASE_START``): the start of the first such word with at least
    ``_MIN_PHRASE_WORDS`` words before it and ``_MIN_TAIL_WORDS`` from it on, where the
    cut splits no name, number range or list. ``complete=False``: ``text`` is still
    streaming, so its last word may be a fragment ("in" of "including")."""
    words = [m for m in _WORD.finditer(text)]
    if not complete and words and words[-1].end() == len(text):
        words.pop()
    for i in range(_MIN_PHRASE_WORDS, len(words) - _MIN_TAIL_WORDS + 1):
        word = words[i].group()
        if word in _PHRASE_START and not _binds(words[i - 1].group(), word,
                                                 words[i + 1].group()):
            return words[i].start()
    return None


def _binds(before: str, word: str, after: str) -> bool:
    """Whether a pause before ``word`` would split what belongs together."""
    if before.lower() in _NO_CUT_AFTER or ends_mid_sentence(before):
        return True  # a piece does not end on "and", "the", "of", "are" ...
    if before[:1].isupper() and after[:1].isupper():
        return True  # inside a name: "Stratford on Avon", "Christmas Day and New Year"
    if word in ("and", "or"):
        # a list or range of names or amounts: "Saturdays and Sundays", "9 and 5"
        return before[:1].isupper() or after[:1].isupper() or _is_amount(after)
    return False


def _is_amount(word: str) -> bool:
    return word[:1] in "£$€" or any(c.isdigit() for c in word)


@dataclass(frozen=True, slots=True)
class SpokenSegment:
    """A piece of reply text and how long its audio lasts."""

    text: str
    duration_ms: float


def heard_text(segments: Sequence[SpokenSegment], played_ms: float) -> str:
    """The part of a reply the listener heard, given how much audio was played.

    Whole segments that were played are kept; the one playing at the cut is kept
    up to the word at the proportional position (like the Realtime API's
    ``conversation.item.truncate``, which cuts at an audio offset).
    """
    parts: list[str] = []
    remaining = played_ms
    for seg in segments:
        if remaining <= 0:
            break
        if remaining >= seg.duration_ms:
            parts.append(seg.text)
            remaining -= seg.duration_ms
            continue
        words = seg.text.split()
        keep = int(len(words) * remaining / seg.duration_ms) if seg.duration_ms > 0 else 0
        if keep:
            parts.append(" ".join(words[:keep]))
        break
    return " ".join(parts)


def clean(value: str) -> str:
    """Text from an upstream provider (an LLM's reply), made storable and sendable: NUL
    dropped, lone surrogates replaced by U+FFFD. A client's text is refused instead
    (``gateway.protocol.fields``); a provider's is the gateway's to say, so it is mended,
    not lost (a surrogate could not even be sent: it ended the session's writer)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # in a str every surrogate is a lone one
        value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\x00", "") if "\x00" in value else value
