"""Speculative first speech: while a pause is still being judged (Smart Turn, the words
check), the reply to the words decoded at it is worked out and its first sentence
synthesised, so that if the turn does end at that pause its first audio is ready, not
started, when the turn ends.

Safe by construction. Nothing is emitted, stored or spoken from here: the speculation
only warms one piece of speech. The real reply runs unchanged after the turn ends, and
the TTS stage takes the prepared speech only for exactly the same text, voice and rate
(``take``); anything else is synthesised as usual. It runs only with an LLM that makes
no calls and costs a few milliseconds (the provider's ``speculative`` flag: grounded,
extractive), never with one that could run a tool or bill a request.

Bounded: one speculation per session; a newer pause cancels the older one, and so do
speech resuming, a reply starting and the session closing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.providers.base import Speech

from .reply import Reply, ReplyRequest, SpokenSentence

Synthesize = Callable[[str], Awaitable[Speech]]


class FirstSpeech:
    """One session's speculation: ``start`` at a pause's words, ``take`` in the TTS stage."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._key: tuple[int, int] | None = None  # (turn id, pause) it was made for
        self._text = ""  # the first sentence, once known
        self._voice: tuple[str | None, int] = (None, 0)
        self._task: asyncio.Task[Speech | None] | None = None

    def start(self, key: tuple[int, int], reply: Reply, voice: str | None, rate: int,
              synthesize: Synthesize, allowed: Callable[[], Awaitable[bool]]) -> None:
        """Work out ``reply``'s first sentence and synthesise it (if ``allowed()``)."""
        self.cancel()
        self._key, self._voice = key, (voice, rate)
        self._task = asyncio.create_task(self._run(reply, synthesize, allowed))

    async def _run(self, reply: Reply, synthesize: Synthesize,
                   allowed: Callable[[], Awaitable[bool]]) -> Speech | None:
        if not await allowed():
            return None
        async with contextlib.aclosing(reply.items()) as items:
            async for item in items:
                if isinstance(item, SpokenSentence):
                    self._text = item.text
                    break
        if not self._text:
            return None
        try:
            return await synthesize(self._text)
        except Exception as exc:  # best effort: the real TTS stage will try again
            self.log.debug("speculation_failed", error=type(exc).__name__)
            return None

    async def prepared(self, text: str, voice: str | None, rate: int) -> Speech | None:
        """The speech made ahead for exactly ``text`` (waiting for it if it is still
        being made), once; None when there is none (the caller synthesises)."""
        task = self._task
        if task is None:
            return None
        if not task.done() and not self._text:
            await asyncio.wait({task})  # a few ms: the reply's first sentence
        if text != self._text or (voice, rate) != self._voice:
            self.cancel()  # another sentence: this one will never be asked for
            return None
        self._task, self._key, self._text = None, None, ""
        await asyncio.wait({task})
        return None if task.cancelled() or task.exception() else task.result()

    def cancel(self) -> None:
        """Drop the speculation."""
        if self._task is not None:
            self._task.cancel()
        self._task, self._key, self._text = None, None, ""

    @property
    def pending(self) -> tuple[int, int] | None:
        return self._key


def request_for(base: ReplyRequest) -> ReplyRequest:
    """A reply request made safe to run ahead: no tools of any kind."""
    return ReplyRequest(base.assistant_id, base.system_prompt, base.history, base.text,
                        conversation_id=base.conversation_id, session_id=base.session_id,
                        speech=True, tools=[], max_tokens=base.max_tokens,
                        temperature=base.temperature)
