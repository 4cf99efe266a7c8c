"""Chat over HTTP: ``POST /api/chat`` (JSON or SSE) and ``POST /api/chat/voice`` (SSE).

Both seed request shapes are accepted: SmarterAvatar's ``{message, sessionId, history}``
and the Chat SDK Platform's ``{message, model, user_id, conversation_id, system_prompt}``;
the answer carries the fields of both. The platform endpoints (models, templates,
conversations, feedback, transcription...) live in ``platform`` and ``conversations``
and are mounted on this router.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Message as AsgiMessage

from gateway.access.auth import Principal
from gateway.providers.base import Message, ProviderError, Transcript, confidence_of
from gateway.store.assistants import get_assistant

from . import conversations, platform_api
from .chat_engine import (
    MAX_CONTENT_CHARS,
    MAX_UPLOAD_BYTES,
    ChatInput,
    VoiceOptions,
    VoiceReply,
    caller_assistant,
    decode_audio,
    engine_of,
)
from .deps import authed, requested_assistant
from .errors import ERROR_RESPONSES, ApiError, ErrorBody, provider_failure
from .v1base import CleanStr, JsonObject


class CappedBodyRoute(APIRoute):
    """Refuses a body over UPLOAD_BODY_CAP before it is parsed (and spooled to disk),
    with the usual JSON error body (Starlette's own limit answers in plain text)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def capped(request: Request) -> Response:
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > UPLOAD_BODY_CAP:
                raise HTTPException(413, f"request body larger than {UPLOAD_BODY_CAP} bytes")
            seen = 0
            receive = request.receive

            async def counted() -> AsgiMessage:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > UPLOAD_BODY_CAP:  # a chunked body without a length
                    raise HTTPException(413, f"request body larger than {UPLOAD_BODY_CAP} "
                                             "bytes")
                return message

            return await handler(Request(request.scope, counted))

        return capped


router = APIRouter()
uploads = APIRouter(route_class=CappedBodyRoute)
ChatCaller = Annotated[Principal, Depends(authed("chat"))]
VoiceCaller = Annotated[Principal, Depends(authed("voice"))]

UPLOAD_BODY_CAP = MAX_UPLOAD_BYTES + 64 * 1024  # the file plus the other form fields
UPLOAD_FORM_LIMITS = {"max_fields": 20, "max_files": 1, "max_part_size": 16 * 1024}
SSE_PING_S = 15

SSE_EVENTS_DOC = """
Streaming (`?stream=true` or `"stream": true`) answers with Server-Sent Events, each an
`event: <name>` line and a `data: <json>` line:

* `stream_start` — `{conversation_id, sessionId, message_id, user_message_id,
  assistant_id, model}` (ids of the messages this turn will store)
* `token` — `{text}`: the next piece of the reply
* `tool_start` — `{tool_call_id, name, arguments, tool, input}` when the model calls one
  of the assistant's function tools; `tool_end` — `{tool_call_id, name, result_summary,
  duration_ms, ok, tool, output}` when that call is done (its result goes back to the model,
  which then goes on with `token` events). Only for assistants with tools (none by default)
* `agent_response` — the whole answer, same object as the non-streaming JSON body:
  `{response, message, sources:[{title, url, document_id, relevance}], sessionId,
  conversation_id, message_id, user_message_id}`. Sent after the exchange is stored.
* `error` — `{error:{code, message}, retryable}` (e.g. `PROVIDER_ERROR` when the LLM fails)
* `stream_end` — `{conversation_id, message_id, finish_reason: "stop" | "error"}`, always last
"""

VOICE_EVENTS_DOC = """
Multipart upload: `audio` (WAV, FLAC or OGG; any rate and channel count, at most
20 MiB and 120 s) plus optional `language`, `voice`, `sample_rate` (of the reply
audio, default the configured output rate), `sessionId`, `conversation_id`, `user_id`,
`chatModelId`, `system_prompt`. The answer is always Server-Sent Events:

* `transcription` — `{text, language, final}`
* the chat events: `stream_start`, `token`…, `agent_response`, `error`
* `tts_start` — `{encoding: "pcm_s16le", sample_rate, channels: 1}` before the first audio
* `audio` — `{seq, sentence_index, encoding, sample_rate, duration_ms, text, audio}`:
  `audio` is base64 PCM s16le mono, at most 500 ms per event, in order; `text` is the
  sentence on its first chunk. Each sentence is synthesised as soon as it is complete.
* `tts_complete` — `{duration_ms, chunks, sentences}`
* `stream_end` — `{conversation_id, message_id, finish_reason}`, always last
"""

SSE_EVENT_NAMES = ("stream_start", "token", "tool_start", "tool_end", "agent_response",
                   "error", "stream_end", "transcription", "tts_start", "audio", "tts_complete")
# OpenAPI 3.1 reads a text/event-stream schema as the schema of each event.
SSE_EVENT_SCHEMA = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": list(SSE_EVENT_NAMES)},
    "data": {"type": "string", "contentMediaType": "application/json"}}}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
          "description": "JSON (non-streaming) or Server-Sent Events (streaming)"},
    404: {"model": ErrorBody, "description": "INVALID_MODEL_ID"},
    502: {"model": ErrorBody, "description": "PROVIDER_ERROR (non-streaming)"},
}


class HistoryItem(BaseModel):
    role: str = Field(max_length=20)
    content: CleanStr = Field(default="", max_length=MAX_CONTENT_CHARS)


class ChatBody(BaseModel):
    """Either seed's request; unknown fields are ignored."""

    message: CleanStr = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    sessionId: CleanStr | None = Field(default=None, max_length=200)
    history: list[HistoryItem] | None = Field(default=None, max_length=100)
    model: CleanStr | None = Field(default=None, max_length=100)
    user_id: CleanStr | None = Field(default=None, max_length=200)
    conversation_id: CleanStr | None = Field(default=None, max_length=64)
    system_prompt: CleanStr | None = Field(default=None, max_length=8000)
    chatModelId: CleanStr | None = Field(default=None, max_length=64)
    stream: bool = False
    context: JsonObject | None = None

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be empty")
        return value


class Source(BaseModel):
    title: str
    url: str | None = None
    document_id: str | None = None
    relevance: float | None = None


class ChatResponse(BaseModel):
    response: str
    message: str
    sources: list[Source]
    sessionId: str
    conversation_id: str
    message_id: str
    user_message_id: str


def sse(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> EventSourceResponse:
    async def encode() -> AsyncIterator[ServerSentEvent]:
        async for name, data in events:
            yield ServerSentEvent(data=json.dumps(data, ensure_ascii=False), event=name)

    return EventSourceResponse(encode(), ping=SSE_PING_S,
                               headers={"Cache-Control": "no-store"})


async def requested_of(request: Request, principal: Principal, body: ChatBody) -> str | None:
    """``chatModelId`` (body), then the header/query; a seed-003 ``model`` counts only
    when it names an assistant this caller may use (``gpt-4o`` and the like are ignored)."""
    wanted = body.chatModelId or requested_assistant(request)
    if wanted or not body.model:
        return wanted
    if principal.assistant_scope not in (None, body.model) and principal.kind != "anonymous":
        return None
    found = await get_assistant(request.app.state.db, body.model)
    return found.id if found is not None else None


def chat_input(assistant_id: str, principal: Principal, body: ChatBody) -> ChatInput:
    history = tuple(Message(h.role, h.content) for h in body.history or ()  # type: ignore[arg-type]
                    if h.role in ("user", "assistant") and h.content.strip())
    meta = {"context": body.context} if body.context else {}
    return ChatInput(assistant_id, body.message.strip(), conversation_id=body.conversation_id,
                     session_id=body.sessionId,
                     owner=principal.owner(assistant_id, body.user_id),
                     system_prompt=body.system_prompt, history=history, user_meta=meta)


@router.post("/api/chat", response_model=ChatResponse, tags=["chat"],
             responses={**ERROR_RESPONSES, **SSE_RESPONSE},
             description="Send a message, get the assistant's answer (grounded in its "
             "knowledge base, with `sources`). The conversation is stored: pass "
             "`conversation_id` or `sessionId` to continue it. Only the caller's own "
             "conversation continues (its assistant's, and its user's: the OAuth user, or "
             "the `user_id` an API key names); any other id starts a new conversation, "
             "whose `conversation_id` the answer carries. Anonymous callers always start "
             "a new one (send `history` instead).\n" + SSE_EVENTS_DOC)
async def chat(
    request: Request, body: ChatBody, principal: ChatCaller,
    stream: Annotated[bool | None, Query(description="stream Server-Sent Events")] = None,
) -> Any:
    assistant_id = await caller_assistant(request, principal,
                                          await requested_of(request, principal, body))
    engine = engine_of(request)
    inp = chat_input(assistant_id, principal, body)
    if stream or body.stream:
        turn = await engine.prepare(inp)  # 4xx before the stream starts
        return sse(engine.events(turn))
    return await engine.run(inp)


async def read_upload(audio: UploadFile) -> bytes:
    data = await audio.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, "INVALID_REQUEST", f"audio larger than {MAX_UPLOAD_BYTES} bytes")
    if not data:
        raise ApiError(400, "INVALID_REQUEST", "audio is empty")
    return data


async def transcribe_upload(request: Request, audio: UploadFile, language: str | None,
                            assistant_id: str | None = None) -> tuple[str, float]:
    """Decode, resample to 16 kHz mono, transcribe. Errors are HTTP errors (4xx/502)."""
    pcm16k, seconds = await asyncio.to_thread(decode_audio, await read_upload(audio))
    try:
        text: str = await request.app.state.runtime.transcribe(pcm16k, language,
                                                               assistant_id=assistant_id)
    except ProviderError as exc:
        raise provider_failure("stt", exc) from None
    return Transcript(text.strip(), confidence_of(text)), seconds


def voice_known(request: Request, voice: str) -> bool:
    known = platform_api.tts_voice_ids(request.app.state.runtime.tts)
    # "en-us+f3" is an espeak voice plus a variant: the voice part must be known.
    return known is None or voice.lower().split("+")[0] in known


async def voice_settings(request: Request, assistant_id: str, voice: str | None,
                         language: str | None) -> tuple[str | None, str]:
    """The request's voice and language, else the assistant's, else the configured ones.
    An unknown requested voice is a 400; an assistant's that is not loaded is skipped."""
    if voice and not voice_known(request, voice):
        raise ApiError(400, "INVALID_REQUEST", "unknown voice")
    assistant = await get_assistant(request.app.state.db, assistant_id)
    if assistant is not None:
        if not voice and assistant.voice and voice_known(request, assistant.voice):
            voice = assistant.voice
        language = language or assistant.language
    return voice or None, language or request.app.state.cfg.stt.language


Text = Annotated[CleanStr | None, Form(max_length=200)]
Ident = Annotated[CleanStr | None, Form(max_length=64)]
# BCP-47-ish ("en", "pt-BR"): it reaches the STT engine.
Language = Annotated[str | None, Form(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, 413: {"model": ErrorBody, "description": "INVALID_REQUEST: too large"},
    502: SSE_RESPONSE[502]}


@uploads.post("/api/chat/voice", tags=["chat"], responses={**UPLOAD_ERRORS, **SSE_RESPONSE},
             response_class=EventSourceResponse, form_limits=UPLOAD_FORM_LIMITS,  # type: ignore[arg-type]
             description="Ask by voice: an uploaded recording in, the transcription, the "
             "answer and its speech out.\n" + VOICE_EVENTS_DOC)
async def chat_voice(
    request: Request, principal: ChatCaller,
    audio: Annotated[UploadFile, File(description="WAV, FLAC or OGG")],
    language: Language = None,
    voice: Annotated[str | None, Form(max_length=100)] = None,
    sample_rate: Annotated[int | None, Form(ge=8000, le=48000)] = None,
    sessionId: Text = None, conversation_id: Ident = None, user_id: Text = None,
    chatModelId: Ident = None,
    system_prompt: Annotated[CleanStr | None, Form(max_length=8000)] = None,
) -> EventSourceResponse:
    assistant_id = await caller_assistant(request, principal, chatModelId)
    voice, language = await voice_settings(request, assistant_id, voice, language)
    transcript, seconds = await transcribe_upload(request, audio, language, assistant_id)
    if not transcript:
        raise ApiError(400, "INVALID_REQUEST", "no speech was recognised in the audio")
    engine = engine_of(request)
    inp = ChatInput(assistant_id, transcript, conversation_id=conversation_id,
                    session_id=sessionId, owner=principal.owner(assistant_id, user_id),
                    system_prompt=system_prompt, source="voice",
                    user_meta={"audio_s": round(seconds, 2), "language": language})
    turn = await engine.prepare(inp, speech=True)
    rate = sample_rate or request.app.state.cfg.audio.output_sample_rate
    reply = VoiceReply(engine, turn, VoiceOptions(voice, rate, language))
    return sse(reply.events(transcript))


class Transcription(BaseModel):
    text: str
    detected_language: str | None
    confidence: float | None = Field(description="null: the STT engine reports none")
    duration_s: float
    provider: str


@uploads.post("/api/transcribe", response_model=Transcription, tags=["platform"],
             responses=UPLOAD_ERRORS, form_limits=UPLOAD_FORM_LIMITS,  # type: ignore[arg-type]
             description="Speech to text. `audio`: WAV, FLAC or OGG (any rate and channel "
             "count, at most 20 MiB and 120 s). `provider` names an STT provider of "
             "GET /api/speech/providers; another name is answered by the loaded one.")
async def transcribe(
    request: Request, principal: VoiceCaller,
    audio: Annotated[UploadFile, File(description="WAV, FLAC or OGG")],
    provider: Annotated[str | None, Form(max_length=50)] = None,
    language_code: Language = None,
) -> dict[str, Any]:
    st = request.app.state
    # A key or token bound to an assistant transcribes with that assistant's STT.
    assistant_id = principal.assistant_scope
    stt = (await st.runtime.chain("stt", assistant_id)).primary
    # English-only models transcribe English whatever is asked.
    multilingual = bool(getattr(stt, "multilingual", False))
    language = (language_code or st.cfg.stt.language) if multilingual else st.cfg.stt.language
    text, seconds = await transcribe_upload(request, audio, language, assistant_id)
    return {"text": text, "detected_language": language, "confidence": confidence_of(text),
            "duration_s": round(seconds, 3), "provider": stt.name}


router.include_router(uploads)
router.include_router(platform_api.router)
router.include_router(conversations.router)
