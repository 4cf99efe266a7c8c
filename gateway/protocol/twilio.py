"""Telephony media streams (Twilio Media Streams), sans-I/O.

Also accepts the Telnyx and FastRTC variants of the same messages, which differ only in
names: ``stream_id``/``streamSid``, ``media_format``/``mediaFormat``, encodings
``PCMU``/``audio/x-mulaw`` and ``PCMA``/``audio/x-alaw``, ``sample_rate``/``sampleRate``,
``custom_parameters``/``customParameters``. Replies use the dialect the call started with.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import pcm
from gateway.pipeline import events as ev
from gateway.protocol import audio_json, fields

_ENCODINGS = {
    "audio/x-mulaw": "mulaw", "pcmu": "mulaw", "mulaw": "mulaw", "ulaw": "mulaw",
    "audio/x-alaw": "alaw", "pcma": "alaw", "alaw": "alaw",
}
MAX_PAYLOAD = 8000  # bytes of G.711 per media message: 1 s at 8 kHz
CALL_ID_CHARS = 128  # stream and call ids (Twilio's are 34, Telnyx's call_control_id longer)
MAX_PARAMETERS = 32  # customParameters of a start
MARK_CHARS = 128
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
# customParameters the gateway reads, each with its rule; others are kept as bounded text.
_PARAMETER_RULES: dict[str, Any] = {
    "token": fields.token, "assistant_id": fields.ident, "voice": fields.name,
}
# Without a valid one of these the call cannot be placed: the start is refused.
_REQUIRED_SHAPE = ("token", "assistant_id")
# An inbound media message as Twilio and Telnyx write it (compact, or with Python's
# spaces): these members in this order, the stream id before or after ``media``, plain
# ASCII strings without escapes. Such a message can mean only one thing (the members
# that decide it, event, track and payload, each once), so its payload is taken without
# a JSON parse, 50 times a second per call (``gateway.protocol.audio_json``). Any other
# shape goes to ``receive``, which judges it in full; tests check that both agree
# wherever this one answers.
_SID = rb'"(?:streamSid|stream_id)": ?"[A-Za-z0-9_.:-]{0,128}"'
_NUM = rb'": ?"[0-9]{1,20}", ?'
_MEDIA_HEAD = re.compile(
    rb'\{"event": ?"media", ?(?:"sequence(?:Number|_number)%s)?(?:%s, ?)?'
    rb'"media": ?\{(?:"track": ?"inbound", ?)?(?:"chunk%s)?(?:"timestamp%s)?'
    rb'"payload": ?"' % (_NUM, _SID, _NUM, _NUM))
_MEDIA_TAIL = re.compile(rb'"\}(?:, ?%s)?\}' % _SID)


@dataclass(frozen=True, slots=True)
class CallStart:
    stream_id: str
    call_id: str
    encoding: str  # mulaw | alaw
    sample_rate: int
    custom: dict[str, str] = field(default_factory=dict)
    dialect: str = "twilio"  # twilio | telnyx
    dropped: int = 0  # customParameters left out for breaking the field rules


@dataclass(frozen=True, slots=True)
class CallAudio:
    pcm: bytes  # s16le at the call's sample rate
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    name: str


@dataclass(frozen=True, slots=True)
class CallStop:
    pass


@dataclass(frozen=True, slots=True)
class Ignored:
    """``connected`` and other informational events."""

    event: str


@dataclass(frozen=True, slots=True)
class CallError:
    message: str


CallEvent = CallStart | CallAudio | Dtmf | MarkPlayed | CallStop | Ignored | CallError


def _parameters(custom: Any) -> tuple[dict[str, str], int]:
    """The valid customParameters, and how many were left out. A malformed ``token`` or
    ``assistant_id`` refuses the start (``FieldError``): the call must not fall back to
    another credential or assistant. Numbers are taken as their text (Telnyx sends some)."""
    if not isinstance(custom, dict):
        return {}, 0
    if len(custom) > MAX_PARAMETERS:
        raise fields.FieldError("customParameters", f"may hold at most {MAX_PARAMETERS}")
    kept: dict[str, str] = {}
    for key, value in custom.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        rule = _PARAMETER_RULES.get(key)
        try:
            fields.name(key, "customParameters key")
            where = f"customParameters.{key}"
            kept[key] = (rule(value, where) if rule is not None
                         else fields.text(value, where, fields.PARAM_CHARS))
        except fields.FieldError:
            if key in _REQUIRED_SHAPE:
                raise
    return kept, len(custom) - len(kept)


def _dtmf(body: Any) -> Dtmf | CallError:
    digit = _pick(body, "digit") if isinstance(body, dict) else None
    if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
        digit = str(digit)
    if not isinstance(digit, str) or digit not in DTMF_DIGITS:
        return CallError("dtmf.digit must be one of 0-9 * # A-D")
    return Dtmf(digit.upper())


def _mark(body: Any) -> MarkPlayed | CallError:
    name = _pick(body, "name") if isinstance(body, dict) else None
    try:
        return MarkPlayed(fields.text(name, "mark.name", MARK_CHARS))
    except fields.FieldError as exc:
        return CallError(str(exc))


def _pick(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


@dataclass(slots=True)
class CallState:
    start: CallStart | None = None
    # What an outbound media message holds before its payload, made once per call: a
    # reply's 50 messages a second are then two concatenations, byte for byte what
    # json.dumps wrote for each.
    _media_head: str = ""

    def receive(self, text: str) -> CallEvent:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return CallError("message is not valid JSON")
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            return CallError("message must be a JSON object with an event")
        event = msg["event"]
        if event == "start":
            return self._start(msg)
        if event == "media":
            return self._media(msg)
        if event == "dtmf":
            return _dtmf(msg.get("dtmf"))
        if event == "mark":
            return _mark(msg.get("mark"))
        if event == "stop":
            return CallStop()
        return Ignored(event)

    def media_fast(self, frame: bytes) -> CallAudio | None:
        """The audio of a raw (UTF-8) inbound media message of the usual shape, or None:
        then ``receive`` must judge it. Where this gives audio, ``receive`` gives the same."""
        if self.start is None:
            return None
        found = audio_json.b64_member(frame, _MEDIA_HEAD, _MEDIA_TAIL)
        if found is None:
            return None
        raw = found[2]
        if len(raw) > MAX_PAYLOAD:
            return None
        decode = pcm.mulaw_decode if self.start.encoding == "mulaw" else pcm.alaw_decode
        return CallAudio(decode(raw))

    def _start(self, msg: dict[str, Any]) -> CallStart | CallError:
        if self.start is not None:
            return CallError("start may come only once")
        body = msg.get("start")
        if not isinstance(body, dict):
            return CallError("start without a start object")
        fmt = _pick(body, "mediaFormat", "media_format") or {}
        if not isinstance(fmt, dict):  # (the fuzzer's first find: it raised)
            return CallError("mediaFormat must be an object")
        encoding = _ENCODINGS.get(str(fmt.get("encoding", "audio/x-mulaw")).lower())
        rate = _pick(fmt, "sampleRate", "sample_rate") or 8000
        if encoding is None or rate != 8000:
            return CallError("only 8 kHz mu-law or A-law audio is supported")
        telnyx = "stream_id" in msg or "media_format" in body or "call_control_id" in body
        stream_id = _pick(msg, "streamSid", "stream_id") or _pick(body, "streamSid",
                                                                  "stream_id") or ""
        call_id = _pick(body, "callSid", "call_control_id", "call_sid") or ""
        try:
            for value, name in ((stream_id, "streamSid"), (call_id, "callSid")):
                if value != "":
                    fields.ident(value, name, CALL_ID_CHARS)
            custom, dropped = _parameters(_pick(body, "customParameters", "custom_parameters"))
        except fields.FieldError as exc:
            return CallError(str(exc))
        self.start = CallStart(
            stream_id=stream_id, call_id=call_id, encoding=encoding, sample_rate=8000,
            custom=custom, dialect="telnyx" if telnyx else "twilio", dropped=dropped,
        )
        self._media_head = json.dumps(self._envelope("media"))[:-1] + ', "media": {"payload": "'
        return self.start

    def _media(self, msg: dict[str, Any]) -> CallAudio | Ignored | CallError:
        if self.start is None:
            return CallError("media before start")
        media = msg.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            return CallError("media without a payload")
        track = str(media.get("track", "inbound"))
        if track.startswith("outbound"):
            return Ignored("media")  # our own audio echoed back on a both-tracks stream
        try:
            raw = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            return CallError("payload is not valid base64")
        if len(raw) > MAX_PAYLOAD:
            return CallError("media payload longer than 1 s")
        decode = pcm.mulaw_decode if self.start.encoding == "mulaw" else pcm.alaw_decode
        return CallAudio(decode(raw), track)

    # --- outgoing --------------------------------------------------------------------

    def _envelope(self, event: str) -> dict[str, Any]:
        assert self.start is not None
        key = "stream_id" if self.start.dialect == "telnyx" else "streamSid"
        return {"event": event, key: self.start.stream_id}

    def media(self, pcm_8k: bytes) -> str:
        assert self.start is not None
        encode = pcm.mulaw_encode if self.start.encoding == "mulaw" else pcm.alaw_encode
        return self._media_head + pcm.b64encode(encode(pcm_8k)) + '"}}'

    def mark(self, name: str) -> str:
        msg = self._envelope("mark")
        msg["mark"] = {"name": name}
        return json.dumps(msg)

    def clear(self) -> str:
        return json.dumps(self._envelope("clear"))

    def render(self, event: ev.Event) -> str | None:
        """A pipeline event as the call's frame: ``clear`` when a reply is cut, a ``mark``
        after each reply segment, at a reply's end and before a hand-off; None for the
        rest (a phone shows no text)."""
        if isinstance(event, ev.Interrupted):
            return self.clear()
        if isinstance(event, ev.SegmentPlayed):
            return self.mark(f"{event.response_id}:{event.index}")
        if isinstance(event, ev.TtsComplete) and not event.interrupted:
            return self.mark(f"{event.response_id}:end")
        if isinstance(event, ev.Handoff):
            return self.mark(handoff_mark(event))
        return None


def handoff_mark(handoff: ev.Handoff) -> str:
    """The mark sent with a hand-off: once it is echoed, the caller heard everything."""
    if handoff.action == ev.TRANSFER:
        return f"transfer:{handoff.destination}"
    return "end_call"


def twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """The TwiML that connects a call to the gateway's media stream."""
    from xml.sax.saxutils import quoteattr

    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream>"
        "</Connect></Response>"
    )
