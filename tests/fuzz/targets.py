"""Fuzz targets for the sans-I/O wire parsers: what a hostile client's bytes can reach.

Each target takes one input (bytes) and checks invariants, raising AssertionError on a
violation; any other exception escaping is a crash too. ``run.py`` drives them with
atheris (coverage-guided); ``test_fuzz.py`` runs each for a bounded time in CI.

- ``wsframes``: the server's frame cutter agrees with websockets' own parser on every
  whole binary frame it takes, says INCOMPLETE for every prefix, REFUSED only for
  unmasked or oversized frames, and reads ``bytes`` and ``bytearray`` alike.
- ``v1``, ``twilio``, ``realtime``: a sequence of messages (split at newlines) never
  raises; every result is one of the documented events or an error value whose
  message is short (no echo of a huge input) and JSON-encodable.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateway.protocol import realtime, twilio, v1, wsframes

MAX_ERROR_CHARS = 300  # an error message may quote the client's input, never much of it
MAX_FRAME = 1 << 12


def wsframes_target(data: bytes) -> None:
    limit = 1 + (data[0] * 16 if data else 0)  # limits from 1 byte to ~4 KiB
    buf = data[1:]
    start, end = wsframes.frame_bounds(buf, 0, limit)
    assert (start, end) == wsframes.frame_bounds(bytearray(buf), 0, limit)
    if end == wsframes.INCOMPLETE:
        assert start == 0 or start > len(buf), (start, len(buf))
        return
    header_mask = len(buf) > 1 and buf[1] & 0x80
    if end == wsframes.REFUSED:
        assert not header_mask or _declared_length(buf) > limit
        return
    assert 0 < start <= end <= len(buf) and header_mask
    for cut in {0, 1, start - 1, (start + end) // 2, end - 1}:
        if 0 <= cut < end:
            assert wsframes.frame_bounds(buf[:cut], 0, limit)[1] in (
                wsframes.INCOMPLETE, wsframes.REFUSED)
    if buf[0] == wsframes.BINARY_FIN:  # what the server takes without the stock parser
        frame, consumed = _stock_parse(buf[:end], limit)
        assert frame is not None and consumed == end
        assert frame.opcode is Opcode.BINARY and frame.fin
        assert frame.data == wsframes.unmask(buf, start, end)


def _declared_length(buf: bytes) -> int:
    length = buf[1] & 0x7F
    if length == 126:
        return int.from_bytes(buf[2:4], "big")
    if length == 127:
        return int.from_bytes(buf[2:10], "big")
    return length


def _stock_parse(buf: bytes, limit: int) -> tuple[Frame | None, int]:
    reader = StreamReader()
    reader.feed_data(buf)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True, max_size=limit)
    try:
        next(parser)
    except StopIteration as done:
        return done.value, len(buf) - len(reader.buffer)
    except (ProtocolError, PayloadTooBig, EOFError):
        return None, 0
    return None, 0


def _messages(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")  # a WebSocket text message is valid UTF-8
    return text.split("\n")[:8]


def _short(message: object) -> None:
    assert isinstance(message, str) and 0 < len(message) <= MAX_ERROR_CHARS, message


V1_EVENTS = (v1.Start, v1.Audio, v1.Text, v1.Interrupt, v1.EndOfSpeech, v1.Ping,
             v1.ProtocolError)


def v1_target(data: bytes) -> None:
    state = v1.ProtocolState()
    for i, message in enumerate(_messages(data)):
        event = state.receive_text(message)
        assert isinstance(event, V1_EVENTS), event
        if isinstance(event, v1.ProtocolError):
            _short(event.message)
            json.loads(v1.encode(event.event()))
        elif isinstance(event, v1.Start):
            assert event.input.sample_rate in v1.SAMPLE_RATES
            assert event.input.encoding in v1.ENCODINGS
        elif isinstance(event, v1.Text):
            assert event.text and event.text == event.text.strip()
            assert len(event.text) <= state.max_text_chars
        elif isinstance(event, v1.Audio):
            assert event.pcm and len(event.pcm) % 2 == 0
        if i == 0:  # and the same bytes as a binary (audio) message
            binary = state.receive_bytes(data[:2000])
            assert isinstance(binary, v1.Audio | v1.ProtocolError)


TWILIO_EVENTS = (twilio.CallStart, twilio.CallAudio, twilio.Dtmf, twilio.MarkPlayed,
                 twilio.CallStop, twilio.Ignored, twilio.CallError)


def twilio_target(data: bytes) -> None:
    call = twilio.CallState()
    for message in _messages(data):
        event = call.receive(message)
        assert isinstance(event, TWILIO_EVENTS), event
        if isinstance(event, twilio.CallError):
            _short(event.message)
        elif isinstance(event, twilio.CallAudio):
            assert len(event.pcm) % 2 == 0 and len(event.pcm) <= 2 * twilio.MAX_PAYLOAD
        elif isinstance(event, twilio.CallStart):
            assert event.encoding in ("mulaw", "alaw") and event.sample_rate == 8000
            assert all(isinstance(k, str) and isinstance(v, str)
                       for k, v in event.custom.items())
    if call.start is not None:  # what the server then writes back is valid JSON
        json.loads(call.mark("m")) and json.loads(call.clear())


def realtime_target(data: bytes) -> None:
    parser = realtime.RealtimeParser(realtime.RealtimeConfig())
    for message in _messages(data):
        event = parser.receive(message)
        assert isinstance(event, realtime.ClientEvent.__args__), event  # type: ignore[attr-defined]
        if isinstance(event, realtime.ClientError):
            _short(event.message)
            json.dumps(dataclass_dict(event))
        assert parser.config.codec("input")[1] in (8000, 24000)


def dataclass_dict(event: realtime.ClientError) -> dict[str, object]:
    return {"message": event.message, "code": event.code, "param": event.param,
            "event_id": event.event_id, "type": event.type}


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wsframes": wsframes_target, "v1": v1_target, "twilio": twilio_target,
    "realtime": realtime_target,
}

# Starting points: valid messages of each format (the fuzzer mutates from here).
SEEDS: dict[str, list[bytes]] = {
    "wsframes": [b"\x10" + Frame(Opcode.BINARY, b"audio" * n).serialize(mask=True)
                 for n in (0, 1, 30, 200)]
    + [b"\x20" + Frame(Opcode.TEXT, b'{"type":"ping"}').serialize(mask=True),
       b"\x01" + Frame(Opcode.BINARY, b"x" * 300).serialize(mask=True),
       b"\x30" + Frame(Opcode.CLOSE, b"\x03\xe8bye").serialize(mask=True)],
    "v1": [
        b'{"type":"start","encoding":"mulaw","sample_rate":8000,"conversation_id":"c1",'
        b'"language":"en","voice":"joe","system_prompt":"Be brief."}\n'
        b'{"type":"audio","data":"AAAAAA=="}\n{"type":"text","text":" hello "}',
        b'{"type":"interrupt"}\n{"type":"end_of_speech"}\n{"type":"ping"}\n{"type":"x"}',
        b'{"type":"start","sample_rate":16000,"output_sample_rate":24000}',
    ],
    "twilio": [
        b'{"event":"connected"}\n{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1",'
        b'"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000},'
        b'"customParameters":{"token":"t","assistant_id":"a"}}}\n'
        b'{"event":"media","media":{"track":"inbound","payload":"//8A"}}\n'
        b'{"event":"dtmf","dtmf":{"digit":"5"}}\n{"event":"mark","mark":{"name":"m"}}\n'
        b'{"event":"stop"}',
        b'{"event":"start","stream_id":"s","start":{"call_control_id":"c",'
        b'"media_format":{"encoding":"PCMA","sample_rate":8000}}}',
    ],
    "realtime": [
        b'{"type":"session.update","session":{"type":"realtime","instructions":"Hi",'
        b'"audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":'
        b'{"type":"server_vad","threshold":0.5,"silence_duration_ms":500}},'
        b'"output":{"voice":"alloy","format":{"type":"audio/pcm","rate":24000}}}}}\n'
        b'{"type":"input_audio_buffer.append","audio":"AAAA"}\n'
        b'{"type":"input_audio_buffer.commit"}',
        b'{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        b'"content":[{"type":"input_text","text":"hello"}]}}\n'
        b'{"type":"response.create","response":{"output_modalities":["text"]}}\n'
        b'{"type":"conversation.item.truncate","item_id":"i","content_index":0,'
        b'"audio_end_ms":100}\n{"type":"response.cancel"}',
        b'{"type":"session.update","session":{"input_audio_format":"g711_ulaw",'
        b'"modalities":["text","audio"],"input_audio_transcription":{"model":"whisper-1"}}}',
    ],
}
