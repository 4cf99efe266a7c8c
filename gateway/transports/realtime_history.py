"""The Realtime connection's side of the conversation history: which session reply
each response is (its spoken segments, for ``conversation.item.truncate``) and where an
item's message sits in the session history (truncate, delete). The rendering itself is
pure (``gateway.protocol.realtime_render``)."""

from __future__ import annotations

from collections import OrderedDict

from gateway.pipeline.session import Session
from gateway.pipeline.session_items import Response
from gateway.pipeline.text import heard_text
from gateway.protocol.realtime import Item
from gateway.protocol.realtime_render import MAX_RESPONSES, Renderer, words_prefix


class History(Renderer):
    """Mixin of the connection, over the renderer: the session's side of each response."""

    session: Session | None
    pipelines: OrderedDict[str, Response]  # response id -> the session's reply

    def reply_started(self, response_id: str) -> tuple[int, int]:
        session = self.session
        live = session.response if session is not None else None
        if live is not None and live.response_id == response_id:
            self.pipelines[response_id] = live
            while len(self.pipelines) > MAX_RESPONSES:
                self.pipelines.popitem(last=False)
        history = session.history if session is not None else []
        return max(0, len(history) - 1), sum(len(m.content) for m in history)

    def message_index(self, item: Item) -> int | None:
        """Where an item's message sits in the session history (None: not there)."""
        assert self.session is not None
        history = self.session.history
        linked = self.links.get(item.id)
        if linked is not None:
            for i in range(len(history) - 1, -1, -1):
                if history[i] is linked:
                    return i
        reply = next((r for r in self.replies.values() if r.item is item), None)
        pipeline = self.pipelines.get(reply.info.id) if reply else None
        full = (pipeline.text if pipeline else "") or item.text or ""
        # Only after the reply's start: an older, identical answer is not this one.
        lowest = min(reply.history_from, len(history)) if reply else 0
        for i in range(len(history) - 1, lowest - 1, -1):
            msg = history[i]
            if msg.role != item.role:
                continue
            if msg.content == (item.text or "") or (item.role == "assistant"
                                                     and words_prefix(msg.content, full)):
                self.links[item.id] = msg
                return i
        return None

    def heard(self, item: Item, audio_end_ms: int) -> str | None:
        """The text of an assistant audio item up to ``audio_end_ms`` (None: no audio)."""
        reply = next((r for r in self.replies.values() if r.item is item), None)
        pipeline = self.pipelines.get(reply.info.id) if reply else None
        if pipeline is None or not pipeline.segments:
            return None
        return heard_text(pipeline.segments, audio_end_ms)
