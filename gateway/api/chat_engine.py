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
import dataclasses
import io
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import structlog
from fastapi import Request

from gateway.access.auth import AuthError, Principal
from gateway.audio import pcm
from gateway.config import Config
from gateway.errors import failure
from gateway.pipeline.history import History
from gateway.pipeline.prompt import assistant_source, system_prompt
from gateway.pipeline.reply import Failed, Reply, ReplyItem, ReplyRequest, SpokenSentence, Token
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.tools import ToolEvent, sse_payload
from gateway.protocol import errors
from gateway.providers.base import Message
from gateway.store import conversations as store
from gateway.store.db import Database
from gateway.store.models import Assistant, new_id

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
    reply: Reply
    model: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def text(self) -> str:
        return self.reply.text

    @property
    def first_token_ms(self) -> float | None:
        at = self.reply.first_token_at
        return None if at is None else round((at - self.started) * 1000.0, 1)


def owner_of(inp: ChatInput) -> store.Owner:
    return inp.owner if inp.owner is not None else store.Owner(inp.assistant_id)


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

    async def prepare(self, inp: ChatInput, *, speech: bool = False) -> Turn:
        """Resolve the conversation, its history and the prompt. A named conversation
        (``conversation_id``, else ``sessionId``) the caller may not use — another
        assistant's or user's, or unknown — is not continued: the turn starts a new one
        (its id is in the answer). Writes nothing."""
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
            stored = (await store.recent_messages(s, conv.id, self.history_limit)
                      if conv is not None and self.history_limit else [])
        if not stored and self.history_limit:
            stored = list(inp.history[-self.history_limit:])
        history = History(dataclasses.replace(m, content=m.content[:MAX_CONTENT_CHARS])
                          for m in stored)
        llm = self.cfg.llm
        prompt = system_prompt(llm.system_prompt, llm.assistant_name, requested=inp.system_prompt,
                               assistant=assistant_source(assistant), conversation=conv)
        session_id = (conv.session_id if conv and conv.session_id else None) \
            or session_id or "sess_" + uuid.uuid4().hex[:20]
        request = ReplyRequest(inp.assistant_id, prompt, history, inp.message,
                               conversation_id=session_id, session_id=session_id,
                               tools=list(assistant.tools or []) if assistant else [],
                               speech=speech)
        return Turn(inp, conv.id if conv else new_id("conv"), session_id, new_id("msg"),
                    new_id("msg"), Reply(self.runtime, request), self.runtime.llm.name)

    async def complete(self, turn: Turn) -> dict[str, Any]:
        """Store the exchange (committed: the client may now rely on it); the result."""
        inp = turn.inp
        reply = turn.text.strip()
        user_meta = {"source": inp.source, **inp.user_meta}
        reply_meta = {"model": turn.model, "sources": turn.reply.sources,
                      "latency_ms": {"first_token": turn.first_token_ms,
                                     "total": _ms_since(turn.started)}}
        if turn.reply.tools:
            reply_meta["tools"] = turn.reply.tools
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
        return {"response": reply, "message": reply, "sources": turn.reply.sources,
                "sessionId": turn.session_id, "conversation_id": turn.conversation_id,
                "message_id": turn.message_id, "user_message_id": turn.user_message_id}

    async def run(self, inp: ChatInput) -> dict[str, Any]:
        """A whole non-streaming turn; a failed LLM is a 502 ``PROVIDER_ERROR``."""
        turn = await self.prepare(inp)
        async with contextlib.aclosing(turn.reply.items()) as items:
            async for item in items:
                if isinstance(item, Failed):
                    raise provider_failure("llm", item.error)
        return await self.complete(turn)

    def start_event(self, turn: Turn) -> dict[str, Any]:
        return {"conversation_id": turn.conversation_id, "sessionId": turn.session_id,
                "message_id": turn.message_id, "user_message_id": turn.user_message_id,
                "assistant_id": turn.inp.assistant_id, "model": turn.model}

    def end_event(self, turn: Turn, failed: bool) -> dict[str, Any]:
        return {"conversation_id": turn.conversation_id, "message_id": turn.message_id,
                "finish_reason": "error" if failed else "stop"}

    async def events(self, turn: Turn) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """SSE events of a text turn: stream_start, token…, agent_response (or error),
        stream_end."""
        yield "stream_start", self.start_event(turn)
        failed = False
        try:
            async with contextlib.aclosing(turn.reply.items()) as items:
                async for item in items:
                    if isinstance(item, Failed):
                        failed = True
                        yield "error", sse_error(item.error, "llm")
                        break
                    event = text_event(item)
                    if event is not None:
                        yield event
            if not failed:
                yield "agent_response", await self.complete(turn)
        except Exception as exc:  # never a broken stream without its stream_end
            failed = True
            yield "error", sse_error(exc)
        yield "stream_end", self.end_event(turn, failed)


def text_event(item: ReplyItem) -> tuple[str, dict[str, Any]] | None:
    """A reply item as the chat SSE stream sends it (a filler and sentences are for
    speech only)."""
    if isinstance(item, Token):
        return "token", {"text": item.text}
    if isinstance(item, ToolEvent):
        return item.type, sse_payload(item)
    return None


def sse_error(exc: BaseException, stage: str | None = None) -> dict[str, Any]:
    """The SSE ``error`` event of a failure: its code and fixed message; the exception's
    own text goes to the log only."""
    f = failure(exc, stage)
    if f.code == errors.INTERNAL_ERROR:
        log.error("chat_stream_failed", exc_info=exc)
    else:
        log.warning("chat_stream_error", stage=stage, code=f.code, error=str(exc))
    return {"error": {"code": f.code, "message": f.message}, "retryable": f.retryable}


# --- voice: the same turn, with the reply spoken sentence by sentence ---------------


_END = object()


@dataclass(frozen=True, slots=True)
class VoiceOptions:
    voice: str | None
    sample_rate: int
    language: str | None


class VoiceReply:
    """Runs the reply and the TTS side by side: each sentence the reply engine hands
    out is synthesised at once, and its audio goes out in order, in chunks of ≤ 0.5 s.
    (The turn must be prepared with ``speech=True``.)"""

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
        yield "stream_end", self.engine.end_event(self.turn, self.failed)

    async def _llm(self) -> None:
        engine, turn = self.engine, self.turn
        try:
            await self.out.put(("stream_start", engine.start_event(turn)))
            async with contextlib.aclosing(turn.reply.items()) as items:
                async for item in items:
                    if isinstance(item, SpokenSentence):
                        self.sentences.put_nowait(item.text)
                    elif isinstance(item, Failed):
                        self.failed = True
                        await self.out.put(("error", sse_error(item.error, "llm")))
                    elif (event := text_event(item)) is not None:
                        await self.out.put(event)
            if not self.failed:
                await self.out.put(("agent_response", await engine.complete(turn)))
        except Exception as exc:  # e.g. the database: the stream still ends cleanly
            self.failed = True
            await self.out.put(("error", sse_error(exc)))
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
        except Exception as exc:  # a provider's failure or a bug: reported, then the end
            self.failed = True
            await self.out.put(("error", sse_error(exc, "tts")))
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
