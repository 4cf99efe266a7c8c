"""OpenAI Realtime API wire format, sans-I/O: the server events and the objects in them.

GA names by default. A client that asked for the beta protocol (``OpenAI-Beta:
realtime=v1`` or the ``openai-beta.realtime-v1`` subprotocol) gets the beta names
(``response.audio.delta``, ``response.audio_transcript.delta``, ``response.text.delta``,
``conversation.item.created``, …) and the beta session, item and response shapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

from .realtime import FORMATS, Item, RealtimeConfig, TurnDetection, new_id

BETA_NAMES: Final[dict[str, str | None]] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
    "conversation.item.done": None,  # the beta protocol has no such event
}
_BETA_FORMAT_NAMES: Final = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw",
                             "audio/pcma": "g711_alaw"}


@dataclass(frozen=True, slots=True)
class VadDefaults:
    """What a ``server_vad`` field left unset means here (the gateway's VAD config)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 200
    silence_duration_ms: int = 400


@dataclass(slots=True)
class ResponseInfo:
    id: str
    conversation_id: str | None
    modalities: tuple[str, ...]
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[Item] = field(default_factory=list)
    input_chars: int = 0
    audio_ms: float = 0.0
    metadata: dict[str, Any] | None = None


class ServerEvents:
    """Builds server events: a fresh ``event_id`` each, names and shapes per dialect."""

    def __init__(self, *, beta: bool, vad: VadDefaults) -> None:
        self.beta = beta
        self.vad = vad
        # audio_delta's text around the event id and the payload, for the current reply
        self._delta_key: tuple[str, str, int] | None = None
        self._delta_parts = ("", "")

    def event(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """None when the event does not exist in the client's dialect."""
        name = BETA_NAMES.get(kind, kind) if self.beta else kind
        if name is None:
            return None
        return {"type": name, "event_id": new_id("event"), **fields}

    def audio_delta(self, response_id: str, item_id: str, delta: str,
                    output_index: int = 0) -> str:
        """``response.output_audio.delta`` as JSON text, byte for byte what ``json.dumps``
        writes of ``event(...)`` with these fields: 50 per second of a reply, where
        building and dumping the dict cost ~10x the concatenation (its base64 scanned
        for escapes each time). ``delta`` is base64, which needs no escaping."""
        if self._delta_key != (response_id, item_id, output_index):
            name = BETA_NAMES["response.output_audio.delta"] if self.beta else \
                "response.output_audio.delta"
            self._delta_key = (response_id, item_id, output_index)
            self._delta_parts = (
                f'{{"type": "{name}", "event_id": "',
                f'", "response_id": {json.dumps(response_id)}, "item_id": '
                f'{json.dumps(item_id)}, "output_index": {output_index}, "content_index": 0, '
                '"delta": "')
        head, middle = self._delta_parts
        return head + new_id("event") + middle + delta + '"}'

    def error(self, message: str, code: str | None, *, param: str | None = None,
              event_id: str | None = None, kind: str = "invalid_request_error"
              ) -> dict[str, Any]:
        return {"type": "error", "event_id": new_id("event"), "error": {
            "type": kind, "code": code, "message": message, "param": param,
            "event_id": event_id}}

    # --- objects ---------------------------------------------------------------------

    def format_json(self, name: str) -> Any:
        if self.beta:
            return _BETA_FORMAT_NAMES[name]
        return {"type": name, "rate": FORMATS[name][1]} if name == "audio/pcm" else {"type": name}

    def turn_detection_json(self, td: TurnDetection | None) -> dict[str, Any] | None:
        if td is None:
            return None
        d = self.vad
        out: dict[str, Any] = {
            "type": td.type,
            "threshold": d.threshold if td.threshold is None else td.threshold,
            "prefix_padding_ms": (d.prefix_padding_ms if td.prefix_padding_ms is None
                                  else td.prefix_padding_ms),
            "silence_duration_ms": (d.silence_duration_ms if td.silence_duration_ms is None
                                    else td.silence_duration_ms),
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
        if td.idle_timeout_ms is not None:
            out["idle_timeout_ms"] = td.idle_timeout_ms
        if td.type == "semantic_vad":
            out["eagerness"] = td.eagerness or "auto"
        return out

    def session_json(self, c: RealtimeConfig, session_id: str,
                     expires_at: int | None) -> dict[str, Any]:
        if self.beta:
            return {
                "id": session_id, "object": "realtime.session", "model": c.model,
                "modalities": ["text", "audio"] if c.speaks else ["text"],
                "instructions": c.instructions, "voice": c.voice,
                "input_audio_format": self.format_json(c.input_format),
                "output_audio_format": self.format_json(c.output_format),
                "input_audio_transcription": c.transcription,
                "turn_detection": self.turn_detection_json(c.turn_detection),
                "tools": list(c.tools), "tool_choice": c.tool_choice,
                "temperature": c.temperature,
                "max_response_output_tokens": c.max_output_tokens, "speed": c.speed,
                "expires_at": expires_at,
            }
        return {
            "type": "realtime", "object": "realtime.session", "id": session_id,
            "model": c.model, "output_modalities": list(c.output_modalities),
            "instructions": c.instructions,
            "audio": {
                "input": {"format": self.format_json(c.input_format),
                          "transcription": c.transcription,
                          "noise_reduction": c.noise_reduction,
                          "turn_detection": self.turn_detection_json(c.turn_detection)},
                "output": {"format": self.format_json(c.output_format), "voice": c.voice,
                           "speed": c.speed},
            },
            "tools": list(c.tools), "tool_choice": c.tool_choice,
            "max_output_tokens": c.max_output_tokens, "tracing": None, "truncation": "auto",
            "prompt": None, "include": None, "expires_at": expires_at,
        }

    def item_json(self, item: Item) -> dict[str, Any]:
        out: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": item.type,
                               "status": item.status}
        if item.type == "function_call_output":
            out.update(call_id=item.call_id, output=item.output)
            return out
        if item.type == "function_call":
            out.update(call_id=item.call_id, name=item.name, arguments=item.arguments)
            return out
        out["role"] = item.role
        out["content"] = [self._content(item)]
        return out

    def _content(self, item: Item) -> dict[str, Any]:
        if item.role == "assistant":
            if item.audio:
                return {"type": "audio" if self.beta else "output_audio",
                        "transcript": item.text or ""}
            return {"type": "text" if self.beta else "output_text", "text": item.text or ""}
        if item.audio:
            return {"type": "input_audio", "transcript": item.text}
        return {"type": "input_text", "text": item.text or ""}

    def part_json(self, item: Item) -> dict[str, Any]:
        """A content part as ``response.content_part.added/done`` carry it."""
        if item.audio:
            return {"type": "audio", "transcript": item.text or ""}
        return {"type": "text", "text": item.text or ""}

    def response_json(self, r: ResponseInfo, c: RealtimeConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object": "realtime.response", "id": r.id, "status": r.status,
            "status_details": r.status_details,
            "output": [self.item_json(i) for i in r.output],
            "conversation_id": r.conversation_id, "max_output_tokens": c.max_output_tokens,
            "metadata": r.metadata, "usage": usage(r) if r.status != "in_progress" else None,
        }
        speaks = "audio" in r.modalities
        if self.beta:
            out.update(modalities=["text", "audio"] if speaks else ["text"], voice=c.voice,
                       output_audio_format=self.format_json(c.output_format),
                       temperature=c.temperature)
        else:
            out.update(output_modalities=list(r.modalities), audio={
                "output": {"format": self.format_json(c.output_format), "voice": c.voice}})
        return out


def usage(r: ResponseInfo) -> dict[str, Any]:
    """Token counts in the Realtime API's shape. The gateway's models do not count tokens
    the way OpenAI bills them: these are estimates (4 characters a text token, one audio
    token per 50 ms of audio)."""
    text = sum(len(i.text or "") for i in r.output)
    text_tokens = math.ceil(text / 4)
    audio_tokens = math.ceil(r.audio_ms / 50)
    input_tokens = math.ceil(r.input_chars / 4)
    return {
        "total_tokens": input_tokens + text_tokens + audio_tokens,
        "input_tokens": input_tokens, "output_tokens": text_tokens + audio_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0,
                                "cached_tokens": 0, "image_tokens": 0,
                                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                                          "image_tokens": 0}},
        "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
    }
