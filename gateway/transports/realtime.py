"""OpenAI-Realtime-compatible endpoint (``/v1/realtime``): an OpenAI Realtime client uses
the gateway's pipeline by changing only its base URL.

Authentication, as OpenAI's: ``Authorization: Bearer <API key | ek_ client secret>``, or
for browsers the ``openai-insecure-api-key.<key>`` WebSocket subprotocol (beside
``realtime``); anonymous where the gateway allows it. ``?model=`` is echoed in the
session, and selects the assistant when it names one. A refusal is an ``error`` event,
then close 4401.

Client audio (``audio/pcm`` 24 kHz, ``audio/pcmu``, ``audio/pcma``) is resampled to the
pipeline's 16 kHz. With ``server_vad`` it feeds the session's VAD (its parameters become
per-session endpointing overrides); with ``turn_detection: null`` it is buffered here and
``input_audio_buffer.commit`` transcribes it as one user turn. ``response.create`` turns
the user messages not yet answered into the session's next typed turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.access.auth import AuthError, SessionGrant
from gateway.audio import pcm
from gateway.audio.pcm import AudioFormat
from gateway.config import Config
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import OutboxClosed
from gateway.pipeline.prompt import assistant_source, system_prompt
from gateway.pipeline.session import Session
from gateway.pipeline.session_items import SessionSettings, VadOverrides
from gateway.pipeline.vad_input import PIPELINE_RATE
from gateway.protocol import errors
from gateway.protocol import realtime as rt
from gateway.protocol.realtime_events import ResponseInfo, ServerEvents, VadDefaults
from gateway.providers.base import Message, ProviderError
from gateway.session_host import SessionHost
from gateway.store.models import Assistant
from gateway.transports.websocket import FRAME_WRITER, TEXT_SINK

from .realtime_history import History
from .realtime_tools import NO_TOOL_CALLS, awaits_results, client_tools, history_message

log = structlog.get_logger("gateway.realtime")

CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMITED = 4429
CLOSE_IDLE = 4408
CLOSE_SLOW_CONSUMER = 4413
KEY_PROTOCOL = "openai-insecure-api-key."
MIN_COMMIT_MS = 100  # as OpenAI: a shorter buffer cannot be committed
REQUEST_WAIT_S = 5.0  # a response.create's turn reaches stream_start well within this


class Credentials:
    """What the WebSocket handshake carried: a secret, the dialect, the subprotocol."""

    def __init__(self, websocket: WebSocket) -> None:
        offered = [str(p) for p in websocket.scope.get("subprotocols") or []]
        self.subprotocol = "realtime" if "realtime" in offered else None
        beta_header = websocket.headers.get("openai-beta", "")
        self.beta = "realtime=v1" in beta_header or "openai-beta.realtime-v1" in offered
        secret = None
        auth = websocket.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            secret = auth[7:].strip() or None
        secret = secret or websocket.headers.get("x-api-key") or next(
            (p[len(KEY_PROTOCOL):] for p in offered if p.startswith(KEY_PROTOCOL)), None)
        self.token = secret[3:] if secret and secret.startswith("ek_") else None
        self.headers: dict[str, str] = {}
        if secret and self.token is None:
            self.headers["authorization"] = f"Bearer {secret}"


async def realtime_ws(websocket: WebSocket) -> None:
    creds = Credentials(websocket)
    grant = await _authenticate(websocket, creds)
    if grant is None:
        return
    host = SessionHost(websocket.app.state, "realtime")
    try:
        refusal = await host.admit(grant)
        if refusal is not None:
            if refusal.reason == "rate_limited":
                await _refuse(websocket, creds, CLOSE_RATE_LIMITED, "rate_limit_error",
                              "rate_limit_exceeded",
                              f"rate limit exceeded; retry in {refusal.retry_after} s")
            else:
                await _refuse(websocket, creds, 1013, "server_error", "server_busy",
                              refusal.message)
            return
        await host.resolve()
        await websocket.accept(subprotocol=creds.subprotocol)
        await RealtimeConnection(websocket, host, creds.beta).run()
    finally:
        await host.close()


async def _refuse(websocket: WebSocket, creds: Credentials, close: int, kind: str, code: str,
                  message: str) -> None:
    """Accept, say why in an ``error`` event (what OpenAI clients read), close."""
    events = ServerEvents(beta=creds.beta, vad=VadDefaults())
    with contextlib.suppress(Exception):
        await websocket.accept(subprotocol=creds.subprotocol)
        await websocket.send_text(json.dumps(events.error(message, code, kind=kind)))
        await websocket.close(close, message[:120])
    log.info("realtime_refused", code=code, reason=message)


async def _authenticate(websocket: WebSocket, creds: Credentials) -> SessionGrant | None:
    auth = websocket.app.state.auth
    requested = (websocket.query_params.get("assistant_id")
                 or websocket.headers.get("x-chat-model-id"))
    model = websocket.query_params.get("model")
    if not requested and model and not creds.token:
        with contextlib.suppress(AuthError):  # a model that names an assistant picks it
            await auth.check_assistant(model)
            requested = model
    client = websocket.client.host if websocket.client else "unknown"
    try:
        grant: SessionGrant = await auth.websocket_grant(creds.token, creds.headers, client,
                                                         requested)
        return grant
    except AuthError as exc:
        code = "invalid_api_key" if creds.headers or creds.token else "missing_api_key"
        await _refuse(websocket, creds, CLOSE_UNAUTHORIZED, "invalid_request_error", code,
                      str(exc))
        return None


def initial_config(cfg: Config, claims: dict[str, Any], model: str | None,
                   assistant: Assistant | None = None) -> rt.RealtimeConfig:
    """A new session's configuration: the token's or the assistant's prompt and voice (else
    the gateway's), the client's model."""
    prompt = system_prompt(cfg.llm.system_prompt, cfg.llm.assistant_name,
                           assistant=assistant_source(assistant))
    return rt.RealtimeConfig(model=model or "gpt-realtime",
                             instructions=claims.get("systemPrompt") or prompt,
                             voice=claims.get("voiceId") or (assistant.voice if assistant else None)
                             or cfg.tts.voice)


def vad_defaults(cfg: Config) -> VadDefaults:
    return VadDefaults(0.5, cfg.vad.preroll_ms, cfg.vad.stop_ms)


class RealtimeConnection(History):
    def __init__(self, websocket: WebSocket, host: SessionHost, beta: bool) -> None:
        self.ws = websocket
        self.host = host
        self.grant = host.grant
        self.cfg = host.cfg
        self.runtime = host.state.runtime
        self.events = ServerEvents(beta=beta, vad=vad_defaults(self.cfg))
        self.parser = rt.RealtimeParser(self._initial_config())
        self.outbox = host.outbox
        self.session: Session | None = None
        self.conversation_id = host.fresh_conversation
        verdict = host.verdict
        self.rate_limits = [] if verdict is None else [{
            "name": "requests", "limit": verdict.limit, "remaining": verdict.remaining,
            "reset_seconds": round(max(0.0, verdict.reset - time.time()), 3)}]
        self.input_ms = 0.0
        self.vad_start_ms = self.cfg.vad.start_ms
        self.pipelines = OrderedDict()
        self.manual = bytearray()  # turn_detection null: the uncommitted audio at 16 kHz
        self.requested_at = 0.0
        self._resampler: pcm.Resampler | None = None
        self._last_append = 0.0  # loop time of the last append taken by the sink
        self._stt_chain: asyncio.Task[None] | None = None
        self._creating: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._told_no_tools = False
        self.log = host.log
        self._init_conversation()

    def _initial_config(self) -> rt.RealtimeConfig:
        config = initial_config(self.cfg, self.grant.claims, self.ws.query_params.get("model"),
                                self.host.assistant)
        secret_session = self.grant.claims.get("realtime")  # from the client secret
        if isinstance(secret_session, dict):
            with contextlib.suppress(rt.Invalid):
                config = rt.apply_session(config, secret_session)
        return config

    def _settings(self) -> SessionSettings:
        c = self.parser.config
        td = c.turn_detection
        vad = None
        if td is not None:
            vad = VadOverrides(td.silence_duration_ms, td.prefix_padding_ms, td.threshold)
        modalities = self.override_modalities or c.output_modalities
        tools, choice = client_tools(*(self.override_tools if self.override_tools is not None
                                       else (c.tools, c.tool_choice)))
        voices = getattr(self.runtime.tts, "voices", ())
        return self.host.settings(
            AudioFormat("pcm_s16le", PIPELINE_RATE),
            AudioFormat("pcm_s16le", c.codec("output")[1]),
            voice=c.voice if c.voice in voices else None,  # OpenAI's names: the assistant's
            system_prompt=self.override_instructions or c.instructions or None,
            vad=vad, auto_respond=td.create_response if td else False,
            barge_in=td.interrupt_response if td else True,
            speak="audio" in modalities, client_tools=tools, tool_choice=choice,
        )

    def after_response(self) -> None:
        if self.session is not None:
            self.session.reconfigure(self._settings())

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        host = self.host
        self.session = host.open(self._settings(), self.conversation_id)
        host.close_wire, host.wire = self._close, self
        self._post("session.created", session=self._session_json())
        if self.events.beta:
            self._post("conversation.created", conversation={
                "id": self.conversation_id, "object": "realtime.conversation"})
        host.start()
        self.log.info("realtime_started", beta=self.events.beta, model=self.parser.config.model)
        writer = asyncio.create_task(self._writer())
        set_sink = self.ws.scope.get("extensions", {}).get(TEXT_SINK)
        if set_sink is not None:  # appends straight from the socket: no wake-up per frame
            set_sink(self._append_sink)
        try:
            await self._reader()
        finally:
            if set_sink is not None:
                set_sink(None)
            for task in self._tasks:
                task.cancel()
            await host.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    def _session_json(self) -> dict[str, Any]:
        return self.events.session_json(self.parser.config, self.grant.session_id, None)

    def _post(self, kind: str, **fields: Any) -> None:
        """Reader side: an event queued behind what the pipeline has already queued."""
        event = self.events.event(kind, **fields)
        if event is not None:
            self.outbox.put(ev.Passthrough(event))

    def _reject(self, message: str, code: str, event_id: str | None = None,
                param: str | None = None) -> None:
        """A client event that cannot be honoured: an ``error`` event; the session goes on."""
        self.outbox.put(ev.Passthrough(self.events.error(
            message, code, param=param, event_id=event_id)))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _reader(self) -> None:
        idle = self.cfg.server.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await self.ws.receive()
            except TimeoutError:
                if asyncio.get_running_loop().time() - self._last_append < idle:
                    continue  # audio kept coming through the sink
                await self._close(CLOSE_IDLE, f"idle for {idle:.0f} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._reject("binary messages are not supported; send JSON events",
                            "invalid_event")
            else:
                self._dispatch(self.parser.receive(text))
            if self.outbox.overflowed:
                await self._close(CLOSE_SLOW_CONSUMER, "client is not reading")
                return
            if self.outbox.closed:
                await self._close(1011, "internal error")
                return

    async def _writer(self) -> None:
        ready, write = self.ws.scope.get("extensions", {}).get(FRAME_WRITER, (None, None))
        try:
            while True:
                item = await self.outbox.get()
                if ready is not None and ready():  # all that is queued now, one write
                    write([_text(e) for it in (item, *self.outbox.take_all())
                           for e in self.render(it)])
                    continue
                for event in self.render(item):
                    await self.ws.send_text(_text(event))
        except (OutboxClosed, WebSocketDisconnect, RuntimeError):
            return

    async def _close(self, code: int, reason: str) -> None:
        self.log.info("realtime_closing", code=code, reason=reason)
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    # --- client events -----------------------------------------------------------------

    def _dispatch(self, event: rt.ClientEvent) -> None:
        match event:
            case rt.AudioAppend():
                self._append(event)
            case rt.SessionUpdate():
                self._session_update(event)
            case rt.AudioCommit():
                self._commit(event)
            case rt.AudioClear():
                self.manual.clear()
                self._post("input_audio_buffer.cleared")
            case rt.ItemCreate():
                self._item_create(event)
            case rt.ItemTruncate():
                self._truncate(event)
            case rt.ItemDelete():
                self._delete(event)
            case rt.ItemRetrieve():
                self._retrieve(event)
            case rt.ResponseCreate():
                self._response_create(event)
            case rt.ResponseCancel() | rt.OutputAudioClear():
                self._cancel(event)
            case rt.ClientError():
                self.outbox.put(ev.Passthrough(self.events.error(
                    event.message, event.code, param=event.param, event_id=event.event_id,
                    kind=event.type)))

    def _session_update(self, event: rt.SessionUpdate) -> None:
        assert self.session is not None
        was_vad = self.session.settings.auto_respond or self.session.settings.vad is not None
        self.session.reconfigure(self._settings())
        if event.config.turn_detection is None and was_vad:
            self.session.end_of_speech()  # an utterance in progress ends here
        elif event.config.turn_detection is not None:
            self.manual.clear()  # from now on the VAD takes the audio
        self._post("session.updated", session=self._session_json())
        if event.config.tools and not self._told_no_tools:
            self._told_no_tools = True
            self._spawn(self._tell_no_tools(event.event_id))

    async def _tell_no_tools(self, event_id: str | None) -> None:
        """Once per session: tools were declared, and this LLM never calls them."""
        if not await self.runtime.calls_tools(self.grant.assistant_id):
            self._reject(NO_TOOL_CALLS, "tools_not_supported", event_id, "session.tools")

    def _append_sink(self, frame: bytes) -> bool:
        # Once the session is over, messages go to the reader, which closes.
        event = None if self.outbox.closed else self.parser.append_fast(frame)
        if event is None:
            return False
        self._last_append = asyncio.get_running_loop().time()
        self._append(event)
        return True

    def _append(self, event: rt.AudioAppend) -> None:
        assert self.session is not None
        if self._resampler is None or self._resampler.src_rate != event.sample_rate:
            self._resampler = pcm.Resampler(event.sample_rate, PIPELINE_RATE,
                                            pcm.CLIENT_AUDIO)
        pcm16 = self._resampler.process(event.pcm)
        self.input_ms += pcm.duration_ms(len(event.pcm), event.sample_rate)
        if self.parser.config.turn_detection is not None:
            self.session.feed_audio(pcm16)
            return
        self.manual += pcm16
        limit = int(self.cfg.stt.max_utterance_s * PIPELINE_RATE) * 2
        if len(self.manual) > limit:  # keep the newest audio; tell the client once
            if len(self.manual) - len(pcm16) <= limit:
                self._reject(f"input audio buffer over {self.cfg.stt.max_utterance_s:g} s; "
                            "the oldest audio was dropped", "input_audio_buffer_full",
                            event.event_id)
            del self.manual[: len(self.manual) - limit]

    def _commit(self, event: rt.AudioCommit) -> None:
        assert self.session is not None
        if self.parser.config.turn_detection is not None:
            self.session.end_of_speech()  # the VAD's open utterance ends now
            return
        ms = pcm.duration_ms(len(self.manual), PIPELINE_RATE)
        if ms < MIN_COMMIT_MS:
            self._reject(f"buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, but "
                        f"buffer only has {ms:.2f}ms of audio.",
                        "input_audio_buffer_commit_empty", event.event_id)
            return
        item = rt.Item(rt.new_id("item"), "message", "user", audio=True)
        previous = self.add_item(item)
        self._post("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        self._post("conversation.item.added", previous_item_id=previous,
                   item=self.events.item_json(item))
        audio, self.manual = bytes(self.manual), bytearray()
        self.audio_ms[item.id] = ms
        self._transcribe(item, audio)

    def _transcribe(self, item: rt.Item, pcm16k: bytes) -> None:
        """Transcribe a user audio item; its message joins the history in commit order."""
        previous = self._stt_chain

        async def job() -> None:
            try:
                language = self.session.settings.language if self.session else None
                text = await self.runtime.transcribe(pcm16k, language,
                                                     assistant_id=self.grant.assistant_id)
            except ProviderError as exc:
                text = ""
                self.log.warning("provider_error", stage="stt", error=str(exc))
                self._post("conversation.item.input_audio_transcription.failed",
                           item_id=item.id, content_index=0, error={
                               "type": "transcription_error", "code": "provider_error",
                               "message": errors.provider_message("stt")})
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            self.transcribed(item, text, self._post)
            if text and self.session is not None:
                msg = Message("user", text)
                self.session.history.append(msg)
                self.links[item.id] = msg

        self._stt_chain = self._spawn(job())

    def _item_create(self, event: rt.ItemCreate) -> None:
        assert self.session is not None
        item = event.item
        if item.id in self.items:
            self._reject(f"an item with id {item.id!r} already exists", "duplicate_item_id",
                        event.event_id, "item.id")
            return
        prev = event.previous_item_id
        if prev not in (None, "root") and prev not in self.items:
            self._reject(f"previous_item_id {prev!r} does not exist", "invalid_value",
                        event.event_id, "previous_item_id")
            return
        previous = self.add_item(item)
        self._post("conversation.item.added", previous_item_id=previous,
                   item=self.events.item_json(item))
        if item.pcm is not None:
            audio = pcm.resample(item.pcm, item.rate, PIPELINE_RATE)
            self.audio_ms[item.id] = pcm.duration_ms(len(audio), PIPELINE_RATE)
            item.pcm = None
            self._transcribe(item, audio)
            return
        msg = history_message(item, self.items.values())
        if item.type == "message" and item.text:
            msg = Message(item.role, item.text)  # type: ignore[arg-type]
        if msg is not None:
            self.session.history.append(msg)
            self.links[item.id] = msg
        self._post("conversation.item.done", item=self.events.item_json(item))

    def _truncate(self, event: rt.ItemTruncate) -> None:
        assert self.session is not None
        item = self.items.get(event.item_id)
        if item is None or item.role != "assistant" or not item.audio:
            self._reject(f"no assistant audio item {event.item_id!r} to truncate",
                        "invalid_value", event.event_id, "item_id")
            return
        if event.content_index != 0:
            self._reject("content_index must be 0", "invalid_value", event.event_id,
                        "content_index")
            return
        live = self.session.response
        reply = next((r for r in self.replies.values() if r.item is item), None)
        if live is not None and reply is not None and live.response_id == reply.info.id:
            # The client cut the audio while it still plays: stop sending it.
            self.cancel_reasons[live.response_id] = "client_cancelled"
            self.session.interrupt()
        index = self.message_index(item)
        heard = self.heard(item, event.audio_end_ms) or ""
        if index is not None:
            kept = self.session.history.truncate(index, heard)
            if kept is not None:
                self.links[item.id] = kept
            else:
                self.links.pop(item.id, None)
        item.text = heard
        self.log.info("truncated", item_id=item.id, audio_end_ms=event.audio_end_ms,
                      heard_chars=len(heard))
        self._post("conversation.item.truncated", item_id=item.id,
                   content_index=event.content_index, audio_end_ms=event.audio_end_ms)

    def _delete(self, event: rt.ItemDelete) -> None:
        assert self.session is not None
        item = self.items.get(event.item_id)
        if item is None:
            self._reject(f"no item {event.item_id!r}", "invalid_value", event.event_id,
                        "item_id")
            return
        index = self.message_index(item) if item.type == "message" else None
        if index is not None:
            self.session.history.delete(index)
        del self.items[item.id]
        self.links.pop(item.id, None)
        self._post("conversation.item.deleted", item_id=item.id)

    def _retrieve(self, event: rt.ItemRetrieve) -> None:
        item = self.items.get(event.item_id)
        if item is None:
            self._reject(f"no item {event.item_id!r}", "invalid_value", event.event_id,
                        "item_id")
            return
        self._post("conversation.item.retrieved", item=self.events.item_json(item))

    # --- responses ---------------------------------------------------------------------

    def _response_active(self) -> bool:
        assert self.session is not None
        creating = self._creating is not None and not self._creating.done()
        # A requested turn that a newer spoken turn superseded never starts: do not wait
        # for it forever.
        requested = self.requested and time.monotonic() - self.requested_at < REQUEST_WAIT_S
        return creating or requested or self.session.replying

    def _response_create(self, event: rt.ResponseCreate) -> None:
        if self._response_active():
            rid = self.session.response.response_id if self.session and self.session.response \
                else "pending"
            self._reject(f"Conversation already has an active response in progress: {rid}. "
                        "Wait until the response is finished before creating a new one.",
                        "conversation_already_has_active_response", event.event_id)
            return
        self._creating = self._spawn(self._create(event))

    async def _create(self, event: rt.ResponseCreate) -> None:
        assert self.session is not None
        if self._stt_chain is not None:
            with contextlib.suppress(Exception):
                await self._stt_chain  # the committed audio's words first
        text = self._unanswered()
        self.override_modalities = event.output_modalities
        self.override_tools = event.tools
        self.override_instructions = event.instructions if text else None
        # After the client's function results the reply continues from them.
        follows = not text and awaits_results(self.session.history)
        text = text or ("" if follows else event.instructions or "")
        if not text and not follows:
            self._empty_response(event)
            return
        self.metadata = event.metadata
        self.session.reconfigure(self._settings())
        self.requested, self.requested_at = True, time.monotonic()
        self.session.user_text(text)

    def _unanswered(self) -> str:
        """The user messages after the last reply, taken out: they become the next turn."""
        assert self.session is not None
        return "\n".join(m.content for m in self.session.history.take_unanswered())

    def _empty_response(self, event: rt.ResponseCreate) -> None:
        """Nothing to answer: a response with no output, completed at once."""
        self.override_modalities = None
        modalities = event.output_modalities or self.parser.config.output_modalities
        info = ResponseInfo(rt.new_id("resp"), self.conversation_id, modalities,
                            metadata=event.metadata)
        config = self.parser.config
        self._post("response.created", response=self.events.response_json(info, config))
        info.status = "completed"
        self._post("response.done", response=self.events.response_json(info, config))

    def _cancel(self, event: rt.ResponseCancel | rt.OutputAudioClear) -> None:
        assert self.session is not None
        live = self.session.response
        wanted = event.response_id if isinstance(event, rt.ResponseCancel) else None
        if live is None or (wanted is not None and wanted != live.response_id):
            if isinstance(event, rt.ResponseCancel):
                self._reject("Cancellation failed: no active response found",
                            "response_cancel_not_active", event.event_id)
            else:
                self._reject("no response audio is playing", "output_audio_buffer_not_active",
                            event.event_id)
            return
        self.cancel_reasons[live.response_id] = "client_cancelled"
        self.session.interrupt()
        if isinstance(event, rt.OutputAudioClear):
            self._post("output_audio_buffer.cleared", response_id=live.response_id)


def _text(event: dict[str, Any] | str) -> str:
    return event if isinstance(event, str) else json.dumps(event)
