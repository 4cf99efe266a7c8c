"""A conversation's history: the one object a voice session and the HTTP chat keep their
messages in, and the only way to change them (transports never edit a list directly).

Read it as a sequence (oldest first). Change it with ``append``, ``truncate`` (an
assistant message cut to what the listener heard; nothing heard removes it), ``delete``
and ``take_unanswered`` (the user messages after the last reply, taken out to become
the next turn). It is bounded: beyond ``max_messages`` the oldest are forgotten (the
LLM only ever sees the last ``llm.history_turns`` turns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import overload

from gateway.providers.base import Message

MAX_MESSAGES = 500


class History(Sequence[Message]):
    def __init__(self, messages: Iterable[Message] = (), max_messages: int = MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._items: list[Message] = list(messages)[-max_messages:]

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | Sequence[Message]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"History({self._items!r})"

    def append(self, message: Message) -> Message:
        self._items.append(message)
        if len(self._items) > self.max_messages:
            del self._items[0]
        return message

    def truncate(self, index: int, text: str) -> Message | None:
        """Keep only ``text`` of the message at ``index`` (what was heard of a reply);
        an empty ``text`` removes it. The new message, or None if removed."""
        if not text:
            self.delete(index)
            return None
        self._items[index] = new = dataclasses.replace(self._items[index], content=text)
        return new

    def delete(self, index: int) -> None:
        del self._items[index]

    def take_unanswered(self) -> list[Message]:
        """Remove and return the user messages after the last reply (oldest first)."""
        cut = len(self._items)
        while cut > 0 and self._items[cut - 1].role == "user":
            cut -= 1
        taken, self._items[cut:] = self._items[cut:], []
        return taken
