"""This process's live sessions: admission, readiness, ending one, and drain.

Every transport admits a session here (``admit``/``release``), registers it once it runs
(``add``/``remove``) and leaves the rest to this module: the node limit, the readiness a
load balancer reads, ending sessions that an event names, and shutdown. A connection
only has to expose its ``session``, its ``outbox`` and ``close_with(code, reason)``.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.pipeline import events as ev
from gateway.pipeline.drain import finish_reply
from gateway.pipeline.outbox import Outbox
from gateway.pipeline.session import Session

from .events import Event, SessionInfo, key_of

log = structlog.get_logger("gateway.sessions")

CLOSE_RESTART = 1012  # RFC 6455 "service restart": the client may reconnect at once
FLUSH_S = 1.0  # at most this long for a closing session's last events to be written
POLL_S = 0.05


class Connection(Protocol):
    """What a transport's connection offers the registry."""

    session: Session | None
    outbox: Outbox

    async def close_with(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class Live:
    conn: Connection
    info: SessionInfo


class SessionRegistry:
    """Counts live sessions so the process refuses, rather than drowns in, overload."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0  # admitted (set up or running)
        self.total = 0
        self.refused = 0
        self.live: dict[str, Live] = {}
        self.draining = False
        self.on_change: Callable[[], None] | None = None  # the cluster directory's hook
        self._now = asyncio.Event()
        self.cut = 0  # sessions closed by the drain's deadline

    # --- admission -----------------------------------------------------------------------

    def admit(self) -> bool:
        if self.draining or self.active >= self.limit:
            self.refused += 1
            return False
        self.active += 1
        self.total += 1
        return True

    def release(self) -> None:
        self.active -= 1
        if self.active == 0:
            _trim_heap()

    def refusal(self) -> str:
        return "server shutting down" if self.draining else "server at session capacity"

    @property
    def ready(self) -> bool:
        """Whether a load balancer should send this node new sessions."""
        return not self.draining and self.active < self.limit

    # --- registration ----------------------------------------------------------------------

    def add(self, session_id: str, conn: Connection, *, transport: str, assistant_id: str,
            subject: str = "", key_id: str | None = None) -> None:
        info = SessionInfo(session_id, transport, assistant_id, key_of(subject, key_id),
                           time.time())
        self.live[session_id] = Live(conn, info)
        self._changed()

    def remove(self, session_id: str) -> None:
        if self.live.pop(session_id, None) is not None:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def infos(self) -> list[SessionInfo]:
        return [e.info for e in self.live.values()]

    def by_transport(self) -> Counter[str]:
        return Counter(e.info.transport for e in self.live.values())

    def history_of(self, session_id: str) -> list[Any]:
        return list(self.live[session_id].conn.session.history)  # type: ignore[union-attr]

    # --- ending sessions -------------------------------------------------------------------

    async def apply(self, event: Event) -> int:
        """Close every session the event names, each with its documented error. How many."""
        hit = [e for e in self.live.values() if event.matches(e.info)]
        if not hit:
            return 0
        code, reason = event.ending()
        log.info("sessions_ended_by_event", kind=event.kind, count=len(hit))
        await asyncio.gather(*(end(e.conn, code, reason) for e in hit), return_exceptions=True)
        return len(hit)

    async def drain(self, timeout: float) -> None:
        """Shutdown: no new sessions; live ones go on (replies finish, callers hang up)
        until ``timeout`` or ``stop_now``; the rest are then closed with 1012 and a
        retryable error. Sessions still being set up when it began are waited for too."""
        self.draining = True
        self._changed()
        if not self.active:
            return
        log.info("draining_sessions", count=len(self.live), timeout_s=timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.active and loop.time() < deadline and not self._now.is_set():
            await asyncio.sleep(POLL_S)  # (a shutdown's poll: no per-session waiters)
        rest = list(self.live.values())
        self.cut += len(rest)
        await asyncio.gather(*(end(e.conn, CLOSE_RESTART, ev.RESTARTING) for e in rest),
                             return_exceptions=True)

    def stop_now(self) -> None:
        """A second SIGTERM: the drain's deadline is now."""
        self._now.set()


async def end(conn: Connection, code: int, reason: str) -> None:
    """Cut the reply in flight like a barge-in (stored as heard), tell the client why
    (``events.SessionEnded``: each wire's documented error), let the writer take it,
    close."""
    session = conn.session
    loop = asyncio.get_running_loop()
    await finish_reply(session, conn.outbox, loop.time())
    if session is not None and not conn.outbox.closed:
        session.emit(ev.SessionEnded(reason))
        flushed = loop.time() + FLUSH_S
        while len(conn.outbox) and not conn.outbox.closed and loop.time() < flushed:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)  # the writer's send of the last batch
    await conn.close_with(code, reason.replace("_", " "))


def _trim_heap() -> None:
    """Give freed memory back to the OS when the last session ends (glibc keeps it
    otherwise, and RSS would not return to the idle baseline)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class DrainGate:
    """ASGI middleware: while draining, a WebSocket upgrade is answered HTTP 503 with
    ``Retry-After`` before it is accepted (on every WebSocket route), a status a load
    balancer retries on another node; HTTP requests pass (readiness says 503 itself)."""

    BODY = (b'{"error":{"code":"UNAVAILABLE","message":"server shutting down",'
            b'"retryable":true}}')

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            app = scope.get("app")
            sessions = getattr(getattr(app, "state", None), "sessions", None)
            if sessions is not None and sessions.draining:
                sessions.refused += 1
                await self._refuse(scope, send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Any, send: Any) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 503,
                        "headers": [(b"retry-after", b"1"),
                                    (b"content-type", b"application/json")]})
            await send({"type": "websocket.http.response.body", "body": self.BODY})
        else:  # the server cannot send a response: a close before accept (HTTP 403)
            await send({"type": "websocket.close", "code": 1013})
