"""Grounded short answers: pick the sentence (or clause) of the passages that answers.

Pure: no model, no I/O. The caller (``gateway.providers.grounded_llm``) embeds the
query and the candidate units with the sentence embedder and hands the similarities in;
everything else here is text. A unit scores by its embedding similarity to the query,
the share of the question's content words it contains, and whether it holds the kind
of thing the question asks for (a time, a price, a number, a rule). Below a relevance
floor the answer is an abstention: saying "I don't know" beats a confident wrong fact.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from gateway.pipeline import ages, days
from gateway.providers.base import Message, Passage

ABSTAIN = "I'm sorry, I don't know that."
GREETING = "Hello! What would you like to know?"
THANKS = "You're welcome."
MAX_WORDS = 30
_CHAT_WORDS = frozenset(
    """hi hello hey hiya morning afternoon evening good there thanks thank you cheers
    very much so lot a great okay ok bye goodbye""".split())

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
# Clause boundaries inside a long sentence (kept with the clause that follows).
_CLAUSE = re.compile(r"(?:,|;|:|\s-)\s+(?=(?:but|and|except|which|when|while|so|or|"
                     r"apart|unless|although|where|as)\b)|;\s+")
_STOP = frozenset(
    """a an and are as at be by can could do does did for from has have had how i i'm in
    is it its it's me my of on or so that the this to was were what what's when where
    which who why will with you your we our us tell about please would should there
    their they them any some much many if then than just also get got go going want
    like know need let i'd i'll one really okay ok well hi hello yes no not
    am may might must shall exactly actually right now""".split()
)
_LEADING = re.compile(r"^(?:but|and|also|so|however|then)\b,?\s*", re.IGNORECASE)


class Kind(Enum):
    TIME = "time"  # a clock time (or "closed")
    DATE = "date"  # a day, a month, a year or a time
    YEAR = "year"  # when something happened: a year or a date, not this week's hours
    PRICE = "price"
    NUMBER = "number"
    PHONE = "phone"  # a telephone number
    PLACE = "place"
    PERSON = "person"  # who runs, owns, leads...: a sentence naming a role or a person
    RULE = "rule"  # a yes/no question: a rule sentence
    OTHER = "other"


# The first cue that matches decides the kind. TIME, PRICE and NUMBER are strict: a unit
# without such a fact cannot answer ("how much is a wedding?" over a text with no price
# is unanswerable, whatever else it says about weddings).
_KIND_CUES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.PRICE, re.compile(
        r"\b(how much|cost|costs|price|prices|pay|fee|fees|(?<!in )charge|charges|expensive|"
        r"cheap|discount|reduction|reduced|concession)\b")),
    (Kind.TIME, re.compile(
        r"\b(what time|how late|how early|until when|till when|until what time|"
        r"opening hours|opening times|when do you (?:open|close|shut)|"
        r"when does (?:it|the \w+) (?:open|close|shut|start|finish|end))\b")),
    (Kind.PHONE, re.compile(
        r"\b(?:(?:tele)?phone|mobile|contact) number\b|\bnumber (?:can|could|should|do|"
        r"shall) (?:i|we) (?:ring|call|phone|dial)\b|\b(?:ring|call|phone) (?:you|the \w+)\b")),
    (Kind.NUMBER, re.compile(
        r"\b(how many|how long|how far|how old|how big|what number)\b")),
    (Kind.YEAR, re.compile(r"\b(when (?:was|were|did)|what year|which year|since when|"
                           r"how long ago)\b")),
    (Kind.DATE, re.compile(r"\b(when|what day|which day|what date|which days)\b")),
    (Kind.PLACE, re.compile(r"\b(where|whereabouts|which floor|what address|your address|"
                            r"located|how do i get)\b")),
    (Kind.PERSON, re.compile(r"\bwho(?:'s|\s+(?:is|are|was|were|runs|owns|manages|leads|"
                             r"heads|founded|started|looks after))\b")),
    (Kind.RULE, re.compile(
        r"^(can|may|could|am|is|are|do|does|must|should|will|have|would)\b|"
        r"\b(allowed|permitted|rule|rules|let me|okay to|ok to)\b")),
)
STRICT = frozenset((Kind.TIME, Kind.PRICE, Kind.NUMBER, Kind.PHONE, Kind.DATE, Kind.YEAR,
                    Kind.PERSON))
# Words that only say what kind of fact is wanted: they do not name the subject.
_KIND_WORDS = frozenset(
    "much cost price pay fee charge expensive cheap time late early long many number "
    "old far big open close shut start finish end allowed permitted rule phone telephone "
    "ring call dial mobile contact".split())
_NUMBER_WORDS = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|"
                 r"twenty|thirty|forty|fifty|sixty|hundred|half|quarter")
_CLOCK = (r"\b\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)|\b\d{1,2}[:.]\d{2}\b|"
          r"\bnoon\b|\bmidday\b|\bmidnight\b|\bo'clock\b")
_TIME = re.compile(_CLOCK + r"|\bclosed\b", re.IGNORECASE)
_DATE = re.compile(
    _CLOCK + r"|\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b|\bweekends?\b|"
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|"
    r"december)\b|\b(?:1[5-9]|20)\d\d\b|\bevery (?:day|week|month|year)\b|\bdaily\b|"
    r"\bin advance\b", re.IGNORECASE)
_PRICE = re.compile(
    r"[£$€]\s?\d|\b\d+(?:[.,]\d+)?\s*(?:pounds?|euros?|dollars?|pence|p|cents?|percent|%)"
    r"|\b(?:" + _NUMBER_WORDS + r")\s+(?:pounds?|euros?|dollars?)"
    r"|\bfree\b|\bno charge\b|\bcosts? nothing\b|\bincluded\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d|\b(?:" + _NUMBER_WORDS + r")\b", re.IGNORECASE)
_RULE = re.compile(r"\b(?:not|no|never|must|may|allowed|permitted|welcome|only|free|"
                   r"can|cannot|can't|need|needs|required|please|except|apart|have to|"
                   r"has to)\b", re.IGNORECASE)
_PLACE = re.compile(r"\b(?:street|road|lane|avenue|square|floor|next to|opposite|near|"
                    r"behind|beside|outside|entrance|upstairs|downstairs|minutes? walk|"
                    r"room|desk|reception|cloakroom|car park|station)\b", re.IGNORECASE)
# A role or a titled name: what answers "who is in charge?" (a sentence without one
# cannot, however close its words).
_PERSON = re.compile(r"\b(?:manager|managers|director|owner|owners|head of|chair|chairman|"
                     r"chairwoman|founder|founded by|run by|owned by|managed by|led by|"
                     r"staff|team|lifeguards?|instructors?|teachers?|coach(?:es)?|"
                     r"librarians?|curators?|receptionists?|volunteers?|(?:Mr|Mrs|Ms|Dr)\.?"
                     r"\s+[A-Z])", re.IGNORECASE)
_YEAR = re.compile(r"\b(?:1[5-9]|20)\d\d\b|\b(?:january|february|march|april|may|june|july|"
                   r"august|september|october|november|december) \d{1,2}\b|\b\d{1,2}(?:st|nd|"
                   r"rd|th)? (?:of )?(?:january|february|march|april|may|june|july|august|"
                   r"september|october|november|december)\b|\byears? ago\b", re.IGNORECASE)
_PHONE = re.compile(r"(?:\+|\b)\d{3,5}[ -]?\d{3}[ -]?\d{3,4}\b")
_KIND_PATTERN = {Kind.PLACE: _PLACE, Kind.PHONE: _PHONE, Kind.PERSON: _PERSON, Kind.YEAR: _YEAR,
                 Kind.TIME: _TIME, Kind.DATE: _DATE, Kind.PRICE: _PRICE, Kind.NUMBER: _NUMBER,
                 Kind.RULE: _RULE}
# A follow-up leans on the previous question: "and on Sundays?", "what about children?"
_YOU = re.compile(r"\b(?:you|your|yours|you're)\b", re.IGNORECASE)
_FOLLOW_UP = re.compile(r"^\s*(?:and|what about|how about|and what about|and how about|"
                        r"also|or|what if|same for|then)\b", re.IGNORECASE)


# "Is there a water slide?", "do you sell second-hand books?": whether a thing exists or
# is on offer. A sentence that never names the thing (nor a near word for it) does not
# answer that, however close the rest of it is: the base does not say. ("Can I get ...?"
# is left out: it asks for a service as often as for a thing.)
_OFFER = re.compile(r"(?:^|[.?!]\s+)(?:is there|are there|do you (?:have|sell|offer|lend|rent|"
                    r"hire|do)|have you got|can i (?:buy|borrow|hire|rent))\s+(?P<thing>[^.?!]+)")


@dataclass(frozen=True, slots=True)
class Unit:
    """A sentence (or a clause of a long one) of a passage: what an answer is made of."""

    text: str
    passage: int  # index into the passages
    index: int  # position in the passage
    heading: str = ""

    @property
    def embed_text(self) -> str:
        """What is embedded: the sentence under its heading, which names its topic
        ("Barge-in. You can interrupt the assistant at any time.")."""
        return f"{self.heading}. {self.text}" if self.heading else self.text

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True, slots=True)
class Weights:
    """Tuned on tests/data/grounded (held out: the eval pool set); see README."""

    similarity: float = 1.0
    lexical: float = 0.2
    kind: float = 0.12
    rank: float = 0.03  # the retriever's order breaks near-ties
    day: float = 0.15  # the question names a day: a unit naming it (+), only others (-)
    age: float = 0.15  # ... an age: the narrowest range holding it (+), only others (-)
    floor: float = 0.36  # below this best score: abstain
    min_similarity: float = 0.3  # below this similarity: abstain whatever the words
    second: float = 0.8  # a neighbour joins if it scores this share of the best
    # The sentence most like the question lacks the fact asked for (a price, a time)
    # and the best one holding such a fact is this much less similar, in another
    # passage: that fact is about something else, the base does not say.
    off_topic: float = 0.12
    # ... unless the best one holds most of the question's telling words itself.
    on_topic: float = 0.5
    # An "is there ...?" question's thing not in the passages must have a word this near
    # it (MiniLM, word to word) in the answer: "kids" -> "children" 0.6, "slide" -> 0.3.
    offer_neighbour: float = 0.42


@dataclass(frozen=True, slots=True)
class Scored:
    unit: Unit
    score: float
    similarity: float
    lexical: float
    kind_match: bool
    age_fit: int = 0  # see ages.fits


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    abstained: bool
    best: Scored | None = None


def question_kind(question: str) -> Kind:
    q = " ".join(_WORD.findall(question.lower()))
    for kind, cue in _KIND_CUES:
        if cue.search(q):
            return kind
    return Kind.OTHER


_SUFFIXES = (("ings", ""), ("ing", ""), ("ies", "y"), ("ied", "y"), ("es", ""), ("ed", ""),
             ("s", ""))


def stem(word: str) -> str:
    """A crude English stem: enough to match "opens"/"opening"/"opened", "tickets",
    "parties"/"party" and "swimming"/"swim"."""
    word = word.removesuffix("'s")
    for suffix, instead in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + instead
            if (suffix in ("ings", "ing", "ed") and word[-1] == word[-2]
                    and word[-1] not in "aeiouls"):
                word = word[:-1]  # swimm -> swim, stopp -> stop (not call, dress)
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def content_words(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(fold(text)) if w not in _STOP and len(w) > 1}


def fold(text: str) -> str:
    """Lower case without accents: a recogniser writes "cafe" where the text has "café"."""
    text = text.lower()
    if text.isascii():
        return text
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


# As ``content_words`` spells them ("price" -> "pric", "allowed" -> "allow"): compared
# unstemmed, most of them never matched.
_KIND_STEMS = frozenset(stem(w) for w in _KIND_WORDS)


def query_text(messages: Sequence[Message], question: str) -> str:
    """What to search and select with: the question, led by the previous user turn when
    the question is a bare follow-up ("and on Sundays?") that cannot stand alone."""
    if not _is_follow_up(question):
        return question
    users = [m.content for m in messages if m.role == "user"]
    if users and users[-1].strip() == question.strip():
        users = users[:-1]
    if not users:
        return question
    return f"{users[-1].strip()} {question.strip()}"


def _is_follow_up(question: str) -> bool:
    """A follow-up cue, or no subject at all ("how much?"); but a question about "you"
    with no other subject asks about the place itself ("where exactly are you?")."""
    if _FOLLOW_UP.search(question):
        return True
    return not content_words(question) and not _YOU.search(question)


def split_units(passages: Sequence[Passage], max_words: int = MAX_WORDS) -> list[Unit]:
    """Every sentence of every passage; a sentence over ``max_words`` is cut into its
    clauses (each a unit of its own, so one fact can be spoken without the rest)."""
    units: list[Unit] = []
    for p_index, passage in enumerate(passages):
        sentences = [s.strip() for s in _SENTENCE.split(" ".join(passage.text.split()))]
        index = 0
        for sentence in sentences:
            if not sentence:
                continue
            parts = [sentence]
            if len(sentence.split()) > max_words:
                parts = [c.strip(" ,;:") for c in _CLAUSE.split(sentence) if c.strip(" ,;:")]
            for part in parts:
                units.append(Unit(part, p_index, index, passage.title))
                index += 1
    return units


def score_units(question: str, units: Sequence[Unit], similarities: Sequence[float],
                weights: Weights = Weights(), *, strict: bool = True) -> list[Scored]:
    """Units with their scores, best first. ``similarities[i]`` is the cosine of the
    query's embedding and ``units[i]``'s (0 for all: lexical selection only). For a
    strict kind (a time, a price, a number, a date), units without one are left out."""
    kind = question_kind(question)
    pattern = _KIND_PATTERN.get(kind)
    have = [content_words(f"{u.heading} {u.text}") for u in units]
    idf = _idf(content_words(question) - _KIND_STEMS, have)
    total = sum(idf.values())
    age_fit = ages.fits(question, [u.text for u in units])
    scored = []
    for unit, words, sim, age in zip(units, have, similarities, age_fit, strict=True):
        lexical = sum(v for w, v in idf.items() if w in words) / total if total else 0.0
        match = bool(pattern and pattern.search(unit.text))
        if strict and kind in STRICT and not match:
            continue
        score = (weights.similarity * sim + weights.lexical * lexical
                 + weights.kind * match - weights.rank * unit.passage
                 + weights.day * days.fit(question, unit.text) + weights.age * age)
        scored.append(Scored(unit, score, float(sim), lexical, match, age))
    return sorted(scored, key=lambda s: -s.score)


def _idf(wanted: set[str], have: Sequence[set[str]]) -> dict[str, float]:
    """How telling each wanted word is among the candidates: a word in every unit
    ("museum") says little; one in none ("wifi") is the question's real subject."""
    n = len(have)
    return {w: math.log((n + 1) / (sum(w in h for h in have) + 0.5)) for w in wanted}


def small_talk(question: str) -> str | None:
    """The reply to a bare greeting or thanks (no question in it), else None."""
    words = _WORD.findall(question.lower())
    if not words or not set(words) <= _CHAT_WORDS:
        return None
    return THANKS if set(words) & {"thanks", "thank", "cheers"} else GREETING


def choose(question: str, units: Sequence[Unit], similarities: Sequence[float],
           weights: Weights = Weights(), max_words: int = MAX_WORDS) -> Answer:
    """The answer: the best unit (and its neighbour in the same passage when that also
    scores high and both fit in ``max_words``), or an abstention."""
    chat = small_talk(question)
    if chat is not None:
        return Answer(chat, False)
    ranked = score_units(question, units, similarities, weights)
    if not ranked:
        return Answer(ABSTAIN, True)
    best = ranked[0]
    # Every telling word of the question found ("tell me about barge-in") vouches for
    # a unit whose similarity alone is low.
    # So does the right kind of fact for a question with no subject of its own ("where
    # exactly are you?", "what time do you open?"): it asks about the place itself.
    subjectless = best.kind_match and not content_words(question) - _KIND_STEMS
    # And so does the narrowest age range holding the age asked about ("my two year
    # old": "children under 3 swim free").
    named = ((best.lexical >= 0.99 or subjectless or best.age_fit > 0)
             and best.similarity >= weights.min_similarity / 2)
    if not named and (best.score < weights.floor
                      or best.similarity < weights.min_similarity):
        return Answer(ABSTAIN, True, best)
    topic = score_units(question, units, similarities, weights, strict=False)[0]
    if (not topic.kind_match and topic.unit.passage != best.unit.passage
            and best.lexical < weights.on_topic
            and topic.similarity - best.similarity > weights.off_topic):
        return Answer(ABSTAIN, True, best)
    # Of two neighbours that qualify, the earlier: a text states its rule before the
    # exceptions ("open Tuesday to Sunday..." before "on Thursdays, until 9 pm").
    near = [o.unit for o in ranked[1:3]
            if o.unit.passage == best.unit.passage and abs(o.unit.index - best.unit.index) == 1
            and o.score >= weights.second * best.score
            and o.unit.words + best.unit.words <= max_words]
    chosen = sorted([best.unit, *sorted(near, key=lambda u: u.index)[:1]], key=lambda u: u.index)
    return Answer(" ".join(speakable(u.text) for u in chosen), False, best)


def speakable(text: str) -> str:
    """A unit as a sentence of its own: no leading "but", a capital, a full stop."""
    text = _LEADING.sub("", text.strip()).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def offered_thing(question: str) -> list[str]:
    """The words naming what an "is there / do you sell ...?" question asks about, as
    said (content words, without those that only say what kind of fact is wanted:
    "a reduction for groups" -> groups); [] for any other question."""
    m = _OFFER.search(fold(question))
    if m is None:
        return []
    thing = m.group("thing")
    for _kind, cue in _KIND_CUES[:-1]:  # not RULE's: its cues are the question's opening
        thing = cue.sub(" ", thing)
    words = [w for w in _WORD.findall(thing) if w not in _STOP and len(w) > 1]
    return [w for w in dict.fromkeys(words) if stem(w) not in _KIND_STEMS]


def _stems(units: Sequence[Unit]) -> set[str]:
    """Every content word (stemmed) of the units and their headings."""
    have: set[str] = set()
    for u in units:
        have |= content_words(f"{u.heading} {u.text}")
    return have


def unnamed(words: Sequence[str], units: Sequence[Unit]) -> list[str]:
    """Those of ``words`` that no unit contains (compared by stem)."""
    have = _stems(units)
    return [w for w in words if stem(w) not in have]


def unit_words(unit: Unit) -> list[str]:
    """A unit's content words as written (for comparing word with word)."""
    words = _WORD.findall(fold(f"{unit.heading} {unit.text}"))
    return list(dict.fromkeys(w for w in words if w not in _STOP and len(w) > 1))


def _one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter changed, added or dropped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y),
             len(short))
    return short[i:] == long[i + 1:]


def heard_as(question: str, units: Sequence[Unit]) -> str:
    """The question with each word the passages lack replaced by the one word of theirs
    a letter away, when there is exactly one: what a recogniser most likely misheard
    ("how long is the big tool?" over a text about the pool -> "... big pool?")."""
    have = _stems(units)
    theirs = {w for u in units for w in _WORD.findall(fold(f"{u.heading} {u.text}"))
              if len(w) >= 4 and w not in _STOP and not w.isdigit()}

    def fix(m: re.Match[str]) -> str:
        word = m[0]
        low = word.lower()
        if (len(low) < 4 or low in _STOP or low.isdigit() or stem(low) in have
                or stem(low) in _KIND_STEMS):  # "how late" is not "lane"
            return word
        near = [w for w in theirs if _one_edit(low, w)]
        return near[0] if len(near) == 1 else word

    return _WORD.sub(fix, fold(question))
