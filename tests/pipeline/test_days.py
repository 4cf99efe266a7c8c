"""Days of the week named in a text (pure)."""

from __future__ import annotations

from gateway.pipeline.days import ALL, WEEKDAYS, WEEKEND, fit, named


def test_single_days_plural_and_short() -> None:
    assert named("How late can I swim on a Saturday?") == {5}
    assert named("On Saturdays and Sundays it opens at 8 am.") == WEEKEND
    assert named("Mondays and Thursday only") == {0, 3}
    assert named("The sun is out; fries are served.") == frozenset()


def test_ranges_and_groups() -> None:
    assert named("open Monday to Friday from 6:30 am") == WEEKDAYS
    assert named("Tuesday to Sunday, 10 to 5") == {1, 2, 3, 4, 5, 6}
    assert named("Friday to Monday") == {4, 5, 6, 0}  # wraps round the week
    assert named("every weekday morning") == WEEKDAYS
    assert named("at the weekend") == WEEKEND
    assert named("open every day") == ALL and named("daily") == ALL


def test_fit() -> None:
    q = "How late can I swim on a Saturday?"
    assert fit(q, "On Saturdays and Sundays it closes at 6 pm.") == 1
    assert fit(q, "Lane swimming runs every weekday morning from 6:30 am to 9 am.") == -1
    assert fit(q, "The café is open every day from 9 am.") == 1
    assert fit(q, "A single swim costs £6.50.") == 0  # names no day: no cue
    assert fit("What time do you open?", "Monday to Friday from 9 am.") == 0
