"""Conformance with the Realtime API as the official SDK defines it: every client event
type the SDK lists (``openai.types.realtime.RealtimeClientEvent``) gets its documented
answer on ``/v1/realtime`` (its server event, or an ``error`` with a documented code),
never silence; the unsupported ones answer an ``error``. Every server event validates
against the SDK's models (``Recorder``)."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

from openai.types.realtime import RealtimeClientEvent
from test_realtime import Recorder, connect, speech

MANUAL = {"type": "realtime", "output_modalities": ["audio"],
          "audio": {"input": {"turn_detection": None}}}
ASK = {"type": "message", "role": "user",
       "content": [{"type": "input_text", "text": "What is the gateway?"}]}


def sdk_client_event_types() -> set[str]:
    union = typing.get_args(RealtimeClientEvent)[0]
    return {typing.get_args(m.model_fields["type"].annotation)[0]
            for m in typing.get_args(union)}


async def test_every_client_event_is_answered(gateway) -> None:
    sent: dict[str, str] = {}  # event_id -> type
    answers: dict[str, str] = {}  # event_id -> the answer expected (a type or error code)

    async with await connect(gateway) as conn:
        rec = Recorder(conn)
        await rec.wait("session.created")

        async def send(event: dict[str, Any], answer: str) -> None:
            eid = f"evt_{len(sent) + 1}"
            sent[eid], answers[eid] = event["type"], answer
            await conn.send_raw(json.dumps({**event, "event_id": eid}))

        await send({"type": "session.update", "session": MANUAL}, "session.updated")
        audio = base64.b64encode(speech("what_is_the_gateway.wav", tail_ms=100)).decode()
        await send({"type": "input_audio_buffer.append", "audio": audio}, "")  # no answer
        await send({"type": "input_audio_buffer.commit"}, "input_audio_buffer.committed")
        await send({"type": "input_audio_buffer.clear"}, "input_audio_buffer.cleared")
        await send({"type": "conversation.item.create", "item": {**ASK, "id": "item_ask"}},
                   "conversation.item.added")
        await send({"type": "conversation.item.retrieve", "item_id": "item_ask"},
                   "conversation.item.retrieved")
        await rec.wait("conversation.item.done", count=2)  # the committed audio's words
        await send({"type": "response.create"}, "response.created")
        done = await rec.wait("response.done", timeout=90)
        await send({"type": "conversation.item.truncate", "item_id": done.response.output[0].id,
                    "content_index": 0, "audio_end_ms": 500}, "conversation.item.truncated")
        await send({"type": "conversation.item.delete", "item_id": "item_ask"},
                   "conversation.item.deleted")
        await send({"type": "response.cancel"}, "error:response_cancel_not_active")
        await send({"type": "output_audio_buffer.clear"},
                   "error:output_audio_buffer_not_active")
        # Not supported here: documented errors.
        await send({"type": "transcription_session.update", "session": {}},
                   "error:unsupported_event")
        await send({"type": "response.create", "response": {"conversation": "none"}},
                   "error:unsupported_value")
        await send({"type": "response.create", "response": {"input": []}},
                   "error:unsupported_value")
        await rec.wait("conversation.item.deleted")
        await rec.wait("error", count=5)
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        await rec.wait("session.updated", count=2)  # the session goes on
    assert sdk_client_event_types() <= set(sent.values())
    errors = {e.error.event_id: e.error for e in rec.of("error")}
    for eid, answer in answers.items():
        if answer.startswith("error:"):
            assert errors[eid].code == answer[6:] and errors[eid].message, (sent[eid], answer)
        else:
            assert eid not in errors, (sent[eid], errors.get(eid))
            assert not answer or rec.of(answer), (sent[eid], answer)
    assert len(errors) == 5
    assert errors["evt_13"].param == "response.conversation"
    assert errors["evt_14"].param == "response.input"
