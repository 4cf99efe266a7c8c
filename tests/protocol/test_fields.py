"""Field rules (gateway/protocol/fields.py): what every parser checks a client's ids,
names and texts against before they reach the pipeline or the database."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.text import clean
from gateway.protocol import fields
from gateway.protocol.fields import FieldError
from gateway.store.models import Assistant, Conversation

# Any code point, lone surrogates included (hypothesis leaves them out by default).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)
RULES = settings(max_examples=300, deadline=None, database=None)


def _storable(value: str) -> bool:
    """What PostgreSQL's text and a UTF-8 encoder can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


@RULES
@given(ANY_TEXT, st.integers(0, 100))
def test_text_accepts_exactly_the_storable_strings_within_the_limit(value: str,
                                                                    limit: int) -> None:
    ok = _storable(value) and len(value) <= limit
    try:
        assert fields.text(value, "text", limit) == value
        assert ok
    except FieldError as exc:
        assert not ok
        assert str(exc).startswith("text ")


@RULES
@given(ANY_TEXT)
def test_ident_accepts_only_the_conservative_charset(value: str) -> None:
    ok = bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", value))
    try:
        fields.ident(value, "conversation_id")
        assert ok
    except FieldError as exc:
        assert not ok and exc.field == "conversation_id"


@RULES
@given(ANY_TEXT)
def test_names_are_printable_storable_and_bounded(value: str) -> None:
    try:
        got = fields.name(value, "voice", 20)
    except FieldError:
        return
    assert got and got.isprintable() and _storable(got) and len(got) <= 20


@RULES
@given(st.recursive(st.none() | st.booleans() | st.floats() | ANY_TEXT,
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(ANY_TEXT, kids, max_size=4), max_leaves=12))
def test_plain_json_takes_what_a_database_and_an_api_can(value: Any) -> None:
    try:
        fields.plain_json(value, "metadata", 4096)
    except FieldError:
        return
    encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    assert len(encoded.encode("utf-8")) <= 4096
    assert _no_nul(json.loads(encoded))


def _no_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, list):
        return all(map(_no_nul, value))
    if isinstance(value, dict):
        return all(_no_nul(k) and _no_nul(v) for k, v in value.items())
    return True


@pytest.mark.parametrize(("value", "rule"), [
    ("x" * 80, "at most 64"), ("a\x00b", "NUL"), ("\ud800abc", "valid Unicode"),
    ("conv 1", "letters, digits"), ("", "letters, digits"), ("-x", "starting with"),
    ("ïd", "letters, digits"), (42, "must be a string"), (["conv_1"], "must be a string"),
])
def test_bad_ids_are_refused_with_a_clear_rule(value: Any, rule: str) -> None:
    with pytest.raises(FieldError, match=rule):
        fields.ident(value, "conversation_id")


def test_a_refusal_never_echoes_the_value() -> None:
    secret = "my card PIN is 4242 " * 10
    for rule in (fields.ident, fields.name, fields.token):
        with pytest.raises(FieldError) as caught:
            rule(secret + "\x00", "field")
        assert "4242" not in str(caught.value)


@pytest.mark.parametrize("value", ["conv_1a2b3c", "4f8e6c1e-7c3a-4d07-9a53-0c9f0b0e2a11",
                                   "CA1234567890abcdef", "v3:T02llQxIyaRkhfRKxgAP8nY5", "x" * 64])
def test_ids_as_clients_and_servers_make_them_pass(value: str) -> None:
    assert fields.ident(value, "conversation_id") == value


def test_json_nul_is_told_apart_from_the_text_backslash_u0000() -> None:
    assert fields.plain_json({"k": "\\u0000"}, "m") == {"k": "\\u0000"}
    for bad in ({"k": "a\x00"}, {"a\x00": 1}, ["\\\x00"]):
        with pytest.raises(FieldError, match="NUL"):
            fields.plain_json(bad, "m")
    with pytest.raises(FieldError, match="plain JSON"):
        fields.plain_json({"k": float("nan")}, "m")
    with pytest.raises(FieldError, match="at most 10 bytes"):
        fields.plain_json("x" * 20, "m", 10)


def test_tokens_are_shape_checked() -> None:
    assert fields.token("eyJ0.eyJ1.sig-_", "token") == "eyJ0.eyJ1.sig-_"
    for bad in ("a b", "tok\x00", "x" * 5000, "é"):
        with pytest.raises(FieldError):
            fields.token(bad, "token")


def test_limits_match_the_database_columns() -> None:
    def width(column: Any) -> int:
        length: int = column.type.length
        return length

    assert fields.ID_CHARS == width(Conversation.__table__.c.id)
    assert fields.ID_CHARS == width(Assistant.__table__.c.id)
    assert fields.LANGUAGE_CHARS == width(Assistant.__table__.c.language)
    assert fields.VOICE_CHARS == width(Assistant.__table__.c.voice)
    assert fields.MODEL_CHARS == width(Assistant.__table__.c.llm_model)


@RULES
@given(ANY_TEXT)
def test_clean_mends_upstream_text_into_storable_text(value: str) -> None:
    mended = clean(value)
    assert fields.text(mended, "reply", len(mended)) == mended  # storable, sendable
    if _storable(value):
        assert mended == value  # good text is left alone
    assert clean("bad\x00reply, half \ud800 a pair") == "badreply, half \ufffd a pair"
