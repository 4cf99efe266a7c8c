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
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import pcm

_ENCODINGS = {
    "audio/x-mulaw": "mulaw", "pcmu": "mulaw", "mulaw": "mulaw", "ulaw": "mulaw",
    "audio/x-alaw": "alaw", "pcma": "alaw", "alaw": "alaw",
}
MAX_PAYLOAD = 8000  # bytes of G.711 per media message: 1 s at 8 kHz


@dataclass(frozen=True, slots=True)
class CallStart:
    stream_id: str
    call_id: str
    encoding: str  # mulaw | alaw
    sample_rate: int
    custom: dict[str, str] = field(default_factory=dict)
    dialect: str = "twilio"  # twilio | telnyx


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


def _pick(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


@dataclass(slots=True)
class CallState:
    start: CallStart | None = None

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
            digit = _pick(msg.get("dtmf") or {}, "digit")
            return Dtmf(str(digit)) if isinstance(digit, str | int) else CallError("bad dtmf")
        if event == "mark":
            name = _pick(msg.get("mark") or {}, "name")
            return MarkPlayed(str(name)) if name is not None else CallError("bad mark")
        if event == "stop":
            return CallStop()
        return Ignored(event)

    def _start(self, msg: dict[str, Any]) -> CallStart | CallError:
        if self.start is not None:
            return CallError("start may come only once")
        body = msg.get("start")
        if not isinstance(body, dict):
            return CallError("start without a start object")
        fmt = _pick(body, "mediaFormat", "media_format") or {}
        encoding = _ENCODINGS.get(str(fmt.get("encoding", "audio/x-mulaw")).lower())
        rate = _pick(fmt, "sampleRate", "sample_rate") or 8000
        if encoding is None or rate != 8000:
            return CallError("only 8 kHz mu-law or A-law audio is supported")
        telnyx = "stream_id" in msg or "media_format" in body or "call_control_id" in body
        stream_id = _pick(msg, "streamSid", "stream_id") or _pick(body, "streamSid",
                                                                  "stream_id") or ""
        call_id = _pick(body, "callSid", "call_control_id", "call_sid") or ""
        custom = _pick(body, "customParameters", "custom_parameters") or {}
        self.start = CallStart(
            stream_id=str(stream_id), call_id=str(call_id), encoding=encoding, sample_rate=8000,
            custom={str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict)
            else {}, dialect="telnyx" if telnyx else "twilio",
        )
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
        msg = self._envelope("media")
        msg["media"] = {"payload": base64.b64encode(encode(pcm_8k)).decode()}
        return json.dumps(msg)

    def mark(self, name: str) -> str:
        msg = self._envelope("mark")
        msg["mark"] = {"name": name}
        return json.dumps(msg)

    def clear(self) -> str:
        return json.dumps(self._envelope("clear"))


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
