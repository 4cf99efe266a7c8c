"""The one reply engine: a user turn in, the assistant's reply out as typed items.

Every path that answers a user uses it: voice sessions of every transport (through
``Session``), ``/api/chat`` (JSON and SSE), ``/api/chat/voice`` and
``/api/v1/chat/query``. One turn: retrieve knowledge-base passages (a bare follow-up
is searched with the question before it), build the LLM request (system prompt, the
recent history, the turn), run the LLM with the assistant's tools (``ToolLoop``), and
stream what it says as items:

- ``Token``: the next piece of the reply text (an upstream's NUL or lone surrogate
  mended);
- ``ToolEvent`` / ``Filler``: a tool call starting or ending; words to say while a slow
  tool runs (spoken, not part of the answer's text);
- ``SpokenSentence`` (``speech=True``): a sentence (the first one cut at its first
  clause) ready for speech synthesis, as soon as the tokens complete it;
- ``Failed``: the LLM failed (a ``ProviderError``); what was said is flushed after it;
- ``ClientCalls``: the model called tools the client declared (``client_tools``); the
  reply ends with them, and the client's results, put in the history, continue the
  conversation in a next reply whose ``text`` is empty.

``Reply.sources`` (one shape everywhere) and ``Reply.tools`` (the calls made) fill in
as the reply runs; once it ends, ``sources`` are what the answer cites (``cited``): none
for "I don't know", the passages it quotes when it quotes some. A bug (any other
exception) propagates: the caller's boundary reports it as ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ProviderError
from gateway.providers.base import ChatRequest, Message, Passage, ToolSpec

from .answer import query_text
from .runtime import Runtime
from .text import FIRST_CLAUSE_CHARS, SentenceSplitter, clean
from .tools import ClientCalls, Filler, ToolEvent

__all__ = ["ClientCalls", "Failed", "Filler", "Reply", "ReplyItem", "ReplyRequest",
           "SpokenSentence", "Token", "ToolEvent", "cited", "paired", "sources_of"]


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    assistant_id: str
    system_prompt: str  # built by ``prompt.system_prompt``
    history: Sequence[Message]  # oldest first; the last ``llm.history_turns`` turns are used
    text: str  # the user's turn; "" continues after the client's tool results
    conversation_id: str = ""  # the LLM request's session (a provider may keep state by it)
    session_id: str = ""  # the tools' session
    telephony: bool = False  # a phone call: end_call / transfer_call are offered
    tools: list[Any] | None = None  # the assistant's declared tools, if the caller has them
    speech: bool = False  # split the reply into sentences for speech synthesis
    max_tokens: int | None = None  # None: the configured
    temperature: float | None = None
    client_tools: tuple[ToolSpec, ...] = ()  # the client's own functions (it runs them)
    tool_choice: str | None = None  # see ChatRequest.tool_choice


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    text: str


@dataclass(frozen=True, slots=True)
class Failed:
    error: ProviderError


ReplyItem = Token | ToolEvent | Filler | SpokenSentence | Failed | ClientCalls


def paired(history: Sequence[Message]) -> list[Message]:
    """The history as an LLM API accepts it: a tool result only after the call asking for
    it, a call only with all its results (a call the client never answered, or one cut
    off by the history's window, becomes its words alone)."""
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    asked: set[str | None] = set()
    out: list[Message] = []
    for m in history:
        if m.role == "assistant" and m.tool_calls:
            if all(c.id in answered for c in m.tool_calls):
                asked.update(c.id for c in m.tool_calls)
                out.append(m)
            elif m.content:
                out.append(Message("assistant", m.content))
        elif m.role != "tool" or m.tool_call_id in asked:
            out.append(m)
    return out


def sources_of(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """A reply's sources: one per document, in retrieval order (best first), at its
    best passage's relevance."""
    seen: dict[str, dict[str, Any]] = {}
    for p in passages:
        key = p.document_id or p.source
        found = seen.get(key)
        if found is not None:
            found["relevance"] = max(found["relevance"], round(p.score, 4))
            continue
        url = p.source if p.source.startswith(("http://", "https://")) else None
        seen[key] = {"title": p.document_title or p.title, "url": url,
                     "document_id": p.document_id or None, "relevance": round(p.score, 4)}
    return list(seen.values())


# An answer that says it does not know (in the usual ways a model words it) cites nothing.
_UNKNOWN = re.compile(
    r"\bi\s*(?:do\s*n[o']?t|'m\s+not|am\s+not)\s+(?:know|sure)\b"
    r"|\b(?:can't|cannot|couldn't)\s+(?:find|answer)\b|\bno\s+information\b", re.IGNORECASE)
_NON_WORD = re.compile(r"\W+")


def _folded(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def cited(passages: Sequence[Passage], answer: str) -> list[dict[str, Any]]:
    """The sources of a finished answer: none when it says it does not know; else the
    passages it quotes (an extractive answer, or a model that kept a sentence), else
    every passage it was given (a model's own words may draw on any of them)."""
    if not answer.strip():
        return sources_of(passages)  # no words (a client tool call): what it was given
    if _UNKNOWN.search(answer.replace("’", "'")):
        return []
    sentences = [f for f in map(_folded, re.split(r"(?<=[.!?])\s+", answer)) if len(f) > 12]
    quoted = [p for p in passages
              if any(f in _folded(p.text) for f in sentences)]
    return sources_of(quoted or passages)


@dataclass
class Reply:
    """One reply being produced. ``items()`` runs it (once)."""

    runtime: Runtime
    request: ReplyRequest
    text: str = ""  # the answer so far (tokens only)
    sources: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # the calls made (stored)
    first_token_at: float | None = None  # time.perf_counter() of the first token

    async def items(self) -> AsyncGenerator[ReplyItem, None]:
        rq, cfg = self.request, self.runtime.cfg.llm
        question = rq.text or next((m.content for m in reversed(rq.history)
                                    if m.role == "user"), "")
        passages = await self.runtime.retrieve(rq.assistant_id, query_text(rq.history, question))
        self.sources = sources_of(passages)
        window = rq.history[-2 * cfg.history_turns:] if cfg.history_turns > 0 else []
        history = paired(window)
        turn = [Message("user", rq.text)] if rq.text else []
        chat = ChatRequest(
            messages=[Message("system", rq.system_prompt), *history, *turn],
            passages=passages,
            max_tokens=rq.max_tokens or cfg.max_tokens,
            temperature=cfg.temperature if rq.temperature is None else rq.temperature,
            session_id=rq.conversation_id)
        llm = await self.runtime.tool_loop(chat, rq.assistant_id, session_id=rq.session_id,
                                           telephony=rq.telephony, declared=rq.tools,
                                           client=rq.client_tools, tool_choice=rq.tool_choice)
        self.tools = llm.records
        # A first sentence is cut at its first clause: speech starts sooner.
        splitter = SentenceSplitter(first_clause_chars=FIRST_CLAUSE_CHARS) if rq.speech else None
        try:
            async with contextlib.aclosing(llm.run()) as stream:
                async for item in stream:
                    for out in self._item(item, splitter):
                        yield out
        except ProviderError as exc:
            yield Failed(exc)
        for sentence in splitter.flush() if splitter else ():
            yield SpokenSentence(sentence)
        self.sources = cited(passages, self.text)

    def _item(self, item: str | ToolEvent | Filler | ClientCalls,
              splitter: SentenceSplitter | None) -> list[ReplyItem]:
        out: list[ReplyItem] = []
        spoken = ""
        if isinstance(item, str):
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            token = clean(item)
            self.text += token
            out.append(Token(token))
            spoken = token
        elif isinstance(item, Filler):
            out.append(item)
            spoken = item.text + " "
        else:
            if (isinstance(item, ClientCalls) or item.type == "tool_start") \
                    and splitter is not None:
                # What the model said before its call is spoken now.
                out.extend(SpokenSentence(s) for s in splitter.flush())
            out.append(item)
        if splitter is not None and spoken:
            out.extend(SpokenSentence(s) for s in splitter.push(spoken))
        return out
