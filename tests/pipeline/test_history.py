"""The conversation history object: append, truncate, delete, take_unanswered, its bound."""

from __future__ import annotations

import pytest

from gateway.pipeline.history import History
from gateway.providers.base import Message


def test_reads_as_a_sequence_and_appends() -> None:
    h = History([Message("user", "hi")])
    said = h.append(Message("assistant", "hello"))
    assert said is h[-1] and len(h) == 2
    assert [m.role for m in h] == ["user", "assistant"]
    assert list(h[-1:]) == [said]
    assert tuple(h) == (Message("user", "hi"), said)
    with pytest.raises(TypeError):
        h[0] = Message("user", "no")  # type: ignore[index]


def test_truncate_keeps_what_was_heard_and_nothing_heard_removes() -> None:
    h = History([Message("user", "q"), Message("assistant", "one two three", name="x")])
    kept = h.truncate(1, "one two")
    assert kept == Message("assistant", "one two", name="x") and h[1] is kept
    assert h.truncate(1, "") is None
    assert list(h) == [Message("user", "q")]


def test_delete_and_take_the_unanswered_user_messages() -> None:
    h = History([Message("user", "a"), Message("assistant", "b"), Message("user", "c"),
                 Message("user", "d")])
    assert [m.content for m in h.take_unanswered()] == ["c", "d"]
    assert [m.content for m in h] == ["a", "b"]
    assert h.take_unanswered() == []
    h.delete(0)
    assert [m.content for m in h] == ["b"]


def test_bounded_oldest_forgotten() -> None:
    h = History((Message("user", str(i)) for i in range(5)), max_messages=3)
    assert [m.content for m in h] == ["2", "3", "4"]
    h.append(Message("assistant", "5"))
    assert [m.content for m in h] == ["3", "4", "5"]
