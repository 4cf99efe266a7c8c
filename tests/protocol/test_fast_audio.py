"""The pre-checks that take audio out of JSON text frames without a JSON parse (Twilio
``media``, Realtime ``input_audio_buffer.append``) against the stock parsers: wherever a
pre-check answers, the stock parser gives the same event; the usual shapes are taken;
every mutation of them is either taken identically or left to the stock parser."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway.protocol import realtime as rt
from gateway.protocol import twilio as tw

COMPACT = (",", ":")
# Bytes that change what JSON means: quotes, escapes, structure, spacing, base64 padding,
# non-ASCII, and bytes that are not UTF-8 at all.
NASTY = [b'"', b"\\", b"{", b"}", b",", b":", b" ", b"\n", b"=", b"A", b"/", b"+", b"0",
         b"\\/", b"\\u0041", b"\xc3\xa9", b"\xff", b"\x00", b'"x":1,', b'"payload":"AAAA",']


def mutations(frame: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        data = bytearray(frame)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.4:
                data[pos:pos] = rng.choice(NASTY)
            elif op < 0.7:
                del data[pos : pos + rng.randint(1, 4)]
            else:
                data[pos : pos + 1] = rng.choice(NASTY)
        out.append(bytes(data))
    return out


def agree(fast: Callable[[bytes], Any], stock: Callable[[str], Any], frame: bytes) -> bool:
    """Whether the pre-check answered; asserts it answered as the stock parser does."""
    got = fast(frame)
    if got is None:
        return False
    assert frame.isascii(), frame  # taken raw: must be valid UTF-8 without a check
    assert stock(frame.decode()) == got, frame
    return True


# --- Twilio / Telnyx media -------------------------------------------------------------


def started(encoding: str = "audio/x-mulaw") -> tw.CallState:
    state = tw.CallState()
    start = state.receive(json.dumps({"event": "start", "start": {
        "streamSid": "MZ1", "mediaFormat": {"encoding": encoding, "sampleRate": 8000}}}))
    assert isinstance(start, tw.CallStart)
    return state


def twilio_media(rng: random.Random) -> bytes:
    """A media message in one of the shapes real senders use."""
    payload = base64.b64encode(rng.randbytes(rng.choice([1, 2, 3, 80, 160, 161]))).decode()
    media: dict[str, Any] = {"payload": payload}
    if rng.random() < 0.8:
        media = {"track": "inbound", "chunk": str(rng.randint(1, 10**6)),
                 "timestamp": str(rng.randint(0, 10**9)), "payload": payload}
    telnyx = rng.random() < 0.3
    seq = {"sequence_number" if telnyx else "sequenceNumber": str(rng.randint(1, 10**6))}
    sid = {"stream_id" if telnyx else "streamSid": "MZ" + rng.randbytes(8).hex()}
    msg = ({"event": "media", **seq, "media": media, **sid} if rng.random() < 0.5
           else {"event": "media", **seq, **sid, "media": media})
    return json.dumps(msg, separators=COMPACT if rng.random() < 0.7 else None).encode()


@pytest.mark.parametrize("encoding", ["audio/x-mulaw", "audio/x-alaw"])
def test_twilio_media_shapes_are_taken_as_the_stock_parser_reads_them(encoding: str) -> None:
    rng = random.Random(1)
    state = started(encoding)
    for _ in range(300):
        assert agree(state.media_fast, state.receive, twilio_media(rng))


def test_twilio_mutations_are_taken_identically_or_left_to_the_stock_parser() -> None:
    rng = random.Random(2)
    state = started()
    taken = left = 0
    for _ in range(300):
        for frame in mutations(twilio_media(rng), rng, 20):
            if agree(state.media_fast, state.receive, frame):
                taken += 1
            else:
                left += 1
    assert taken > 100 and left > 1000  # both branches exercised


@pytest.mark.parametrize("frame", [
    # each means something else, or is an error, to the stock parser
    b'{"event":"media","media":{"track":"outbound","payload":"AAAA"},"streamSid":"MZ1"}',
    b'{"event":"media","media":{"payload":"AAA"},"streamSid":"MZ1"}',  # bad padding
    b'{"event":"media","media":{"payload":"AAAA","payload":"AAAB"},"streamSid":"MZ1"}',
    b'{"event":"media","event":"stop","media":{"payload":"AAAA"}}',
    b'{"event":"media","media":{"payload":"A\\/AA"}}',
    b'{"event":"media","media":{"payload":"' + b"A" * 10668 + b'"}}',  # over 1 s
    b'[{"event":"media","media":{"payload":"AAAA"}}]',
])
def test_twilio_other_shapes_go_to_the_stock_parser(frame: bytes) -> None:
    assert started().media_fast(frame) is None


def test_twilio_media_before_start_goes_to_the_stock_parser() -> None:
    frame = b'{"event":"media","media":{"payload":"AAAA"},"streamSid":"MZ1"}'
    assert tw.CallState().media_fast(frame) is None
    assert started().media_fast(frame) is not None


# --- Realtime input_audio_buffer.append ------------------------------------------------


def append(rng: random.Random, size: int) -> bytes:
    msg: dict[str, Any] = {"type": "input_audio_buffer.append",
                           "audio": base64.b64encode(rng.randbytes(size)).decode()}
    where = rng.randrange(4)  # no event_id, or before, between, after
    if where:
        items = list(msg.items())
        items.insert(where - 1, ("event_id", f"evt_{rng.randrange(10**9)}"))
        msg = dict(items)
    return json.dumps(msg, separators=COMPACT if rng.random() < 0.5 else None).encode()


@pytest.mark.parametrize("fmt", ["audio/pcm", "audio/pcmu", "audio/pcma"])
def test_realtime_appends_are_taken_as_the_stock_parser_reads_them(fmt: str) -> None:
    rng = random.Random(3)
    parser = rt.RealtimeParser(rt.RealtimeConfig(input_format=fmt))
    for _ in range(300):
        assert agree(parser.append_fast, parser.receive, append(rng, rng.choice([2, 960])))


def test_realtime_mutations_are_taken_identically_or_left_to_the_stock_parser() -> None:
    rng = random.Random(4)
    parser = rt.RealtimeParser(rt.RealtimeConfig())
    taken = left = 0
    for _ in range(300):
        for frame in mutations(append(rng, rng.choice([2, 3, 960])), rng, 20):
            if agree(parser.append_fast, parser.receive, frame):
                taken += 1
            else:
                left += 1
    assert taken > 100 and left > 1000


@pytest.mark.parametrize("frame", [
    b'{"type":"input_audio_buffer.append","audio":"AA=="}',  # odd bytes of pcm16
    b'{"event_id":"a","type":"input_audio_buffer.append","audio":"AAAA","event_id":"b"}',
    b'{"type":"input_audio_buffer.append","audio":"AAAA","event_id":"_bad"}',
    b'{"type":"input_audio_buffer.commit","audio":"AAAA"}',
])
def test_realtime_other_shapes_go_to_the_stock_parser(frame: bytes) -> None:
    assert rt.RealtimeParser(rt.RealtimeConfig()).append_fast(frame) is None


# --- outbound media from a template -----------------------------------------------------


@pytest.mark.parametrize(("start", "key"), [
    ({"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {
        "encoding": "audio/x-alaw", "sampleRate": 8000}}}, "streamSid"),
    ({"event": "start", "stream_id": "st-1.a:b", "start": {"call_control_id": "cc1",
      "media_format": {"encoding": "PCMU", "sample_rate": 8000}}}, "stream_id"),
])
def test_outbound_media_is_what_json_dumps_writes(start: dict[str, Any], key: str) -> None:
    from gateway.audio import pcm

    state = tw.CallState()
    call = state.receive(json.dumps(start))
    assert isinstance(call, tw.CallStart)
    encode = pcm.mulaw_encode if call.encoding == "mulaw" else pcm.alaw_encode
    rng = random.Random(5)
    for size in (0, 2, 320, 640):
        audio = rng.randbytes(size)
        assert state.media(audio) == json.dumps({"event": "media", key: call.stream_id, "media": {
            "payload": base64.b64encode(encode(audio)).decode()}})


@pytest.mark.parametrize("beta", [False, True])
def test_realtime_audio_delta_is_what_json_dumps_writes(beta: bool) -> None:
    from gateway.protocol.realtime_events import ServerEvents, VadDefaults

    events = ServerEvents(beta=beta, vad=VadDefaults(0.5, 300, 400))
    delta = base64.b64encode(random.Random(6).randbytes(960)).decode()
    for rid, iid in (("resp_1", "item_1"), ("resp_1", "item_1"), ("resp_2", "item_9")):
        text = events.audio_delta(rid, iid, delta)
        event_id = json.loads(text)["event_id"]
        assert event_id.startswith("event_") and len(event_id) == 26
        expected = events.event("response.output_audio.delta", response_id=rid, item_id=iid,
                                output_index=0, content_index=0, delta=delta)
        assert expected is not None
        assert text == json.dumps({**expected, "event_id": event_id})
    assert json.loads(text)["type"] == ("response.audio.delta" if beta
                                        else "response.output_audio.delta")
