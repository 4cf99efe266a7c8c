"""The chat engine behind ``/api/chat`` and ``/api/chat/voice``.

One turn: load the conversation's recent history (bounded), retrieve knowledge-base
passages, build the system prompt (request prompt > conversation template > assistant
prompt or template > configured prompt), stream the LLM's tokens, then store the user
message and the reply in one transaction *before* the client is told the turn is done.
Nothing is written for a turn whose LLM failed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import structlog
from fastapi import Request

from gateway.audio import pcm
from gateway.config import Config
from gateway.pipeline.answer import query_text
from gateway.pipeline.prompt import assistant_source, system_prompt
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.text import SentenceSplitter
from gateway.pipeline.tools import Filler, ToolEvent, sse_payload
from gateway.protocol import errors
from gateway.providers.base import ChatRequest, Message, Passage, ProviderError
from gateway.store import conversations as store
from gateway.store.db import Database
from gateway.store.models import Assistant, new_id

from .auth import AuthError, Principal
from .deps import checked_assistant, requested_assistant
from .errors import ApiError, client_host, provider_failure

log = structlog.get_logger("gateway.chat")

MAX_CONTENT_CHARS = 8000  # per stored or replayed message
AUDIO_CHUNK_MS = 500  # SSE audio events carry at most this much PCM each
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # audio uploads (the route's body cap adds form overhead)
MAX_AUDIO_S = 120.0  # decoded duration cap of an uploaded recording
STT_RATE = 16000


# --- request helpers shared by the chat and platform routes --------------------------


def engine_of(request: Request) -> ChatEngine:
    st = request.app.state
    engine: ChatEngine | None = getattr(st, "chat_engine", None)
    if engine is None:  # one per app, made on first use (the lifespan owns its parts)
        engine = st.chat_engine = ChatEngine(st.cfg, st.db, st.runtime)
    return engine


async def caller_assistant(request: Request, principal: Principal,
                           requested: str | None = None) -> str:
    """The assistant a request acts for (token, ``x-chat-model-id`` or body). An
    anonymous caller naming another assistant is re-checked against that one."""
    wanted = requested or requested_assistant(request)
    if principal.kind == "anonymous" and wanted and wanted != principal.assistant_scope:
        try:
            principal = await request.app.state.auth.anonymous(client_host(request), wanted)
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
    return await checked_assistant(request, principal, wanted)


async def caller_owner(request: Request, principal: Principal, requested: str | None = None,
                       user_id: str | None = None) -> store.Owner:
    """Whose conversations the request may use: the caller's assistant (as
    ``caller_assistant``) and user (``Principal.owner``; ``user_id`` as the request
    names it, which only an API key may choose)."""
    return principal.owner(await caller_assistant(request, principal, requested), user_id)


def decode_audio(data: bytes) -> tuple[bytes, float]:
    """An uploaded WAV/FLAC/OGG (anything libsndfile reads) as 16 kHz mono s16le, and
    its duration in seconds. Undecodable or too long: a 400."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate <= 0 or f.channels <= 0:
                raise ApiError(400, "INVALID_REQUEST", "audio has no samples")
            seconds = f.frames / f.samplerate
            if seconds > MAX_AUDIO_S:
                raise ApiError(400, "INVALID_REQUEST",
                               f"audio longer than {MAX_AUDIO_S:.0f} s")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise ApiError(400, "INVALID_REQUEST",
                       "cannot decode the audio (send WAV, FLAC or OGG)") from None
    if samples.size == 0:
        raise ApiError(400, "INVALID_REQUEST", "audio has no samples")
    mono = np.mean(samples, axis=1)
    return pcm.resample(pcm.from_float(mono), rate, STT_RATE), seconds


# --- one chat turn -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatInput:
    assistant_id: str
    message: str
    conversation_id: str | None = None
    session_id: str | None = None
    owner: store.Owner | None = None  # None: nobody's (only a new conversation)
    system_prompt: str | None = None
    history: tuple[Message, ...] = ()
    source: str = "chat"
    user_meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    """A prepared turn: ids are assigned up front so ``stream_start`` can name them."""

    inp: ChatInput
    conversation_id: str
    session_id: str
    user_message_id: str
    message_id: str
    request: ChatRequest
    passages: list[Passage]
    model: str
    started: float = field(default_factory=time.perf_counter)
    first_token_ms: float | None = None
    text: str = ""
    tool_decls: list[Any] = field(default_factory=list)  # the assistant's declared tools
    tools: list[dict[str, Any]] = field(default_factory=list)  # the calls made


def owner_of(inp: ChatInput) -> store.Owner:
    return inp.owner if inp.owner is not None else store.Owner(inp.assistant_id)


def sources_of(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    """One source per document (best passage first), shaped as the seeds show."""
    seen: dict[str, dict[str, Any]] = {}
    for p in passages:
        key = p.document_id or p.source
        if key in seen:
            continue
        url = p.source if p.source.startswith(("http://", "https://")) else None
        seen[key] = {"title": p.document_title or p.title, "url": url,
                     "document_id": p.document_id or None, "relevance": round(p.score, 4)}
    return list(seen.values())


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)


class ChatEngine:
    def __init__(self, cfg: Config, db: Database, runtime: Runtime) -> None:
        self.cfg = cfg
        self.db = db
        self.runtime = runtime

    @property
    def history_limit(self) -> int:
        return max(0, 2 * self.cfg.llm.history_turns)

    async def prepare(self, inp: ChatInput) -> Turn:
        """Resolve the conversation, its history, the passages and the prompt. A named
        conversation (``conversation_id``, else ``sessionId``) the caller may not use —
        another assistant's or user's, or unknown — is not continued: the turn starts a
        new one (its id is in the answer). Writes nothing."""
        owner = owner_of(inp)
        session_id = inp.session_id
        async with self.db.session() as s:
            conv = None
            if inp.conversation_id:
                conv = await store.owned(s, owner, inp.conversation_id)
            if conv is None and inp.session_id:  # a new one may not take another's sessionId
                found, session_id = await store.by_client_session(s, owner, inp.session_id)
                conv = conv if inp.conversation_id else found
            assistant = await s.get(Assistant, inp.assistant_id)
            history = (await store.recent_messages(s, conv.id, self.history_limit)
                       if conv is not None and self.history_limit else [])
        if not history and self.history_limit:
            history = list(inp.history[-self.history_limit:])
        history = [Message(m.role, m.content[:MAX_CONTENT_CHARS]) for m in history]
        passages = await self.runtime.retrieve(inp.assistant_id,
                                               query_text(history, inp.message))
        prompt = system_prompt(self.cfg.llm.system_prompt, self.cfg.llm.assistant_name,
                               requested=inp.system_prompt,
                               assistant=assistant_source(assistant), conversation=conv)
        llm = self.cfg.llm
        session_id = (conv.session_id if conv and conv.session_id else None) \
            or session_id or "sess_" + uuid.uuid4().hex[:20]
        request = ChatRequest(
            messages=[Message("system", prompt), *history, Message("user", inp.message)],
            passages=passages, max_tokens=llm.max_tokens, temperature=llm.temperature,
            session_id=session_id)
        return Turn(inp, conv.id if conv else new_id("conv"), session_id, new_id("msg"),
                    new_id("msg"), request, passages, self.runtime.llm.name,
                    tool_decls=list(assistant.tools or []) if assistant else [])

    async def items(self, turn: Turn) -> AsyncIterator[str | ToolEvent | Filler]:
        """The reply's tokens (``turn.text`` accumulates them) with the tool events of
        the calls the model makes. ProviderError on failure."""
        llm = await self.runtime.tool_loop(turn.request, turn.inp.assistant_id,
                                           session_id=turn.session_id, declared=turn.tool_decls)
        turn.tools = llm.records
        async with contextlib.aclosing(llm.run()) as items:
            async for item in items:
                if isinstance(item, str):
                    if turn.first_token_ms is None:
                        turn.first_token_ms = _ms_since(turn.started)
                    turn.text += item
                yield item

    async def tokens(self, turn: Turn) -> AsyncIterator[str]:
        """The reply, token by token. ProviderError on failure."""
        async for item in self.items(turn):
            if isinstance(item, str):
                yield item

    async def complete(self, turn: Turn) -> dict[str, Any]:
        """Store the exchange (committed: the client may now rely on it); the result."""
        inp = turn.inp
        reply = turn.text.strip()
        user_meta = {"source": inp.source, **inp.user_meta}
        reply_meta = {"model": turn.model, "sources": sources_of(turn.passages),
                      "latency_ms": {"first_token": turn.first_token_ms,
                                     "total": _ms_since(turn.started)}}
        if turn.tools:
            reply_meta["tools"] = turn.tools
        async with self.db.session() as s:
            conv = await store.create_or_continue(
                s, owner_of(inp), turn.conversation_id, session_id=turn.session_id,
                title=inp.message, source=inp.source)
            await store.add_messages(
                s, conv, [("user", inp.message[:MAX_CONTENT_CHARS], user_meta),
                          ("assistant", reply[:MAX_CONTENT_CHARS], reply_meta)],
                ids=[turn.user_message_id, turn.message_id])
            await s.commit()
        return self.result(turn)

    def result(self, turn: Turn) -> dict[str, Any]:
        """The union of both seed answers (SmarterAvatar and the Chat SDK Platform)."""
        reply = turn.text.strip()
        return {"response": reply, "message": reply, "sources": sources_of(turn.passages),
                "sessionId": turn.session_id, "conversation_id": turn.conversation_id,
                "message_id": turn.message_id, "user_message_id": turn.user_message_id}

    async def run(self, inp: ChatInput) -> dict[str, Any]:
        """A whole non-streaming turn; a failed LLM is a 502 ``PROVIDER_ERROR``."""
        turn = await self.prepare(inp)
        try:
            async for _ in self.tokens(turn):
                pass
        except ProviderError as exc:
            raise provider_failure("llm", exc) from None
        return await self.complete(turn)

    def start_event(self, turn: Turn) -> dict[str, Any]:
        return {"conversation_id": turn.conversation_id, "sessionId": turn.session_id,
                "message_id": turn.message_id, "user_message_id": turn.user_message_id,
                "assistant_id": turn.inp.assistant_id, "model": turn.model}

    async def events(self, turn: Turn) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """SSE events of a text turn: stream_start, token…, agent_response (or error),
        stream_end."""
        yield "stream_start", self.start_event(turn)
        reason = "stop"
        try:
            async for item in self.items(turn):
                if isinstance(item, str):
                    yield "token", {"text": item}
                elif isinstance(item, ToolEvent):  # a filler is for speech only
                    yield item.type, sse_payload(item)
            yield "agent_response", await self.complete(turn)
        except ProviderError as exc:
            reason = "error"
            yield "error", provider_error("llm", exc)
        except Exception as exc:  # never a broken stream without its stream_end
            reason = "error"
            yield "error", internal_error(exc)
        yield "stream_end", {"conversation_id": turn.conversation_id,
                             "message_id": turn.message_id, "finish_reason": reason}


def provider_error(stage: str, exc: ProviderError) -> dict[str, Any]:
    """The SSE ``error`` of a failed stage: its fixed message; the provider's to the log."""
    log.warning("provider_error", stage=stage, error=str(exc))
    return {"error": {"code": errors.PROVIDER_ERROR, "message": errors.provider_message(stage)},
            "retryable": exc.retryable}


def internal_error(exc: Exception) -> dict[str, Any]:
    log.error("chat_stream_failed", exc_info=exc)
    return {"error": {"code": errors.INTERNAL_ERROR, "message": errors.INTERNAL_MESSAGE},
            "retryable": True}


# --- voice: the same turn, with the reply spoken sentence by sentence ---------------


_END = object()


@dataclass(frozen=True, slots=True)
class VoiceOptions:
    voice: str | None
    sample_rate: int
    language: str | None


class VoiceReply:
    """Runs the LLM and the TTS side by side: each sentence is synthesised as soon as
    the tokens complete it, and its audio goes out in order, in chunks of ≤ 0.5 s."""

    def __init__(self, engine: ChatEngine, turn: Turn, opts: VoiceOptions) -> None:
        self.engine = engine
        self.turn = turn
        self.opts = opts
        # Bounded: a slow SSE reader holds back synthesis instead of buffering audio.
        self.out: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.failed = False

    async def events(self, transcript: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        yield "transcription", {"text": transcript, "language": self.opts.language,
                                "final": True}
        tasks = [asyncio.create_task(self._llm()), asyncio.create_task(self._tts())]
        try:
            done = 0
            while done < len(tasks):
                item = await self.out.get()
                if item is _END:
                    done += 1
                    continue
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        yield "stream_end", {"conversation_id": self.turn.conversation_id,
                             "message_id": self.turn.message_id,
                             "finish_reason": "error" if self.failed else "stop"}

    async def _llm(self) -> None:
        engine, turn = self.engine, self.turn
        splitter = SentenceSplitter()
        try:
            await self.out.put(("stream_start", engine.start_event(turn)))
            async for item in engine.items(turn):
                if isinstance(item, ToolEvent):
                    await self.out.put((item.type, sse_payload(item)))
                    continue
                if isinstance(item, Filler):
                    continue
                await self.out.put(("token", {"text": item}))
                for sentence in splitter.push(item):
                    self.sentences.put_nowait(sentence)
            for sentence in splitter.flush():
                self.sentences.put_nowait(sentence)
            await self.out.put(("agent_response", await engine.complete(turn)))
        except ProviderError as exc:
            self.failed = True
            await self.out.put(("error", provider_error("llm", exc)))
        except Exception as exc:  # e.g. the database: the stream still ends cleanly
            self.failed = True
            await self.out.put(("error", internal_error(exc)))
        finally:
            self.sentences.put_nowait(None)
        # Not reached when cancelled (the reader has gone): nothing waits for it then.
        await self.out.put(_END)

    async def _tts(self) -> None:
        rate = self.opts.sample_rate
        total_ms, seq, index = 0.0, 0, 0
        try:
            while (sentence := await self.sentences.get()) is not None:
                speech = await self.engine.runtime.synthesize(
                    sentence, self.opts.voice, rate, assistant_id=self.turn.inp.assistant_id)
                if index == 0:
                    await self.out.put(("tts_start", {"encoding": "pcm_s16le",
                                                      "sample_rate": rate, "channels": 1}))
                for event in audio_events(speech.pcm, rate, seq, index, sentence):
                    await self.out.put(("audio", event))
                    seq += 1
                    total_ms += event["duration_ms"]
                index += 1
        except ProviderError as exc:
            self.failed = True
            await self.out.put(("error", provider_error("tts", exc)))
        except Exception as exc:
            self.failed = True
            await self.out.put(("error", internal_error(exc)))
        if index:
            await self.out.put(("tts_complete", {"duration_ms": round(total_ms, 1),
                                                 "chunks": seq, "sentences": index}))
        await self.out.put(_END)


def audio_events(data: bytes, rate: int, seq: int, index: int,
                 sentence: str) -> list[dict[str, Any]]:
    """One sentence's audio as ``audio`` event payloads of at most AUDIO_CHUNK_MS."""
    step = rate * AUDIO_CHUNK_MS // 1000 * 2
    return [{"seq": seq + n, "sentence_index": index, "encoding": "pcm_s16le",
             "sample_rate": rate, "duration_ms": round(pcm.duration_ms(len(piece), rate), 1),
             "text": sentence if n == 0 else None,
             "audio": base64.b64encode(piece).decode("ascii")}
            for n, piece in enumerate(data[i:i + step] for i in range(0, len(data), step))]
