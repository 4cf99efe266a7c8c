"""How events travel between nodes: Redis pub/sub, one channel per deployment.

Pub/sub delivers to the nodes listening at the time, which is what ending a live session
needs: a node that is down holds no sessions. The publisher handles its own event
before publishing (``node.Cluster.publish``), so a Redis outage never stops a revocation
from ending the sessions of the node that received it. The listener reconnects with a
backoff and logs what it missed the chance to hear.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config import Config

from .events import Event

log = structlog.get_logger("gateway.cluster.bus")

OP_TIMEOUT_S = 2.0  # every Redis call is bounded
RECONNECT_MAX_S = 5.0
POLL_S = 1.0  # how long one read of the subscription waits for a message


class RedisBus:
    def __init__(self, redis: Redis, channel: str, node_id: str,
                 handler: Callable[[Event], Awaitable[object]]) -> None:
        self.redis = redis
        self.channel = channel
        self.node_id = node_id
        self.handler = handler
        self.received = 0
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="cluster-bus")

    async def publish(self, event: Event) -> bool:
        """Send to the other nodes; False (logged) when Redis cannot take it."""
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                await self.redis.publish(self.channel, event.encode())
            return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster_publish_failed", kind=event.kind, error=type(exc).__name__)
            return False

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(OP_TIMEOUT_S):
                    await pubsub.subscribe(self.channel)
                self.subscribed.set()
                backoff = 0.2
                while True:
                    async with asyncio.timeout(POLL_S + OP_TIMEOUT_S):
                        message = await pubsub.get_message(timeout=POLL_S)
                    if message is not None:
                        await self._deliver(message.get("data"))
            except (RedisError, OSError, TimeoutError) as exc:
                self.subscribed.clear()
                log.warning("cluster_bus_disconnected", error=type(exc).__name__,
                            retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(OP_TIMEOUT_S):
                        await pubsub.aclose()

    async def _deliver(self, data: object) -> None:
        if not isinstance(data, str | bytes):
            return
        event = Event.decode(data)
        if event is None:
            log.warning("cluster_event_malformed")
            return
        if event.origin == self.node_id:
            return  # handled before it was published
        self.received += 1
        try:
            await self.handler(event)
        except Exception:  # one bad handler run must not stop the listener
            log.exception("cluster_event_failed", kind=event.kind)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def publish_once(cfg: Config, event: Event) -> bool:
    """From a process that is no node (the CLI): one event, then disconnect."""
    redis = Redis.from_url(cfg.cluster.redis_url, socket_connect_timeout=OP_TIMEOUT_S,
                           socket_timeout=OP_TIMEOUT_S)
    try:
        async with asyncio.timeout(OP_TIMEOUT_S):
            await redis.publish(f"{cfg.cluster.prefix}:events", event.encode())
        return True
    except (RedisError, OSError, TimeoutError):
        return False
    finally:
        await redis.aclose()
