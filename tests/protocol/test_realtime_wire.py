"""The OpenAI Realtime wire format, sans-I/O: client event parsing and server event shapes."""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.audio import pcm
from gateway.protocol import realtime as rt
from gateway.protocol.realtime_events import ResponseInfo, ServerEvents, VadDefaults


def parse(parser: rt.RealtimeParser, **msg: Any) -> rt.ClientEvent:
    return parser.receive(json.dumps(msg))


def test_ga_session_update() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    ev = parse(p, type="session.update", session={
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["text"],
        "audio": {"input": {"format": {"type": "audio/pcmu"},
                            "turn_detection": {"type": "server_vad", "threshold": 0.7,
                                               "silence_duration_ms": 300,
                                               "create_response": False}},
                  "output": {"format": {"type": "audio/pcma"}, "voice": "marin"}}})
    assert isinstance(ev, rt.SessionUpdate)
    c = ev.config
    assert (c.instructions, c.output_modalities, c.voice) == ("Be brief.", ("text",), "marin")
    assert c.codec("input") == ("mulaw", 8000) and c.codec("output") == ("alaw", 8000)
    td = c.turn_detection
    assert td is not None and (td.threshold, td.silence_duration_ms, td.prefix_padding_ms,
                               td.create_response) == (0.7, 300, None, False)
    assert p.config is c


def test_beta_session_fields_are_aliases() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    ev = parse(p, type="session.update", session={
        "modalities": ["text", "audio"], "voice": "alloy", "input_audio_format": "g711_ulaw",
        "output_audio_format": "pcm16", "turn_detection": None,
        "input_audio_transcription": {"model": "whisper-1"},
        "max_response_output_tokens": 200})
    assert isinstance(ev, rt.SessionUpdate)
    c = ev.config
    assert c.output_modalities == ("audio",) and c.turn_detection is None
    assert (c.input_format, c.output_format) == ("audio/pcmu", "audio/pcm")
    assert c.transcription == {"model": "whisper-1"} and c.max_output_tokens == 200


def test_bad_session_update_is_an_error_and_changes_nothing() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    before = p.config
    for session, param in [
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
         "session.audio.input.format.rate"),
        ({"input_audio_format": "opus"}, "session.input_audio_format"),
        ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection.type"),
        ({"output_modalities": ["video"]}, "session.output_modalities"),
        ({"type": "transcription"}, "session.type"),
    ]:
        ev = parse(p, type="session.update", event_id="e1", session=session)
        assert isinstance(ev, rt.ClientError) and ev.param == param, (session, ev)
        assert ev.event_id == "e1"
    assert p.config is before


def test_audio_append_decodes_the_session_format() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    samples = pcm.from_float([0.5, -0.5, 0.25])
    ev = parse(p, type="input_audio_buffer.append", audio=base64.b64encode(samples).decode())
    assert isinstance(ev, rt.AudioAppend) and (ev.pcm, ev.sample_rate) == (samples, 24000)
    parse(p, type="session.update", session={"input_audio_format": "g711_alaw"})
    ev = parse(p, type="input_audio_buffer.append",
               audio=base64.b64encode(pcm.alaw_encode(samples)).decode())
    assert isinstance(ev, rt.AudioAppend) and ev.sample_rate == 8000
    assert ev.pcm == pcm.alaw_decode(pcm.alaw_encode(samples))
    for audio in ("@@@", 5):
        assert isinstance(parse(p, type="input_audio_buffer.append", audio=audio),
                          rt.ClientError)
    parse(p, type="session.update", session={"input_audio_format": "pcm16"})
    odd = parse(p, type="input_audio_buffer.append", audio=base64.b64encode(b"abc").decode())
    assert isinstance(odd, rt.ClientError)


def test_items_and_other_events() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    ev = parse(p, type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]})
    assert isinstance(ev, rt.ItemCreate) and ev.item.text == "Hi" and ev.item.id.startswith("item_")
    audio = pcm.from_float([0.1] * 240)
    ev = parse(p, type="conversation.item.create", item={
        "id": "mine", "type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(audio).decode()}]})
    assert isinstance(ev, rt.ItemCreate) and ev.item.pcm == audio and ev.item.rate == 24000
    ev = parse(p, type="conversation.item.create", item={
        "type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"})
    assert isinstance(ev, rt.ItemCreate) and ev.item.output == '{"ok":true}'
    ev = parse(p, type="conversation.item.truncate", item_id="i", content_index=0,
               audio_end_ms=1500)
    assert ev == rt.ItemTruncate("i", 0, 1500)
    ev = parse(p, type="response.create", response={"modalities": ["text"],
                                                     "instructions": "Say hi."})
    assert ev == rt.ResponseCreate(("text",), "Say hi.")
    assert parse(p, type="response.cancel") == rt.ResponseCancel()
    bad = [parse(p, type="conversation.item.truncate", item_id="i", content_index=0),
           parse(p, type="conversation.item.create", item={"type": "message", "role": "x"}),
           parse(p, type="conversation.item.delete"),
           parse(p, type="what.ever")]
    assert [e.code for e in bad if isinstance(e, rt.ClientError)] == [
        "invalid_value", "invalid_value", "missing_required_parameter", "invalid_event"]
    assert p.receive("[1,2]").code == "invalid_event"  # type: ignore[union-attr]
    assert p.receive("{").code == "invalid_json"  # type: ignore[union-attr]


HOSTILE_EVENTS: list[tuple[dict[str, Any], str]] = [
    ({"type": "session.update", "session": {"instructions": "Be kind.\x00"}},
     "session.instructions"),
    ({"type": "session.update", "session": {"voice": "alloy\ud800"}}, "session.voice"),
    ({"type": "session.update", "session": {"model": "m" * 101}}, "session.model"),
    ({"type": "session.update", "session": {"audio": {"output": {"voice": {"id": "v v"}}}}},
     "session.audio.output.voice.id"),
    ({"type": "session.update", "session": {"tools": [{"name": "t\x00"}]}}, "session.tools"),
    ({"type": "session.update", "session": {"tools": [{}] * 129}}, "session.tools"),
    ({"type": "session.update", "session": {"temperature": "hot"}}, "session.temperature"),
    ({"type": "session.update", "session": {"input_audio_transcription": {"prompt": "\ud800"}}},
     "session.input_audio_transcription"),
    ({"type": "session.update", "session": {"turn_detection": {
        "type": "semantic_vad", "eagerness": "x" * 999}}}, "session.turn_detection.eagerness"),
    ({"type": "conversation.item.create", "item": {"id": "i" * 80, "type": "message",
      "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}, "item.id"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
      "content": [{"type": "input_text", "text": "x\x00y"}]}}, "item.content[0].text"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
      "content": [{"type": "input_text", "text": "\udc00"}]}}, "item.content[0].text"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output",
      "call_id": "call 1", "output": "ok"}}, "item.call_id"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output",
      "call_id": "call_1", "output": "o\x00"}}, "item.output"),
    ({"type": "conversation.item.create", "previous_item_id": "p\x00",
      "item": {"type": "message", "role": "user", "content": [{"type": "text", "text": "a"}]}},
     "previous_item_id"),
    ({"type": "conversation.item.delete", "item_id": "x" * 65}, "item_id"),
    ({"type": "response.create", "response": {"metadata": {"k": "\x00"}}},
     "response.metadata"),
    ({"type": "response.create", "response": {"instructions": "\ud800"}},
     "response.instructions"),
    ({"type": "response.cancel", "response_id": "r\x00"}, "response_id"),
]


def test_hostile_fields_are_client_errors_and_change_nothing() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    before = p.config
    for msg, param in HOSTILE_EVENTS:
        wire = json.dumps({**msg, "event_id": "evt_1"})  # NUL and surrogates as \u escapes
        ev = p.receive(wire)
        assert isinstance(ev, rt.ClientError) and ev.param == param, (msg, ev)
        assert ev.event_id == "evt_1" and ev.type == "invalid_request_error"
    assert p.config is before
    ok = parse(p, type="session.update", session={"instructions": "Fine.", "temperature": 0.7})
    assert isinstance(ok, rt.SessionUpdate) and ok.config.temperature == 0.7


def test_a_hostile_event_id_or_type_is_not_echoed() -> None:
    p = rt.RealtimeParser(rt.RealtimeConfig())
    ev = p.receive(json.dumps({"type": "response.cancel", "event_id": "e" * 5000}))
    assert isinstance(ev, rt.ClientError) and ev.event_id is None and ev.param == "event_id"
    ev = p.receive(json.dumps({"type": "secret words " * 100}))
    assert isinstance(ev, rt.ClientError) and "secret" not in ev.message


def test_server_event_names_per_dialect() -> None:
    ga = ServerEvents(beta=False, vad=VadDefaults())
    beta = ServerEvents(beta=True, vad=VadDefaults())
    for kind, old in [("response.output_audio.delta", "response.audio.delta"),
                      ("response.output_audio_transcript.delta",
                       "response.audio_transcript.delta"),
                      ("response.output_text.delta", "response.text.delta"),
                      ("conversation.item.added", "conversation.item.created")]:
        assert ga.event(kind)["type"] == kind  # type: ignore[index]
        assert beta.event(kind)["type"] == old  # type: ignore[index]
    assert beta.event("conversation.item.done") is None
    ev = ga.event("response.created")
    assert ev is not None and ev["event_id"].startswith("event_")


def test_session_and_response_shapes() -> None:
    c = rt.RealtimeConfig(output_format="audio/pcmu", turn_detection=rt.TurnDetection())
    vad = VadDefaults(0.5, 200, 400)
    ga = ServerEvents(beta=False, vad=vad).session_json(c, "sess_1", None)
    assert ga["type"] == "realtime" and ga["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    beta = ServerEvents(beta=True, vad=vad).session_json(c, "sess_1", None)
    assert beta["output_audio_format"] == "g711_ulaw" and beta["modalities"] == ["text", "audio"]
    item = rt.Item("item_1", "message", "assistant", text="Hello there.", audio=True)
    info = ResponseInfo("resp_1", "conv_1", ("audio",), status="completed", output=[item],
                        audio_ms=1000)
    resp = ServerEvents(beta=False, vad=vad).response_json(info, c)
    assert resp["output"][0]["content"] == [{"type": "output_audio",
                                             "transcript": "Hello there."}]
    assert resp["usage"]["output_token_details"] == {"text_tokens": 3, "audio_tokens": 20}
