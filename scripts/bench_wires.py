"""Wire formats for ``scripts/bench`` and ``scripts/bench_baseline.py``: what a client of
each endpoint sends (v1 binary PCM, Twilio Media Streams, OpenAI Realtime) and how the
bench reads what comes back, in one place so the gateway and the baseline see the same
bytes. Audio is framed at 16 kHz once; each wire carries it in its own encoding:

- ``v1``: binary 16 kHz s16le frames (``/api/v1/voice/ws``);
- ``twilio``: 8 kHz μ-law, base64 in JSON ``media`` messages, Twilio's exact shape
  (``/api/v1/voice/twilio``); the reply's ``media`` messages are audio, the ``<id>:end``
  mark ends the reply;
- ``realtime``: 24 kHz s16le, base64 in ``input_audio_buffer.append`` (``/v1/realtime``);
  ``response.output_audio.delta`` is audio, ``response.done`` ends the reply.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from gateway.audio import pcm

WIRES = ("v1", "twilio", "realtime")
PATHS = {"v1": "/api/v1/voice/ws", "twilio": "/api/v1/voice/twilio",
         "realtime": "/v1/realtime?model=gpt-realtime"}
WIRE_RATE = {"v1": 16000, "twilio": 8000, "realtime": 24000}
STREAM_SID = "MZ00000000000000000000000000000000"


def to_wire(wire: str, frames16k: list[bytes]) -> list[bytes]:
    """Each 20 ms frame's payload as the wire carries it (raw bytes, not yet framed):
    resampled as one stream, so the frames join up as the original audio does."""
    if wire == "v1":
        return list(frames16k)
    rate = WIRE_RATE[wire]
    resampler = pcm.Resampler(16000, rate)
    step = rate * 20 // 1000 * 2
    out = bytearray()
    for f in frames16k:
        out += resampler.process(f)
    out += resampler.process(b"", last=True)
    out += bytes(step * len(frames16k) - len(out)) if len(out) < step * len(frames16k) else b""
    cut = [bytes(out[i * step : (i + 1) * step]) for i in range(len(frames16k))]
    if wire == "realtime":
        return [json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(c).decode()},
                           separators=(",", ":")).encode() for c in cut]
    return [twilio_media(i, pcm.mulaw_encode(c)) for i, c in enumerate(cut)]


def twilio_media(i: int, ulaw: bytes) -> bytes:
    """One inbound media message as Twilio writes it (compact, this member order)."""
    payload = base64.b64encode(ulaw).decode()
    return json.dumps({"event": "media", "sequenceNumber": str(i + 3), "media": {
        "track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20),
        "payload": payload}, "streamSid": STREAM_SID}, separators=(",", ":")).encode()


SESSION_RATE = {"v1": 16000, "twilio": 8000, "realtime": 16000}


def server_view(wire: str, payloads: list[bytes]) -> list[bytes]:
    """The PCM the gateway's session gets for each wire frame, at ``SESSION_RATE``
    (Twilio's μ-law decoded; Realtime's 24 kHz resampled as a stream by its transport):
    for the bench's offline turn check."""
    if wire == "v1":
        return payloads
    resampler = pcm.Resampler(WIRE_RATE[wire], SESSION_RATE[wire], pcm.CLIENT_AUDIO)
    out = []
    for p in payloads:
        msg = json.loads(p)
        if wire == "twilio":
            raw = pcm.mulaw_decode(base64.b64decode(msg["media"]["payload"]))
        else:
            raw = base64.b64decode(msg["audio"])
        out.append(resampler.process(raw))
    return out


def hello(wire: str) -> list[str]:
    """What a client sends once connected, before audio."""
    if wire == "v1":
        return [json.dumps({"type": "start", "sample_rate": 16000})]
    if wire == "twilio":
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json.dumps({"event": "start", "sequenceNumber": "1", "start": {
                    "accountSid": "AC0", "streamSid": STREAM_SID, "callSid": "CA0",
                    "tracks": ["inbound"], "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                    "channels": 1}}, "streamSid": STREAM_SID})]
    return []


@dataclass(frozen=True, slots=True)
class Received:
    """A server message, normalised: kind is audio (``ms`` of it), start, end,
    speech_stopped, error, or other; ``response_id`` where the wire names it."""

    kind: str
    ms: float = 0.0
    response_id: str | None = None
    detail: str = ""


OTHER = Received("other")


def _b64_bytes(text: str, key: str) -> int:
    """Decoded length of the base64 string after ``"key":"`` without parsing the JSON
    (the client must stay cheaper than the server it measures)."""
    i = text.index(key) + len(key)
    i = text.index('"', i) + 1
    j = text.index('"', i)
    return (j - i) * 3 // 4 - (text[j - 2 : j].count("="))


def receive(wire: str, msg: str | bytes) -> Received:
    """Reads one server message (v1 JSON events are the bench's own business)."""
    if wire == "twilio":
        assert isinstance(msg, str)
        if msg.startswith('{"event":"media"') or msg.startswith('{"event": "media"'):
            return Received("audio", _b64_bytes(msg, '"payload"') / 8.0)
        ev = json.loads(msg)
        if ev.get("event") == "mark":
            rid, _, part = ev["mark"]["name"].rpartition(":")
            return Received("end", response_id=rid) if part == "end" else OTHER
        return OTHER
    assert isinstance(msg, str)
    head = msg[:40]  # the type comes first: {"type": "response.output_audio.delta", ...
    if '"response.output_audio.delta"' in head or '"response.audio.delta"' in head:
        return Received("audio", _b64_bytes(msg, '"delta"') / 48.0)
    ev = json.loads(msg)
    typ = ev.get("type")
    if typ == "input_audio_buffer.speech_stopped":
        return Received("speech_stopped")
    if typ == "response.created":
        return Received("start", response_id=ev["response"]["id"])
    if typ == "response.done":
        return Received("end", response_id=ev["response"]["id"])
    if typ == "error":
        err: dict[str, Any] = ev.get("error") or {}
        return Received("error", detail=f"{err.get('code')}: {err.get('message')}")
    return OTHER
