"""Protocol v1 parser: every client message, and bad input as ProtocolError values."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audio import pcm
from gateway.protocol.v1 import (
    INVALID_REQUEST,
    Audio,
    AudioFormat,
    EndOfSpeech,
    Interrupt,
    Ping,
    ProtocolError,
    ProtocolState,
    Start,
    Text,
    encode,
    error,
)

CLIENT_EVENTS = (Start, Audio, Text, Interrupt, EndOfSpeech, Ping, ProtocolError)
FUZZ = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def send(state: ProtocolState, **msg: Any) -> Any:
    return state.receive_text(json.dumps(msg))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_invalid(result: object, fragment: str = "") -> None:
    assert isinstance(result, ProtocolError), result
    assert result.code == INVALID_REQUEST
    assert result.retryable is False
    assert fragment.lower() in result.message.lower()


# --- audio format ----------------------------------------------------------------


def test_audio_format_defaults_and_chunk_ms() -> None:
    fmt = AudioFormat()
    assert (fmt.encoding, fmt.sample_rate, fmt.bytes_per_sample) == ("pcm_s16le", 16000, 2)
    assert fmt.chunk_ms(640) == pytest.approx(20.0)
    mu = AudioFormat("mulaw", 8000)
    assert mu.bytes_per_sample == 1
    assert mu.chunk_ms(160) == pytest.approx(20.0)
    assert mu.as_dict() == {"encoding": "mulaw", "sample_rate": 8000}


# --- envelope errors ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "not json", "{'type': 'ping'}", "[1,", "\x00"])
def test_not_json(text: str) -> None:
    assert_invalid(ProtocolState().receive_text(text), "not valid JSON")


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", "true", '[{"type": "ping"}]'])
def test_not_an_object(text: str) -> None:
    assert_invalid(ProtocolState().receive_text(text), "JSON object")


@pytest.mark.parametrize("msg", [{}, {"type": None}, {"type": 3}, {"type": ["ping"]}, {"t": 1}])
def test_missing_type(msg: dict[str, Any]) -> None:
    assert_invalid(ProtocolState().receive_text(json.dumps(msg)), "missing field: type")


@pytest.mark.parametrize("kind", ["pong", "START", "", "__init__", "_start", "session.update"])
def test_unknown_type(kind: str) -> None:
    result = send(ProtocolState(), type=kind)
    assert_invalid(result, "unknown message type")
    assert repr(kind) in result.message


def test_deeply_nested_json_is_an_error_value() -> None:
    assert_invalid(ProtocolState().receive_text("[" * 100_000), "not valid JSON")


@pytest.mark.parametrize(
    "text", ["1" * 5000, '{"type": "ping", "n": ' + "9" * 5000 + "}"], ids=["bare", "in-object"]
)
def test_huge_integer_literal_is_an_error_value(text: str) -> None:
    result = ProtocolState().receive_text(text)
    assert isinstance(result, (ProtocolError, Ping))


# --- simple control messages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls"), [("interrupt", Interrupt), ("end_of_speech", EndOfSpeech), ("ping", Ping)]
)
def test_control_messages(kind: str, cls: type) -> None:
    state = ProtocolState()
    assert send(state, type=kind) == cls()
    # extra fields are ignored, and they do not need a start first
    assert send(state, type=kind, extra={"x": 1}) == cls()
    assert not state.started


# --- text --------------------------------------------------------------------------


def test_text_is_stripped() -> None:
    assert send(ProtocolState(), type="text", text="  Hello there \n") == Text("Hello there")


@pytest.mark.parametrize(
    "msg", [{}, {"text": None}, {"text": ""}, {"text": "  \n\t"}, {"text": 5}, {"text": ["hi"]}]
)
def test_text_missing(msg: dict[str, Any]) -> None:
    assert_invalid(send(ProtocolState(), type="text", **msg), "missing field: text")


def test_text_too_long() -> None:
    state = ProtocolState(max_text_chars=10)
    assert send(state, type="text", text="x" * 10) == Text("x" * 10)
    assert_invalid(send(state, type="text", text="x" * 11), "at most 10 characters")


# --- start -------------------------------------------------------------------------


def test_start_defaults() -> None:
    state = ProtocolState()
    result = send(state, type="start")
    assert result == Start(input=AudioFormat("pcm_s16le", 16000))
    assert state.started


def test_start_all_fields() -> None:
    state = ProtocolState()
    result = send(
        state,
        type="start",
        encoding="mulaw",
        sample_rate=8000,
        output_sample_rate=24000,
        language="de",
        voice="joe",
        system_prompt="Be brief.",
        conversation_id="c-1",
    )
    assert result == Start(
        input=AudioFormat("mulaw", 8000),
        output_sample_rate=24000,
        language="de",
        voice="joe",
        system_prompt="Be brief.",
        conversation_id="c-1",
    )
    assert state.input == AudioFormat("mulaw", 8000)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_start_every_rate(rate: int) -> None:
    state = ProtocolState()
    assert isinstance(send(state, type="start", sample_rate=rate, output_sample_rate=rate), Start)
    assert state.input.sample_rate == rate


@pytest.mark.parametrize("encoding", ["opus", "PCM_S16LE", "alaw", "", None, 1, ["mulaw"]])
def test_start_bad_encoding(encoding: Any) -> None:
    state = ProtocolState()
    assert_invalid(send(state, type="start", encoding=encoding), "encoding must be")
    assert not state.started and state.input == AudioFormat()


@pytest.mark.parametrize("rate", [44100, 0, -16000, "16000", 16000.0, True, None, [16000]])
def test_start_bad_sample_rate(rate: Any) -> None:
    state = ProtocolState()
    assert_invalid(send(state, type="start", sample_rate=rate), "sample_rate must be")
    assert not state.started and state.input == AudioFormat()


@pytest.mark.parametrize("rate", [44100, "24000", 24000.0, False])
def test_start_bad_output_rate(rate: Any) -> None:
    assert_invalid(
        send(ProtocolState(), type="start", output_sample_rate=rate), "output_sample_rate"
    )


@pytest.mark.parametrize("key", ["language", "voice", "system_prompt", "conversation_id"])
def test_start_string_fields_must_be_strings(key: str) -> None:
    state = ProtocolState()
    assert_invalid(send(state, type="start", **{key: 1}), f"{key} must be a string")
    assert not state.started


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("conversation_id", "c" * 80, "at most 64"),  # the column holds 64
    ("conversation_id", "conv\x00", "NUL"),
    ("conversation_id", "conv one", "letters, digits"),
    ("conversation_id", "", "letters, digits"),
    ("voice", "joe\ud800", "valid Unicode"),
    ("voice", "joe\nsmith", "printable"),
    ("language", "e" * 21, "at most 20"),
    ("system_prompt", "Be kind.\x00", "NUL"),
    ("system_prompt", "x" * 8001, "at most 8000"),
])
def test_start_fields_are_bounded_and_clean(key: str, value: str, rule: str) -> None:
    state = ProtocolState()
    # json.dumps writes a lone surrogate as an escape, as a hostile client would send it.
    assert_invalid(send(state, type="start", **{key: value}), f"{key} ")
    assert_invalid(send(ProtocolState(), type="start", **{key: value}), rule)
    assert not state.started  # a corrected start is still taken
    assert isinstance(send(state, type="start", conversation_id="conv_ok-1"), Start)


@pytest.mark.parametrize(("text", "rule"), [
    (r"x\u0000y", "NUL"), (r"x\ud800y", "valid Unicode"), (r"\udfff", "valid Unicode")])
def test_text_that_no_database_can_store_is_refused(text: str, rule: str) -> None:
    wire = '{"type":"text","text":"' + text + '"}'  # the escapes as a client writes them
    assert_invalid(ProtocolState().receive_text(wire), rule)


def test_second_start_is_an_error() -> None:
    state = ProtocolState()
    assert isinstance(send(state, type="start", encoding="mulaw", sample_rate=8000), Start)
    assert_invalid(send(state, type="start"), "only once")
    # the first start's format stays in force
    assert state.input == AudioFormat("mulaw", 8000)


def test_failed_start_can_be_retried() -> None:
    state = ProtocolState()
    assert isinstance(send(state, type="start", sample_rate=11025), ProtocolError)
    assert isinstance(send(state, type="start", sample_rate=24000), Start)
    assert state.input.sample_rate == 24000


def test_start_after_audio_same_format_is_accepted() -> None:
    state = ProtocolState()
    assert isinstance(state.receive_bytes(b"\x00\x00" * 160), Audio)
    result = send(state, type="start", encoding="pcm_s16le", sample_rate=16000, voice="joe")
    assert isinstance(result, Start) and result.voice == "joe"


@pytest.mark.parametrize(
    "fmt",
    [{"sample_rate": 8000}, {"encoding": "mulaw"}, {"encoding": "mulaw", "sample_rate": 8000}],
)
def test_start_after_audio_changing_format_is_refused(fmt: dict[str, Any]) -> None:
    state = ProtocolState()
    assert isinstance(state.receive_bytes(b"\x00\x00" * 160), Audio)
    assert_invalid(send(state, type="start", **fmt), "may not change the audio format")
    assert state.input == AudioFormat() and not state.started


def test_rejected_audio_does_not_pin_the_format() -> None:
    state = ProtocolState()
    assert isinstance(state.receive_bytes(b"\x00\x00\x00"), ProtocolError)  # odd length
    assert isinstance(send(state, type="start", encoding="mulaw", sample_rate=8000), Start)


# --- audio -------------------------------------------------------------------------


def test_binary_audio_passes_pcm_through() -> None:
    state = ProtocolState()
    chunk = bytes(range(256)) * 2
    assert state.receive_bytes(chunk) == Audio(chunk)
    assert state.audio_seen


def test_json_audio_is_base64_decoded() -> None:
    chunk = bytes(range(200))
    assert send(ProtocolState(), type="audio", data=b64(chunk)) == Audio(chunk)


@pytest.mark.parametrize("data", [None, 5, ["AAA="], {"b64": "AAAA"}])
def test_json_audio_missing_data(data: Any) -> None:
    msg = {"type": "audio"} if data is None else {"type": "audio", "data": data}
    assert_invalid(ProtocolState().receive_text(json.dumps(msg)), "missing field: data")


@pytest.mark.parametrize("data", ["!!!!", "AAA", "AA=A", "AA AA", "ÄÄÄÄ", "AAAA\n"])
def test_json_audio_bad_base64(data: str) -> None:
    assert_invalid(send(ProtocolState(), type="audio", data=data), "base64")


@pytest.mark.parametrize("via", ["bytes", "json"])
def test_empty_chunk(via: str) -> None:
    state = ProtocolState()
    result = state.receive_bytes(b"") if via == "bytes" else send(state, type="audio", data="")
    assert_invalid(result, "empty audio chunk")
    assert not state.audio_seen


@pytest.mark.parametrize("via", ["bytes", "json"])
def test_odd_length_pcm(via: str) -> None:
    state = ProtocolState()
    raw = b"\x01\x02\x03"
    result = (
        state.receive_bytes(raw) if via == "bytes" else send(state, type="audio", data=b64(raw))
    )
    assert_invalid(result, "even number of bytes")


def test_odd_length_is_fine_for_mulaw() -> None:
    state = ProtocolState()
    send(state, type="start", encoding="mulaw", sample_rate=8000)
    result = state.receive_bytes(b"\xff\xff\xff")
    assert result == Audio(b"\x00\x00" * 3)


@pytest.mark.parametrize(
    ("start", "one_second"),
    [
        ({}, 32000),
        ({"sample_rate": 8000}, 16000),
        ({"sample_rate": 48000}, 96000),
        ({"encoding": "mulaw", "sample_rate": 8000}, 8000),
        ({"encoding": "mulaw", "sample_rate": 16000}, 16000),
    ],
)
def test_chunk_longer_than_one_second(start: dict[str, Any], one_second: int) -> None:
    state = ProtocolState()
    if start:
        assert isinstance(send(state, type="start", **start), Start)
    assert isinstance(state.receive_bytes(b"\x00" * one_second), Audio)
    assert_invalid(state.receive_bytes(b"\x00" * (one_second + 2)), "longer than 1000 ms")
    assert_invalid(
        send(state, type="audio", data=b64(b"\x00" * (one_second + 2))), "longer than 1000 ms"
    )


def test_max_chunk_ms_is_configurable() -> None:
    state = ProtocolState(max_chunk_ms=20)
    assert isinstance(state.receive_bytes(b"\x00" * 640), Audio)
    assert_invalid(state.receive_bytes(b"\x00" * 642), "longer than 20 ms")


def test_mulaw_is_decoded_to_s16le() -> None:
    state = ProtocolState()
    send(state, type="start", encoding="mulaw", sample_rate=8000)
    codes = bytes([0xFF, 0x7F, 0x80, 0x00, 0xEF, 0x6F])
    for result in (state.receive_bytes(codes), send(state, type="audio", data=b64(codes))):
        assert isinstance(result, Audio)
        assert len(result.pcm) == 2 * len(codes)
        samples = list(memoryview(result.pcm).cast("h"))
        assert samples[:4] == [0, 0, 32124, -32124]
        assert result.pcm == pcm.mulaw_decode(codes)


def test_mulaw_roundtrip_through_the_parser() -> None:
    import numpy as np

    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2")
    state = ProtocolState()
    send(state, type="start", encoding="mulaw", sample_rate=8000)
    result = state.receive_bytes(pcm.mulaw_encode(tone.tobytes()))
    assert isinstance(result, Audio)
    decoded = np.frombuffer(result.pcm, dtype="<i2").astype(int)
    assert np.max(np.abs(decoded - tone.astype(int))) <= 0.04 * 8000 + 8


# --- server events -----------------------------------------------------------------


def test_error_event_and_encode() -> None:
    err = ProtocolError(INVALID_REQUEST, "bad", retryable=True)
    assert err.event() == {
        "type": "error",
        "code": "INVALID_REQUEST",
        "message": "bad",
        "retryable": True,
    }
    assert error("X", "m") == {"type": "error", "code": "X", "message": "m", "retryable": False}
    text = encode({"type": "transcript", "text": "Grüße"})
    assert text == '{"type":"transcript","text":"Grüße"}'
    assert json.loads(text)["text"] == "Grüße"


# --- fuzz: never raises ----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
message_types = st.sampled_from(
    ["start", "audio", "text", "interrupt", "end_of_speech", "ping", "nope"]
)
fields = st.sampled_from(
    [
        "type",
        "data",
        "text",
        "encoding",
        "sample_rate",
        "output_sample_rate",
        "language",
        "voice",
        "system_prompt",
        "conversation_id",
    ]
)


@FUZZ
@given(st.lists(st.text(max_size=200), max_size=5))
def test_fuzz_receive_text_arbitrary(texts: list[str]) -> None:
    state = ProtocolState()
    for text in texts:
        assert isinstance(state.receive_text(text), CLIENT_EVENTS)


@settings(FUZZ, max_examples=60)
@given(
    st.lists(st.tuples(message_types, st.dictionaries(fields, json_values, max_size=5)), max_size=6)
)
def test_fuzz_receive_text_structured(msgs: list[tuple[str, dict[str, Any]]]) -> None:
    state = ProtocolState()
    for kind, body in msgs:
        body = {**body, "type": kind}
        result = state.receive_text(json.dumps(body))
        assert isinstance(result, CLIENT_EVENTS)
        if isinstance(result, Audio):
            assert len(result.pcm) % 2 == 0 and result.pcm


@FUZZ
@given(
    st.sampled_from([None, ("mulaw", 8000), ("pcm_s16le", 8000), ("mulaw", 48000)]),
    st.lists(st.binary(max_size=20000), max_size=5),
)
def test_fuzz_receive_bytes(fmt: tuple[str, int] | None, chunks: list[bytes]) -> None:
    state = ProtocolState()
    if fmt is not None:
        assert isinstance(send(state, type="start", encoding=fmt[0], sample_rate=fmt[1]), Start)
    for chunk in chunks:
        result = state.receive_bytes(chunk)
        assert isinstance(result, (Audio, ProtocolError))
        if isinstance(result, Audio):
            expected = len(chunk) * (2 if state.input.encoding == "mulaw" else 1)
            assert len(result.pcm) == expected
