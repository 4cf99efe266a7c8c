"""Answer judging and figures (pure)."""

from __future__ import annotations

import pytest

from gateway.evaluation.scoring import (
    Rate,
    abstained,
    fact_found,
    judge,
    normalize,
    numbers,
    percentile,
    stats,
)


def test_normalize_spells_numbers_as_digits() -> None:
    assert normalize("Twenty-five metres, and ninety nine") == "25 metres, and 99"
    assert normalize("Open from 6.30 am to 9pm") == "open from 6:30 am to 9 pm"
    assert normalize("From 6.30 a.m. to 9 p.m.") == "from 6:30 am to 9 pm"
    assert normalize("It costs 1,200 pounds") == "it costs 1200 pounds"
    assert numbers("A ticket costs £6.50 for two hours") == {"6", "50", "2"}


def test_facts_match_words_numbers_and_regexes() -> None:
    answer = "The deep end is three point eight metres deep; it opens at half past six."
    assert fact_found(("3 point 8",), answer)
    assert fact_found(("6:30", "half past 6"), answer)
    assert fact_found(("re:deep\\s+end",), answer)
    assert not fact_found(("8 am",), answer)
    assert not fact_found(("3",), "It costs 13 pounds")  # whole numbers only


@pytest.mark.parametrize("text", [
    "I'm sorry, I don't know about that yet.", "I do not know.",
    "The documents don't say how warm the water is.", "I couldn't find that in my notes.",
    "There is no information about a water slide.", "I'm not sure.",
])
def test_abstentions_in_their_usual_forms(text: str) -> None:
    assert abstained(text)


@pytest.mark.parametrize("text", ["The pool is open from 8 am.", "No, dogs are not allowed.",
                                  "Yes, you can book online."])
def test_answers_are_not_abstentions(text: str) -> None:
    assert not abstained(text)


KB = numbers("Adults pay £6.50. The pool is 25 metres long. Open 8 am to 6 pm.")


def test_judge_answerable() -> None:
    ok = judge("An adult pays £6.50.", facts=[("re:6(\\.| pounds? )50",)], forbid=[],
               unanswerable=False, known_numbers=KB, question="How much?")
    assert ok.correct and not ok.reason
    missing = judge("It is 25 metres.", facts=[("6:30",)], forbid=[], unanswerable=False,
                    known_numbers=KB, question="When?")
    assert not missing.correct and missing.missing == ("6:30",)
    invented = judge("It opens at 7 am, 25 metres.", facts=[("25",)], forbid=[],
                     unanswerable=False, known_numbers=KB, question="How long?")
    assert not invented.correct and invented.invented == ("7",)
    said = judge("Yes, 3 children can come, the pool is 25 metres.", facts=[("25",)],
                 forbid=[("re:\\byes\\b",)], unanswerable=False, known_numbers=KB,
                 question="Can my 3 children come?")
    assert said.invented == () and said.forbidden == ("re:\\byes\\b",) and not said.correct
    assert judge("", facts=[("25",)], forbid=[], unanswerable=False, known_numbers=KB,
                 question="x").reason == "no answer"


def test_judge_unanswerable() -> None:
    def j(answer: str) -> bool:
        return judge(answer, facts=[], forbid=[], unanswerable=True, known_numbers=KB,
                     question="How warm is the water?").correct

    assert j("I'm sorry, I don't know how warm the water is.")
    assert j("I don't know; the pool opens at 8 am if you want to ask.")  # facts from the base
    assert not j("The water is 28 degrees.")
    assert not j("I'm not sure, but it is probably 28 degrees.")  # invented figure


def test_figures() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5
    s = stats([100.0, None, 300.0, 200.0])
    assert (s.n, s.p50, s.max, s.min) == (3, 200.0, 300.0, 100.0)
    assert stats([]).as_dict()["p50"] is None
    r = Rate()
    assert r.percent is None
    r.add(True, "a")
    r.add(False, "b")
    assert r.as_dict() == {"passed": 1, "total": 2, "percent": 50.0, "failed": ["b"]}


def test_word_error_rate() -> None:
    from gateway.evaluation.scoring import word_error_rate

    assert word_error_rate("And what would my twelve year old son pay?",
                           "And what would my 12 year-old son pay.") == 0.0
    assert word_error_rate("Are you open on Christmas Day?",
                           "I'm open on Christmas, Nate.") == 0.5  # 2 swaps, 1 drop of 6
    assert word_error_rate("How warm is it", "") == 1.0
