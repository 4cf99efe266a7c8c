"""Judging answers and summarising figures (pure: text and numbers in, verdicts out).

Answers are compared after ``normalize``: lower case, number words as digits
("twenty-five" -> "25"), thousands separators dropped, "6.30" as "6:30". A fact is a
phrase matched on word boundaries, or ``re:<regex>`` searched in the normalised answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.evaluation.scenario import Fact

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS | {"hundred": 100}
_COMPOUND = re.compile(r"\b(" + "|".join(_TENS) + r")[\s-](" + "|".join(_UNITS[1:10]) + r")\b")
_WORD = re.compile(r"\b(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b")
_NUMBER = re.compile(r"\d+")

# "I don't know" in its usual spoken forms (an answer engine may word it many ways).
_ABSTAIN = re.compile(
    r"\b(i\s+(?:do\s*n[o']?t|don't|really\s+don't|am\s+not|'m\s+not)\s+(?:know|sure)"
    r"|(?:do\s+not|don't|doesn't|does\s+not)\s+(?:have|say|mention|contain|cover|include)"
    r"|(?:can't|cannot|can\s+not|couldn't|could\s+not|unable\s+to)\s+(?:find|tell|say|answer|help)"
    r"|no\s+(?:information|details|mention|answer)"
    r"|not\s+(?:sure|mentioned|in\s+(?:my|the)\s+(?:notes|documents|knowledge|information))"
    r"|(?:i\s+have|there\s+is|there's)\s+no(?:thing)?\s+(?:information|about|on)"
    r"|i\s+don't\s+have)",
)


def normalize(text: str) -> str:
    t = text.lower().replace("’", "'")
    t = _COMPOUND.sub(lambda m: str(_TENS[m[1]] + _UNITS.index(m[2])), t)
    t = _WORD.sub(lambda m: str(_NUMBER_WORDS[m[1]]), t)
    t = re.sub(r"(\d),(\d{3})\b", r"\1\2", t)
    t = re.sub(r"\b([ap])\.m\.", r"\1m", t)
    t = re.sub(r"\b(\d{1,2})\.(\d{2})\s*(am|pm)\b", r"\1:\2 \3", t)
    t = re.sub(r"\b(\d{1,2})(am|pm)\b", r"\1 \2", t)
    return " ".join(t.split())


def numbers(text: str) -> set[str]:
    """The integers in a text after normalisation ("12.50" gives 12 and 50)."""
    return {str(int(n)) for n in _NUMBER.findall(normalize(text))}


def fact_found(fact: Fact, text: str) -> bool:
    norm = normalize(text)
    for alt in fact:
        if alt.startswith("re:"):
            if re.search(alt[3:], norm):
                return True
        elif re.search(r"(?<!\w)" + re.escape(normalize(alt)) + r"(?!\w)", norm):
            return True
    return False


def words(text: str) -> list[str]:
    return re.sub(r"[^\w':]+", " ", normalize(text)).replace("'", "").split()


def word_error_rate(said: str, heard: str) -> float:
    """Word-level edit distance over the words said (after ``normalize``)."""
    ref, hyp = words(said), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


def abstained(text: str) -> bool:
    return bool(_ABSTAIN.search(normalize(text)))


@dataclass(frozen=True, slots=True)
class Verdict:
    correct: bool
    reason: str  # empty when correct
    missing: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    invented: tuple[str, ...] = ()
    abstained: bool = False


def judge(answer: str | None, *, facts: Sequence[Fact], forbid: Sequence[Fact],
          unanswerable: bool, known_numbers: set[str], question: str) -> Verdict:
    """Correct: every fact present, nothing forbidden, no invented number; or, for an
    unanswerable question, an abstention with no numbers the caller did not say."""
    if not answer or not answer.strip():
        return Verdict(False, "no answer")
    said = numbers(question)
    invented = tuple(sorted(numbers(answer) - known_numbers - said, key=int))
    did_abstain = abstained(answer)
    found_forbidden = tuple(" | ".join(f) for f in forbid if fact_found(f, answer))
    if unanswerable:
        # A pointer to what the base does hold (a phone number) is fine; made-up figures not.
        reasons = [] if did_abstain else ["did not say it does not know"]
        if invented:
            reasons.append("numbers not in the knowledge base: " + ", ".join(invented))
        if found_forbidden:
            reasons.append("says " + "; ".join(found_forbidden))
        return Verdict(not reasons, "; ".join(reasons), forbidden=found_forbidden,
                       invented=invented, abstained=did_abstain)
    missing = tuple(" | ".join(f) for f in facts if not fact_found(f, answer))
    reasons = []
    if missing:
        reasons.append("missing " + "; ".join(missing))
    if found_forbidden:
        reasons.append("says " + "; ".join(found_forbidden))
    if invented:
        reasons.append("numbers not in the knowledge base: " + ", ".join(invented))
    return Verdict(not reasons, "; ".join(reasons), missing, found_forbidden, invented,
                   did_abstain)


# --- figures ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    mean: float | None = None
    min: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in (("n", self.n), ("p50", self.p50), ("p95", self.p95),
                             ("max", self.max), ("mean", self.mean), ("min", self.min))}


def stats(values: Iterable[float | None]) -> Stats:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return Stats(0)
    return Stats(len(xs), percentile(xs, 50), percentile(xs, 95), max(xs),
                 sum(xs) / len(xs), min(xs))


@dataclass(slots=True)
class Rate:
    """``passed`` of ``total`` (a rate of nothing is reported as such, not as 100 %)."""

    passed: int = 0
    total: int = 0
    failed_ids: list[str] = field(default_factory=list)

    def add(self, ok: bool, sid: str) -> None:
        self.total += 1
        self.passed += ok
        if not ok:
            self.failed_ids.append(sid)

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.passed / self.total, 1) if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "total": self.total, "percent": self.percent,
                "failed": list(self.failed_ids)}
