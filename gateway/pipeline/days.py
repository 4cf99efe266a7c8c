"""Which days of the week a text speaks of (pure).

"How late can I swim on a Saturday?" is answered by the sentence about Saturdays, not by
the one about weekday mornings that shares more words with it: a question that names a
day and a sentence that names other days do not fit, whatever their embeddings say.
"""

from __future__ import annotations

import re

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL = frozenset(range(7))
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset((5, 6))

_DAY = r"(mon|tues|wednes|thurs|fri|satur|sun)days?\b"
_RANGE = re.compile(r"\b" + _DAY + r"\s*(?:to|-|–|until|till|through)\s*" + _DAY, re.I)
_ONE = re.compile(r"\b" + _DAY, re.I)
_GROUPS = (
    (re.compile(r"\b(?:every ?day|daily|seven days a week|7 days a week|all week)\b", re.I),
     ALL),
    (re.compile(r"\bweek ?days?\b|\bworking days?\b|\bduring the week\b", re.I), WEEKDAYS),
    (re.compile(r"\bweek ?ends?\b", re.I), WEEKEND),
)
_STEMS = ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")


def named(text: str) -> frozenset[int]:
    """The days (0 = Monday) a text names, spelt out ("Saturdays"), as a range
    ("Monday to Friday") or as a group ("weekdays", "every day"); empty when none."""
    days: set[int] = set()
    rest = text
    for m in _RANGE.finditer(text):
        a, b = _STEMS.index(m[1].lower()), _STEMS.index(m[2].lower())
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
        rest = rest.replace(m[0], " ")
    days.update(_STEMS.index(m[1].lower()) for m in _ONE.finditer(rest))
    for pattern, group in _GROUPS:
        if pattern.search(rest):
            days.update(group)
    return frozenset(days)


def fit(question: str, text: str) -> int:
    """+1 when the text names a day the question asks about, -1 when it names only other
    days, 0 when either names none: a cue for ranking, not a verdict."""
    asked = named(question)
    if not asked or asked == ALL:
        return 0
    said = named(text)
    if not said:
        return 0
    return 1 if asked & said else -1
