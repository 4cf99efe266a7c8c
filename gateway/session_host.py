"""One session host for every voice transport (v1 WebSocket, Twilio, Realtime, WebRTC).

What a voice session needs besides its wire is the same everywhere and lives here, once:
admission (the process's session capacity, the caller's ``voice`` rate limit), the
assistant (its language, voice, prompt, turn taking; providers and tools are read per
turn by the runtime through ``assistant_id``), the conversation (a new one, or one the
caller may resume, with its recent history), the turn writer (every finished turn is
stored with its transport), the registry (so shutdown drains it) and the close within a
deadline. A transport only translates between its wire and the pipeline's events.

Authentication stays with each transport (each reads its credentials its own way) and
hands the host the resulting ``SessionGrant``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.access.auth import SessionGrant
from gateway.api.ratelimit import RateLimited, Verdict
from gateway.audio.pcm import AudioFormat
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import Outbox
from gateway.pipeline.prompt import assistant_source
from gateway.pipeline.session import Session
from gateway.pipeline.session_items import SessionSettings
from gateway.providers.base import Message
from gateway.store.assistants import get_assistant, own_turn_taking
from gateway.store.conversations import Owner
from gateway.store.models import Assistant

log = structlog.get_logger("gateway.session_host")

HISTORY_TIMEOUT_S = 2.0
# What each transport's conversations are stored as (``source``: the kind of conversation).
SOURCES = {"ws": "voice", "twilio": "telephony", "realtime": "voice", "webrtc": "voice"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a session was not admitted: ``busy`` (capacity), ``draining`` (shutdown) or
    ``rate_limited`` (the caller's ``voice`` limit; ``retry_after`` seconds)."""

    reason: str
    message: str
    retry_after: int = 0
    code: str = "RATE_LIMITED"


class SessionHost:
    """Hosts one voice session from admission to close. Registered in the app's session
    registry (``gateway.cluster.sessions``: drain, ending a session from outside), which
    reaches the wire through ``close_with`` → the transport's ``close_wire``. ``close``
    is owed from the first ``reserve`` or ``admit`` on, whatever happens."""

    def __init__(self, state: Any, transport: str) -> None:
        self.state = state
        self.cfg = state.cfg
        self.transport = transport
        self.outbox = Outbox(self.cfg.queues.outbox)
        self.log = log.bind(transport=transport)
        self.grant: SessionGrant  # set by admit()
        self.assistant: Assistant | None = None
        self.session: Session | None = None
        self.verdict: Verdict | None = None  # the rate limiter's, for wires that show it
        self.close_wire: Callable[[int, str], Awaitable[None]] | None = None
        self.wire: Any = None  # the transport's connection object (logs, tests)
        self._reserved = False
        self._closed = False

    # --- admission ------------------------------------------------------------------

    def reserve(self) -> Refusal | None:
        """A place within the process's session capacity (None: reserved; ``close`` gives
        it back). ``admit`` reserves one too; a transport calls this first when a refusal
        must not cost the caller its credentials (a single-use token)."""
        if self._reserved:
            return None
        registry = self.state.sessions
        if not registry.admit():
            return Refusal("draining" if registry.draining else "busy", registry.refusal(), 5)
        self._reserved = True
        return None

    async def admit(self, grant: SessionGrant) -> Refusal | None:
        """The authenticated caller's session: its ``voice`` rate limit, then a place.
        None: admitted."""
        self.grant = grant
        self.log = log.bind(session_id=grant.session_id, transport=self.transport)
        limiter = getattr(self.state, "limiter", None)
        if limiter is not None:
            p = grant.principal
            self.verdict = await limiter.evaluate(p.subject, "voice", p.tier)
            if self.verdict is not None and not self.verdict.allowed:
                refused = RateLimited(self.verdict)
                return Refusal("rate_limited", refused.message(), self.verdict.retry_after(),
                               self.verdict.code)
        return self.reserve()

    # --- the assistant and the conversation --------------------------------------------

    async def resolve(self) -> None:
        """Read the session's assistant once (the config's defaults if it cannot be)."""
        try:
            self.assistant = await get_assistant(self.state.db, self.grant.assistant_id)
        except Exception as exc:  # the database is away: a session still starts
            self.log.warning("assistant_not_loaded", error=type(exc).__name__)

    def settings(self, input: AudioFormat, output: AudioFormat, *, language: str | None = None,
                 voice: str | None = None, system_prompt: str | None = None,
                 **rest: Any) -> SessionSettings:
        """The session's settings: the client's choices over the token's claims over the
        assistant's own (its prompt or template: ``SessionSettings.prompt``) over the
        config's."""
        a, claims = self.assistant, self.grant.claims
        return SessionSettings(
            input=input, output=output,
            language=language or (a.language if a else None) or self.cfg.stt.language,
            voice=voice or claims.get("voiceId") or (a.voice if a else None),
            system_prompt=system_prompt or claims.get("systemPrompt"),
            prompt=assistant_source(a),
            assistant_id=self.grant.assistant_id,
            **{**own_turn_taking(a, self.cfg, self.log), **rest},
        )

    @property
    def owner(self) -> Owner:
        return self.grant.principal.owner(self.grant.assistant_id)

    @property
    def fresh_conversation(self) -> str:
        return "conv_" + self.grant.session_id[5:]

    async def conversation(self, requested: str | None) -> tuple[str, list[Message]]:
        """The conversation the session continues: ``requested`` with its recent history
        if this caller may resume it (``Principal.owner``), else a new one (another
        assistant's or user's, an unknown id, or one that cannot be checked now alike)."""
        if not requested:
            return self.fresh_conversation, []
        history = None
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_S):
                history = await self.state.voice_log.history(
                    self.owner, requested, 2 * self.cfg.llm.history_turns)
        except Exception as exc:  # a new conversation then; never a failed session
            self.log.warning("history_not_loaded", error=type(exc).__name__)
        if history is None:
            self.log.info("conversation_not_resumed")
            return self.fresh_conversation, []
        return requested, history

    # --- life ---------------------------------------------------------------------------

    def open(self, settings: SessionSettings, conversation_id: str | None = None,
             history: list[Message] | None = None) -> Session:
        """Make the session, store its turns, register it. ``start`` runs its stages."""
        session = Session(self.state.runtime, settings, self.outbox,
                          session_id=self.grant.session_id,
                          conversation_id=conversation_id or self.fresh_conversation,
                          history=history)
        self.session = session
        session.on_turn_end = self.state.voice_log.recorder(
            conversation_id=session.conversation_id, assistant_id=self.grant.assistant_id,
            session_id=session.session_id, user_id=self.owner.user_id,
            source=SOURCES[self.transport], transport=self.transport,
            on_failure=lambda turn_id: session.emit(ev.TurnNotStored(turn_id)))
        self.state.sessions.add(session.session_id, self, transport=self.transport,
                                assistant_id=self.grant.assistant_id,
                                subject=self.grant.principal.subject, key_id=self.grant.key_id)
        return session

    def start(self) -> None:
        assert self.session is not None
        self.session.start()
        self.log.info("session_started", key_id=self.grant.key_id,
                      assistant_id=self.grant.assistant_id)

    async def close_with(self, code: int, reason: str) -> None:
        """The registry ends the session (drain, a revoked key, an admin): the reply is cut
        and the client told already; the transport closes its wire with ``code``."""
        if self.close_wire is not None:
            await self.close_wire(code, reason)

    async def close(self) -> None:
        """End the session (its stages stop within the configured deadline) and give
        back its place. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.outbox.close()
        session = self.session
        if session is not None:
            self.state.sessions.remove(session.session_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.server.session_close_timeout_s + 1.0):
                    await session.close()
            self.log.info("session_closed", turns=session.turns_completed)
        if self._reserved:
            self._reserved = False
            self.state.sessions.release()
