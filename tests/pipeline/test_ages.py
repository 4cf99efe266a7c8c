"""Age ranges in a text and the age a question asks about (pure)."""

from __future__ import annotations

from gateway.pipeline import ages

UNDER = "Children under 16 pay £3.20, and children under 3 swim free."
ACCOMPANIED = "Children under 8 must be accompanied in the water by an adult aged 16 or over."
LESSONS = "Swimming lessons for children aged 4 to 12 run on Saturday mornings."
SENIORS = "Seniors over 65 pay £4."
FAMILY = "A family ticket for two adults and up to three children costs £16."


def test_the_age_a_question_asks_about() -> None:
    assert ages.asked("Does my two year old need a ticket?") == 2
    assert ages.asked("What would my 12-year-old son pay?") == 12
    assert ages.asked("Can children aged 7 swim alone?") == 7
    assert ages.asked("Is a six month old baby free?") == 0
    assert ages.asked("How old is the building?") is None
    assert ages.asked("Can teenagers use the sauna?") is None


def test_age_ranges_a_text_states() -> None:
    assert ages.ranges(UNDER) == [(0, 15), (0, 2)]
    assert sorted(ages.ranges(ACCOMPANIED)) == [(0, 7), (16, ages.OLDEST)]
    assert ages.ranges(LESSONS) == [(4, 12)]
    assert ages.ranges(SENIORS) == [(66, ages.OLDEST)]
    # Counts, durations and clock times are not ages.
    assert ages.ranges(FAMILY) == []
    assert ages.ranges("Parking is free for under 3 hours.") == []
    assert ages.ranges("Open Monday to Friday from 6:30 am to 9 pm.") == []
    assert ages.ranges("A party for up to 15 children costs £120.") == []


def test_the_narrowest_range_holding_the_age_fits_best() -> None:
    texts = [UNDER, ACCOMPANIED, LESSONS, SENIORS, FAMILY]
    assert ages.fits("Does my two year old need a ticket?", texts) == [1, 0, -1, -1, 0]
    assert ages.fits("Is my seven year old allowed in alone?", texts) == [0, 1, 0, -1, 0]
    assert ages.fits("What does a 70 year old pay?", texts) == [-1, 0, -1, 1, 0]
    assert ages.fits("How much is a ticket?", texts) == [0] * 5
