"""Answer selection (pure): units, question kinds, scoring, abstention, follow-ups."""

from __future__ import annotations

from gateway.pipeline.answer import (
    ABSTAIN,
    MAX_WORDS,
    Kind,
    Unit,
    Weights,
    choose,
    content_words,
    heard_as,
    offered_thing,
    query_text,
    question_kind,
    score_units,
    speakable,
    split_units,
    stem,
    unnamed,
)
from gateway.providers.base import Message, Passage

HOURS = Passage("Opening hours", "The museum is open Tuesday to Sunday from 10 am to 5 pm. "
                "On Thursdays it stays open late, until 9 pm.", "kb/hours.md")
PRICES = Passage("Prices", "Entry is free. Special exhibitions cost 12 pounds for adults.",
                 "kb/prices.md")
HALL = Passage("Events", "The main hall can be hired for weddings of up to 150 guests.",
               "kb/events.md")


def test_split_units_sentences_and_clauses_of_long_sentences() -> None:
    units = split_units([HOURS, PRICES])
    assert [u.text for u in units] == [
        "The museum is open Tuesday to Sunday from 10 am to 5 pm.",
        "On Thursdays it stays open late, until 9 pm.",
        "Entry is free.",
        "Special exhibitions cost 12 pounds for adults.",
    ]
    assert [(u.passage, u.index) for u in units] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    long = Passage("Parking", "There is no car park at the museum, but the Dock Road car park "
                   "is 300 metres away and costs 2 pounds an hour, and there are bike racks "
                   "at the front door for everyone who cycles.", "kb/p.md")
    parts = [u.text for u in split_units([long])]
    assert len(parts) == 3 and all(len(p.split()) <= MAX_WORDS for p in parts)
    assert parts[1].startswith("but the Dock Road") and speakable(parts[1]).startswith("The Dock")
    assert split_units([]) == [] and split_units([Passage("", "  ", "x")]) == []


def test_question_kinds() -> None:
    assert question_kind("What time do you open?") is Kind.TIME
    assert question_kind("How late are you open on Thursdays?") is Kind.TIME
    assert question_kind("How much is a ticket?") is Kind.PRICE
    assert question_kind("Do kids have to pay?") is Kind.PRICE
    assert question_kind("Who is in charge here?") is not Kind.PRICE
    assert question_kind("How many people fit in the hall?") is Kind.NUMBER
    assert question_kind("When was it founded?") is Kind.YEAR
    assert question_kind("Where do I park?") is Kind.PLACE
    assert question_kind("Can I bring my dog?") is Kind.RULE
    assert question_kind("Tell me about the café") is Kind.OTHER


def test_content_words_stem_and_drop_function_words() -> None:
    assert content_words("Are you opening on Sundays?") == {"open", "sunday"}
    assert content_words("What is it?") == set()
    assert stem("swimming") == stem("swim") and stem("parties") == stem("party")
    assert stem("children's") == stem("children") and stem("called") == "call"
    assert stem("closes") == stem("close") and stem("buses") == stem("bus")


def _sims(units: list[Unit], best: dict[str, float]) -> list[float]:
    """Stand-in similarities: the given value for units containing a key, else 0.1."""
    return [next((v for k, v in best.items() if k in u.text), 0.1) for u in units]


def test_strict_kind_drops_units_without_that_fact() -> None:
    units = split_units([HALL, PRICES])
    # The hall sentence is about weddings but holds no price: it cannot say what one costs.
    ranked = score_units("How much is a wedding in the main hall?", units,
                         _sims(units, {"weddings": 0.7, "Special": 0.35}))
    assert all("weddings" not in s.unit.text for s in ranked)
    answer = choose("How much is a wedding in the main hall?", units,
                    _sims(units, {"weddings": 0.7, "Special": 0.2}))
    assert answer.abstained and answer.text == ABSTAIN


def test_best_unit_answers_with_neighbour_when_close() -> None:
    units = split_units([HOURS, PRICES])
    answer = choose("How late are you open on Thursday?", units,
                    _sims(units, {"Thursdays": 0.8, "Tuesday": 0.5}))
    assert answer.text == "On Thursdays it stays open late, until 9 pm."
    both = choose("When are you open?", units,
                  _sims(units, {"Thursdays": 0.6, "Tuesday": 0.6}))
    assert both.text == ("The museum is open Tuesday to Sunday from 10 am to 5 pm. "
                         "On Thursdays it stays open late, until 9 pm.")
    assert len(both.text.split()) <= MAX_WORDS


def test_of_two_neighbours_the_earlier_joins() -> None:
    hours = Passage("Opening hours", "The museum is open Tuesday to Sunday from 10 am to 5 pm. "
                    "On Thursdays it stays open late, until 9 pm. It is closed on Mondays, "
                    "except bank holidays, from 11 am to 4 pm.", "kb")
    units = split_units([hours])
    answer = choose("What time do you open?", units, [0.55, 0.68, 0.57])
    assert answer.text == ("The museum is open Tuesday to Sunday from 10 am to 5 pm. "
                           "On Thursdays it stays open late, until 9 pm.")


def test_abstains_below_the_floor_and_without_passages() -> None:
    units = split_units([HOURS, PRICES])
    low = choose("Do you have free wifi?", units, [0.15] * len(units))
    assert low.abstained and low.text == ABSTAIN and low.best is not None
    assert choose("What time do you open?", [], []).abstained
    # Similar enough but no sentence holds a time: nothing to say.
    assert choose("What time does the shop open?", split_units([HALL]), [0.6]).abstained


def test_lexical_only_weights_need_the_words() -> None:
    lexical = Weights(similarity=0.0, lexical=1.0, kind=0.2, floor=0.5, min_similarity=-1.0)
    units = split_units([HOURS, PRICES])
    zero = [0.0] * len(units)
    assert "9 pm" in choose("How late are you open on Thursdays?", units, zero, lexical).text
    assert choose("Is there a play area?", units, zero, lexical).abstained


def test_follow_up_uses_the_previous_question() -> None:
    history = [Message("system", "x"), Message("user", "Are you open on Mondays?"),
               Message("assistant", "It is closed on Mondays.")]
    assert query_text([*history, Message("user", "And on Sundays?")], "And on Sundays?") \
        == "Are you open on Mondays? And on Sundays?"
    assert query_text([*history, Message("user", "What about children?")],
                      "What about children?").startswith("Are you open on Mondays?")
    # A question that stands alone is left as it is.
    assert query_text([*history, Message("user", "Where can I park?")],
                      "Where can I park?") == "Where can I park?"
    assert query_text([Message("user", "And on Sundays?")], "And on Sundays?") \
        == "And on Sundays?"


def test_small_talk_and_full_word_match() -> None:
    units = split_units([HOURS])
    assert choose("Hello there!", units, [0.0, 0.0]).text == "Hello! What would you like to know?"
    assert choose("Thank you very much", [], []).text == "You're welcome."
    assert choose("Hello, when do you open?", units, [0.6, 0.3]).text.startswith("The museum")
    # Low similarity, but every telling word is there (the heading counts).
    topic = choose("Tell me about the opening hours", units, [0.2, 0.1])
    assert not topic.abstained and topic.text.startswith("The museum is open")


def test_speakable() -> None:
    assert speakable("but dogs on a lead are welcome in the garden") == \
        "Dogs on a lead are welcome in the garden."
    assert speakable("Open daily!") == "Open daily!"


POOL = [Passage("Opening hours", "Riverside Pool is open Monday to Friday from 6:30 am to 9 pm. "
                "On Saturdays and Sundays it opens at 8 am and closes at 6 pm.", "kb/h.md"),
        Passage("Lane swimming", "Lane swimming for adults runs every weekday morning from "
                "6:30 am to 9 am.", "kb/l.md"),
        Passage("Contact", "Riverside Pool is at 14 Mill Lane, next to the town library. "
                "Towels can be hired at reception.", "kb/c.md")]


def test_a_named_day_picks_the_sentence_about_that_day() -> None:
    units = split_units(POOL)
    # The weekday sentence is the more similar one; the day asked for decides.
    sims = _sims(units, {"Lane swimming": 0.58, "Saturdays": 0.45, "Monday": 0.45})
    answer = choose("How late can I swim on a Saturday?", units, sims)
    assert "6 pm" in answer.text and "Lane" not in answer.text
    without = score_units("How late can I swim?", units, sims)
    assert "Lane" in without[0].unit.text  # no day named: similarity decides


def test_who_questions_need_a_person_or_a_role() -> None:
    assert question_kind("Who is in charge of the pool?") is Kind.PERSON
    assert question_kind("Who's the manager?") is Kind.PERSON
    assert question_kind("Who can use the sauna?") is not Kind.PERSON
    units = split_units(POOL)
    sims = _sims(units, {"Riverside Pool is at": 0.5, "Lane": 0.45})
    assert choose("Who is in charge of the pool?", units, sims).abstained
    staffed = split_units([Passage("Team", "The pool manager is Ann Lee.", "kb/t.md")])
    assert "Ann Lee" in choose("Who is in charge of the pool?", staffed, [0.5]).text


def test_a_question_about_the_place_itself_needs_only_the_right_kind() -> None:
    units = split_units(POOL)
    # "Where exactly are you?" shares no word with the address and MiniLM scores it low.
    sims = _sims(units, {"Mill Lane": 0.27, "Towels": 0.2})
    answer = choose("Where exactly are you?", units, sims)
    assert "Mill Lane" in answer.text
    assert question_kind("Whereabouts is the library?") is Kind.PLACE
    assert question_kind("What's your telephone number?") is Kind.PHONE
    # Not a follow-up: it asks about "you"; "how much?" alone leans on the last question.
    history = [Message("user", "Do you sell tickets?")]
    assert query_text(history, "Where exactly are you?") == "Where exactly are you?"
    assert query_text(history, "How much?") == "Do you sell tickets? How much?"


def test_when_was_needs_a_year_or_a_date_not_opening_times() -> None:
    assert question_kind("When was the museum founded?") is Kind.YEAR
    assert question_kind("When do the tours start?") is Kind.DATE
    tours = [Passage("Tours", "Guided tours start at 11:30 am every day.", "kb/t.md")]
    units = split_units(tours)
    assert choose("When was the museum founded?", units, [0.5]).abstained
    history = [Passage("History", "The museum opened in 1923 in the old customs house.",
                       "kb/h.md")]
    assert "1923" in choose("When was the museum founded?", split_units(history), [0.5]).text


def test_phone_questions_need_a_phone_number() -> None:
    for q in ("What's your telephone number?", "What number can I ring you on?",
              "Wait, what's your phone number?", "Can I call you?"):
        assert question_kind(q) is Kind.PHONE, q
    contact = [Passage("Contact", "The phone line is staffed during opening hours. You can "
                       "call the library on 01632 448210.", "kb/c.md"),
               Passage("Bus", "The number 7 bus stops in front of the building.", "kb/b.md")]
    units = split_units(contact)
    # The staffed-line sentence is the more similar; only one holds a number to ring, and
    # the question names nothing but the kind of fact ("telephone", "number").
    sims = _sims(units, {"staffed": 0.4, "01632": 0.23, "bus": 0.26})
    assert "448210" in choose("What's your telephone number?", units, sims).text


def test_kind_words_are_compared_stemmed() -> None:
    # "price" and "allowed" say what kind of fact is wanted; stemmed ("pric", "allow")
    # they were never taken out of the question's subject words.
    assert content_words("What's the price?") == {stem("price")}
    units = split_units([PRICES])
    assert choose("What's the price?", units, _sims(units, {"Special": 0.25})).text.startswith(
        "Special exhibitions cost 12 pounds")


def test_words_match_without_their_accents() -> None:
    from gateway.pipeline.answer import content_words

    assert content_words("The café is open") == content_words("the cafe is open")
    assert "naiv" in content_words("Naïve")


def test_an_is_there_question_names_the_thing_it_asks_about() -> None:
    assert offered_thing("Is there a water slide for the kids?") == ["water", "slide", "kids"]
    assert offered_thing("Do you sell second-hand books?") == ["second", "hand", "books"]
    # Words that only say which kind of fact is wanted are not the thing.
    assert offered_thing("Is there a reduction for groups?") == ["groups"]
    assert offered_thing("I forgot my towel. Have you got one?") == []  # no content word
    assert offered_thing("What time do you open?") == []
    assert offered_thing("Can I get my money back?") == []  # a service as often as a thing
    units = split_units([HOURS, PRICES, HALL])
    assert unnamed(["weddings", "slide", "exhibition"], units) == ["slide"]


def test_a_word_the_passages_lack_is_heard_as_theirs_a_letter_away() -> None:
    pool = [Passage("Facilities", "The main pool is 25 metres long and has 6 lanes.", "kb")]
    units = split_units(pool)
    assert heard_as("How long is the big tool?", units) == "how long is the big pool?"
    # Words the text has, kind words ("late" is not "lane") and ambiguous ones stay.
    assert heard_as("How late is the pool open?", units) == "how late is the pool open?"
    two = split_units([Passage("x", "The lanes and the lines are new.", "kb")])
    assert heard_as("Are the lones open?", two) == "are the lones open?"


def test_the_narrowest_age_range_answers_a_question_about_an_age() -> None:
    prices = Passage("Prices", "Children under 16 pay £3.20, and children under 3 swim "
                     "free. Children under 8 must be accompanied by an adult.", "kb")
    units = split_units([prices])
    q = "Does my two year old need a ticket?"
    answer = choose(q, units, [0.3, 0.4])
    assert not answer.abstained and "under 3 swim free" in answer.text
