"""The node: this process's sessions, and — in cluster mode — its peers through Redis."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.errors import ConfigError

from .bus import OP_TIMEOUT_S, RedisBus
from .directory import Directory
from .events import Event, SessionInfo
from .sessions import SessionRegistry

log = structlog.get_logger("gateway.cluster")

SUBSCRIBE_WAIT_S = 2.0


class Cluster:
    """``app.state.cluster``. Single node: events end this process's sessions and the
    listing is this process's. Cluster mode: the same, plus Redis pub/sub to and from the
    other nodes and the shared directory of live sessions."""

    def __init__(self, cfg: Config, sessions: SessionRegistry) -> None:
        c = cfg.cluster
        self.cfg = c
        self.enabled = c.enabled
        self.node_id = c.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.sessions = sessions
        self.redis: Redis | None = None
        self.bus: RedisBus | None = None
        self.directory: Directory | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if not self.enabled:
            return
        c = self.cfg
        self.redis = Redis.from_url(c.redis_url, socket_connect_timeout=OP_TIMEOUT_S,
                                    socket_timeout=OP_TIMEOUT_S + 1.0,
                                    health_check_interval=30)
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await self.redis.aclose()
            # A node that cannot hear revocations must not serve: refuse to start.
            raise ConfigError(f"cluster: Redis unreachable ({type(exc).__name__})") from None
        self.bus = RedisBus(self.redis, f"{c.prefix}:events", self.node_id, self._handle)
        self.bus.start()
        try:
            async with asyncio.timeout(SUBSCRIBE_WAIT_S):
                await self.bus.subscribed.wait()
        except TimeoutError:
            log.warning("cluster_bus_not_subscribed_yet")
        self.directory = Directory(self.redis, c.prefix, self.node_id, c.heartbeat_s,
                                   c.node_ttl_s, self._snapshot)
        self.sessions.on_change = self.directory.changed
        await self.directory.write()
        self.directory.start()
        log.info("cluster_joined", node=self.node_id, prefix=c.prefix)

    async def publish(self, kind: str, target: str) -> None:
        """An API action that ends sessions: to the other nodes first (they close theirs
        within the 2 s budget), then this node's own, in the background."""
        event = Event(kind, target, self.node_id)
        if self.bus is not None:
            await self.bus.publish(event)
        self._spawn(self.sessions.apply(event))

    async def _handle(self, event: Event) -> None:
        self._spawn(self.sessions.apply(event))

    def _spawn(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _snapshot(self) -> tuple[list[SessionInfo], dict[str, Any]]:
        s = self.sessions
        return s.infos(), {"live": len(s.live), "active": s.active, "limit": s.limit,
                           "draining": s.draining}

    def peers(self) -> dict[str, dict[str, Any]]:
        """Every live node's state as of the last heartbeat (this one's alone when not in
        cluster mode): for /metrics, never a network call."""
        if self.directory is not None:
            return self.directory.peers
        return {self.node_id: self._snapshot()[1]}

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every live node's state and sessions (this one's only, in single-node mode)."""
        if self.directory is not None:
            return await self.directory.nodes()
        infos, state = self._snapshot()
        return {self.node_id: {**state, "sessions": [i.as_dict() for i in infos]}}

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.directory is not None:
            await self.directory.aclose()
        if self.bus is not None:
            await self.bus.aclose()
        if self.redis is not None:
            await self.redis.aclose()
