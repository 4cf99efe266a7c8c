"""Which ages a text speaks of, and which of them a question's age falls in (pure).

"Does my two year old need a ticket?" is answered by "children under 3 swim free", not
by "children under 8 must be accompanied", though both hold a two-year-old: of the age
ranges that hold the asked age, the narrowest says the most about it. A sentence whose
ranges all miss the age ("seniors over 65 pay £4" for a twelve-year-old) is about
other people.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OLDEST = 120
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_N = r"(\d{1,3}|" + "|".join(_WORDS) + r")"
# Not ages: "under 3 hours", "over 10 people", "up to 15 children".
_NOT_AGE = r"(?!\s*(?:hours?|minutes?|mins?|days?|weeks?|months?|metres?|meters?|km|miles?|" \
           r"people|persons?|children|kids|guests|members|books|items|pounds?|euros?|" \
           r"dollars?|pence|p\b|%|percent|times|lanes|spaces))"
_ASKED = (
    re.compile(r"\b" + _N + r"[- ](?:years?|yrs?)[- ]old\b", re.I),
    re.compile(r"\b(?:aged|age) " + _N + r"\b", re.I),
    re.compile(r"\b" + _N + r"[- ]months?[- ]old\b", re.I),  # a baby: age 0
)
_RANGE = re.compile(r"\b(?:aged |ages? |from )?" + _N + r" ?(?:to|-|–|and) ?" + _N +
                    r"(?:[- ]years?[- ]olds?| years)?\b", re.I)
_UNDER = re.compile(r"\b(?:under|below|younger than|less than) (?:the age of )?" + _N + r"\b"
                    + _NOT_AGE + r"|\bunder-" + _N + r"s\b", re.I)
_OVER = re.compile(r"\b(?:over|above|older than) (?:the age of )?" + _N + r"\b" + _NOT_AGE, re.I)
_FROM = re.compile(r"\b(?:aged )?" + _N + r" (?:or|and) (?:over|older|above|up)\b|\b" + _N +
                   r"\+", re.I)
_AGED_ALONE = re.compile(r"\baged\b", re.I)


def _num(word: str) -> int:
    return int(word) if word.isdigit() else _WORDS[word.lower()]


def asked(question: str) -> int | None:
    """The age a question is about ("my two year old", "aged 7"), or None."""
    for i, pattern in enumerate(_ASKED):
        m = pattern.search(question)
        if m:
            return 0 if i == 2 else _num(m[1])
    return None


def ranges(text: str) -> list[tuple[int, int]]:
    """Every age range a text states, inclusive: "under 3" (0, 2), "over 65" (66, 120),
    "aged 16 or over" (16, 120), "aged 4 to 12" (4, 12)."""
    out: list[tuple[int, int]] = []
    rest = text
    if _AGED_ALONE.search(text) or re.search(r"year[- ]olds?", text, re.I):
        for m in _RANGE.finditer(text):
            out.append((_num(m[1]), _num(m[2])))
            rest = rest.replace(m[0], " ")
    for m in _FROM.finditer(rest):
        out.append((_num(m[1] or m[2]), OLDEST))
        rest = rest.replace(m[0], " ")
    for m in _UNDER.finditer(rest):
        out.append((0, _num(m[1] or m[2]) - 1))
    for m in _OVER.finditer(rest):
        out.append((_num(m[1]) + 1, OLDEST))
    return [(lo, hi) for lo, hi in out if 0 <= lo <= hi <= OLDEST]


def fits(question: str, texts: Sequence[str]) -> list[int]:
    """Per text, for a question about an age: +1 when it holds the narrowest stated range
    that holds the age, -1 when it states ranges and none holds it, else 0 (and all 0
    for a question about no age). A cue for ranking, not a verdict."""
    age = asked(question)
    if age is None:
        return [0] * len(texts)
    narrowest: list[int | None] = []
    stated: list[bool] = []
    for text in texts:
        found = ranges(text)
        holding = [hi - lo for lo, hi in found if lo <= age <= hi]
        narrowest.append(min(holding) if holding else None)
        stated.append(bool(found))
    best = min((w for w in narrowest if w is not None), default=None)
    return [1 if w is not None and w == best else -1 if s and w is None else 0
            for w, s in zip(narrowest, stated, strict=True)]
