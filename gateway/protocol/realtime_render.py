"""The Realtime wire's renderer: the pipeline's events as OpenAI Realtime events. Pure:
no socket, no session (the connection in ``gateway.transports.realtime`` feeds it and
keeps the history side: truncation, deletion).

The session puts its typed events into its outbox (SpeechStarted, Transcription,
StreamStart, Token, Interrupted, StreamEnd, reply audio …). This turns each into the
Realtime API's events: the user's turn becomes a user message item (speech_started →
speech_stopped → committed → conversation.item.added → transcription → item.done), each
reply a response with one assistant message item whose audio and transcript stream as
deltas, ending in ``response.done`` (``completed``, or ``cancelled`` after a barge-in or
``response.cancel``). Turn ids map onto user item ids, the session's ``resp_…`` ids are
the response ids.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.audio import pcm
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, OutItem
from gateway.protocol import v1
from gateway.protocol.realtime import Item, RealtimeParser, new_id
from gateway.protocol.realtime_events import ResponseInfo, ServerEvents

MAX_ITEMS = 500  # the oldest items are forgotten beyond this (the history is bounded too)
MAX_RESPONSES = 32
Failure = (ev.ProviderFailed | ev.SttBehind | ev.SessionCrashed | ev.ReplyCrashed
           | ev.TurnNotStored | ev.SessionEnded)


@dataclass(slots=True)
class ReplyState:
    """One response as the client sees it."""

    info: ResponseInfo
    item: Item
    text: str = ""
    cancelled: bool = False
    reason: str = "turn_detected"
    failed: bool = False
    done: bool = False
    history_from: int = 0  # its messages sit at or after this index of the history
    started_at: float = field(default_factory=time.monotonic)
    index: int | None = None  # the message item's output_index, once it is announced

    @property
    def speaks(self) -> bool:
        return "audio" in self.info.modalities

    def ids(self) -> dict[str, Any]:
        return {"response_id": self.info.id, "item_id": self.item.id,
                "output_index": self.index, "content_index": 0}


def words_prefix(short: str, long: str) -> bool:
    a, b = short.split(), long.split()
    return bool(a) and a == b[: len(a)]


class Renderer:
    """Mixin of the connection: the conversation's items and responses, rendered."""

    parser: RealtimeParser
    events: ServerEvents
    conversation_id: str
    rate_limits: list[dict[str, Any]]
    input_ms: float  # client audio received so far
    vad_start_ms: int  # speech the VAD needs before it says speech started

    def _init_conversation(self) -> None:
        self.items: OrderedDict[str, Item] = OrderedDict()
        self.links: dict[str, Any] = {}  # item id -> its message in the session history
        self.turn_items: dict[int, Item] = {}
        self.interim: dict[int, str] = {}
        self.audio_ms: dict[str, float] = {}  # user item id -> its audio's start, then length
        self.replies: OrderedDict[str, ReplyState] = OrderedDict()
        self.override_modalities: tuple[str, ...] | None = None
        self.override_instructions: str | None = None
        self.override_tools: tuple[Any, Any] | None = None  # a response's (tools, tool_choice)
        self.requested = False  # a response.create is on its way to stream_start
        self.cancel_reasons: dict[str, str] = {}  # response id -> why the client stopped it
        self.metadata: dict[str, Any] | None = None  # of the response.create on its way
        self._batch: list[dict[str, Any] | str] = []  # str: already JSON (audio deltas)

    # --- output helpers --------------------------------------------------------------

    def _out(self, kind: str, **fields: Any) -> None:
        """Writer side: queue an event for the socket after the current pipeline event."""
        event = self.events.event(kind, **fields)
        if event is not None:
            self._batch.append(event)

    def take_batch(self) -> list[dict[str, Any] | str]:
        batch, self._batch = self._batch, []
        return batch

    def add_item(self, item: Item) -> str | None:
        """Append an item to the conversation; returns the previous item's id."""
        previous = next(reversed(self.items)) if self.items else None
        self.items[item.id] = item
        while len(self.items) > MAX_ITEMS:
            old, _ = self.items.popitem(last=False)
            self.links.pop(old, None)
        return previous

    def transcribing(self) -> bool:
        return self.parser.config.transcription is not None

    # --- pipeline events -------------------------------------------------------------

    def render(self, item: OutItem) -> list[dict[str, Any] | str]:
        if isinstance(item, AudioOut):
            self._audio(item)
            return self.take_batch()
        if isinstance(item, ev.Passthrough):  # the reader side's, in order with the pipeline's
            return [item.message]
        handler = _PIPELINE.get(type(item))
        if handler is not None:
            handler(self, item)
        return self.take_batch()

    def _speech_started(self, e: ev.SpeechStarted) -> None:
        item = Item(new_id("item"), "message", "user", audio=True, status="in_progress")
        self.turn_items[e.turn_id] = item
        # The VAD decides a little after the speech began: back-date by its start run.
        # Speech over a reply is announced once its words decide (late_ms after it began).
        start_ms = max(0, round(self.input_ms - self._vad_ms("prefix_padding_ms")
                                - self.vad_start_ms - (e.late_ms or 0)))
        self.audio_ms[item.id] = start_ms
        self._out("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=item.id)

    def _speech_stopped(self, e: ev.SpeechStopped) -> None:
        item = self.turn_items.setdefault(
            e.turn_id, Item(new_id("item"), "message", "user", audio=True))
        end_ms = max(0, round(self.input_ms - self._vad_ms("silence_duration_ms")))
        self.audio_ms[item.id] = end_ms - self.audio_ms.get(item.id, end_ms)
        self._out("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item.id)
        previous = self.add_item(item)
        self._out("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        self._out("conversation.item.added", previous_item_id=previous,
                  item=self.events.item_json(item))

    def _vad_ms(self, key: str) -> int:
        td = self.events.turn_detection_json(self.parser.config.turn_detection)
        return int(td[key]) if td else 0

    def _transcription(self, e: ev.Transcription) -> None:
        turn_id = e.turn_id
        item = self.turn_items.get(turn_id)
        if item is None:
            return
        text = e.text
        if not e.final:
            before = self.interim.get(turn_id, "")
            if self.transcribing() and text.startswith(before) and len(text) > len(before):
                self.interim[turn_id] = text
                self._out("conversation.item.input_audio_transcription.delta", item_id=item.id,
                          content_index=0, delta=text[len(before):])
            return
        self.interim.pop(turn_id, None)
        self.turn_items.pop(turn_id, None)
        self.transcribed(item, text, self._out)

    def transcribed(self, item: Item, text: str, out: Any) -> None:
        """A user audio item's transcript is final (from the pipeline or a manual commit)."""
        item.text = text
        item.status = "completed"
        if self.transcribing():
            seconds = round(self.audio_ms.pop(item.id, 0) / 1000.0, 3)
            out("conversation.item.input_audio_transcription.completed", item_id=item.id,
                content_index=0, transcript=text,
                usage={"type": "duration", "seconds": seconds})
        out("conversation.item.done", item=self.events.item_json(item))

    def _stream_start(self, e: ev.StreamStart) -> None:
        rid = e.response_id
        self.requested = False
        modalities = self.override_modalities or self.parser.config.output_modalities
        item = Item(new_id("item"), "message", "assistant", text="", audio="audio" in modalities,
                    status="in_progress")
        history_from, input_chars = self.reply_started(rid)
        info = ResponseInfo(rid, self.conversation_id, modalities, input_chars=input_chars,
                            metadata=self.metadata)
        self.metadata = None
        reply = ReplyState(info, item, history_from=history_from)
        self.replies[rid] = reply
        while len(self.replies) > MAX_RESPONSES:
            self.replies.popitem(last=False)
        self._out("response.created", response=self.events.response_json(info, self.parser.config))

    def _open_message(self, reply: ReplyState) -> None:
        """The reply's message item, announced with its first words or audio (a reply
        that only calls the client's functions has none)."""
        if reply.index is not None:
            return
        item, rid = reply.item, reply.info.id
        reply.index = len(reply.info.output)
        reply.info.output.append(item)
        previous = self.add_item(item)
        item_json = self.events.item_json(item)
        self._out("response.output_item.added", response_id=rid, output_index=reply.index,
                  item=item_json)
        self._out("conversation.item.added", previous_item_id=previous, item=item_json)
        self._out("response.content_part.added", part=self.events.part_json(item),
                  **reply.ids())

    def _function_call(self, e: ev.FunctionCall) -> None:
        reply = self.replies.get(e.response_id)
        if reply is None or reply.done:
            return
        item = Item(new_id("item"), "function_call", call_id=e.call_id, name=e.name,
                    arguments="", status="in_progress")
        rid, index = reply.info.id, len(reply.info.output)
        reply.info.output.append(item)
        previous = self.add_item(item)
        self._out("response.output_item.added", response_id=rid, output_index=index,
                  item=self.events.item_json(item))
        self._out("conversation.item.added", previous_item_id=previous,
                  item=self.events.item_json(item))
        ids = {"response_id": rid, "item_id": item.id, "output_index": index,
               "call_id": e.call_id}
        self._out("response.function_call_arguments.delta", delta=e.arguments, **ids)
        self._out("response.function_call_arguments.done", arguments=e.arguments,
                  name=e.name, **ids)
        item.arguments, item.status = e.arguments, "completed"
        item_json = self.events.item_json(item)
        self._out("response.output_item.done", response_id=rid, output_index=index,
                  item=item_json)
        self._out("conversation.item.done", item=item_json)

    def _token(self, e: ev.Token) -> None:
        reply = self.replies.get(e.response_id)
        if reply is None or reply.done:
            return
        self._open_message(reply)
        reply.text += e.text
        kind = ("response.output_audio_transcript.delta" if reply.speaks
                else "response.output_text.delta")
        self._out(kind, delta=e.text, **reply.ids())

    def _audio(self, chunk: AudioOut) -> None:
        reply = self.replies.get(chunk.response_id)
        if reply is None or reply.done or not reply.speaks:
            return
        codec, rate = self.parser.config.codec("output")
        data = chunk.pcm
        # The chunk's own rate (a client may switch formats between sentences).
        src = round(len(data) / 2 * 1000 / chunk.duration_ms) if chunk.duration_ms else rate
        if abs(src - rate) > rate // 20:
            data = pcm.resample(data, src, rate)
        self._open_message(reply)
        reply.info.audio_ms += chunk.duration_ms
        self._batch.append(self.events.audio_delta(reply.info.id, reply.item.id,
                                                   pcm.b64encode(pcm.encode(data, codec)),
                                                   reply.index or 0))

    def _interrupted(self, e: ev.Interrupted) -> None:
        reason = self.cancel_reasons.pop(e.response_id, "turn_detected")
        reply = self.replies.get(e.response_id)
        if reply is not None:
            reply.cancelled = True
            reply.reason = reason

    def _error(self, e: Failure) -> None:
        """A failure, with v1's code and fixed text (never an exception's)."""
        v1_error = v1.render(e)
        assert v1_error is not None
        live = next((r for r in reversed(self.replies.values()) if not r.done), None)
        if live is not None:
            live.failed = True
        self._batch.append(self.events.error(str(v1_error["message"]),
                                             str(v1_error["code"]).lower(),
                                             kind="server_error"))

    def _stream_end(self, e: ev.StreamEnd) -> None:
        reply = self.replies.get(e.response_id)
        if reply is None or reply.done:
            return
        reply.done = True
        self.override_modalities = self.override_instructions = self.override_tools = None
        self.after_response()
        info = reply.info
        if not info.output:  # said nothing: an empty message (as before)
            self._open_message(reply)
        if reply.index is not None:
            self._close_message(reply)
        item = reply.item
        if reply.cancelled:
            info.status = "cancelled"
            info.status_details = {"type": "cancelled", "reason": reply.reason}
        elif reply.failed and not item.text:
            info.status = "failed"
            info.status_details = {"type": "failed", "error": {
                "type": "server_error", "code": "provider_error",
                "message": "the reply could not be generated"}}
        else:
            info.status = "completed"
        self._out("response.done", response=self.events.response_json(info, self.parser.config))
        self._out("rate_limits.updated", rate_limits=self.rate_limits)

    def _close_message(self, reply: ReplyState) -> None:
        item, ids = reply.item, reply.ids()
        item.text = reply.text.strip()
        item.status = "incomplete" if reply.cancelled else "completed"
        if reply.speaks:
            self._out("response.output_audio.done", **ids)
            self._out("response.output_audio_transcript.done", transcript=item.text or "", **ids)
        else:
            self._out("response.output_text.done", text=item.text or "", **ids)
        self._out("response.content_part.done", part=self.events.part_json(item), **ids)
        item_json = self.events.item_json(item)
        self._out("response.output_item.done", response_id=reply.info.id,
                  output_index=reply.index, item=item_json)
        self._out("conversation.item.done", item=item_json)

    def after_response(self) -> None:
        """Hook: the per-response overrides ended (the connection reapplies its settings)."""

    def reply_started(self, response_id: str) -> tuple[int, int]:
        """Hook: a reply starts; the connection returns where its messages will sit in the
        history and how many characters the history holds (the response's input)."""
        return 0, 0


_PIPELINE: dict[type, Any] = {
    ev.SpeechStarted: Renderer._speech_started,
    ev.SpeechStopped: Renderer._speech_stopped,
    ev.Transcription: Renderer._transcription,
    ev.StreamStart: Renderer._stream_start,
    ev.Token: Renderer._token,
    ev.FunctionCall: Renderer._function_call,
    ev.Interrupted: Renderer._interrupted,
    ev.StreamEnd: Renderer._stream_end,
    ev.ProviderFailed: Renderer._error,
    ev.SttBehind: Renderer._error,
    ev.SessionCrashed: Renderer._error,
    ev.ReplyCrashed: Renderer._error,
    ev.TurnNotStored: Renderer._error,
    ev.SessionEnded: Renderer._error,
}
