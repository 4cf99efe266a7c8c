"""Every node's live sessions, in Redis, for listing and metrics.

Layout (``P`` = ``cluster.prefix``):

- ``P:nodes`` — sorted set, node id → time of its last heartbeat (Unix seconds);
- ``P:node:<id>`` — hash, session id → SessionInfo as JSON, plus ``_node`` → the node's
  own state (live, limit, draining); expires ``node_ttl_s`` after the last heartbeat.

A node rewrites its hash on every heartbeat and soon after each session starts or
ends, so a crashed node's entries vanish by expiry and a listing never waits on it.
Readers drop nodes whose heartbeat is older than ``node_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .bus import OP_TIMEOUT_S
from .events import SessionInfo

log = structlog.get_logger("gateway.cluster.directory")

NODE_FIELD = "_node"
DEBOUNCE_S = 0.05  # sessions starting together are written in one go


class Directory:
    def __init__(self, redis: Redis, prefix: str, node_id: str, heartbeat_s: float,
                 ttl_s: float, snapshot: Callable[[], tuple[list[SessionInfo],
                                                             dict[str, Any]]]) -> None:
        self.redis = redis
        self.prefix = prefix
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.snapshot = snapshot  # this node's sessions and state, read at each write
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        # Every live node's state (its ``_node`` field: live sessions, limit, draining),
        # read once per heartbeat for /metrics; empty until the first read.
        self.peers: dict[str, dict[str, Any]] = {}
        self._next_read = 0.0

    @property
    def nodes_key(self) -> str:
        return f"{self.prefix}:nodes"

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-directory")

    def changed(self) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._dirty.wait()
                    await asyncio.sleep(DEBOUNCE_S)
            self._dirty.clear()
            await self.write()
            if time.monotonic() >= self._next_read:  # not on every change: per heartbeat
                self._next_read = time.monotonic() + self.heartbeat_s
                await self.read_peers()

    async def write(self) -> bool:
        sessions, state = self.snapshot()
        now = time.time()
        fields: dict[Any, Any] = {
            s.session_id: json.dumps(s.as_dict()) for s in sessions}
        fields[NODE_FIELD] = json.dumps({**state, "heartbeat": now})
        key = self.node_key(self.node_id)
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, int(self.ttl_s * 1000))
                pipe.zadd(self.nodes_key, {self.node_id: now})
                pipe.zremrangebyscore(self.nodes_key, "-inf", now - self.ttl_s)
                await pipe.execute()
            self.writes += 1
            return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster_directory_write_failed", error=type(exc).__name__)
            return False

    async def read_peers(self) -> None:
        """Refresh ``peers``: one small field per live node, not their sessions."""
        cutoff = time.time() - self.ttl_s
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                ids = [_text(n) for n in
                       await self.redis.zrangebyscore(self.nodes_key, cutoff, "+inf")]
                pipe = self.redis.pipeline(transaction=False)
                for node in ids:
                    pipe.hget(self.node_key(node), NODE_FIELD)
                rows = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster_directory_read_failed", error=type(exc).__name__)
            return
        self.peers = {node: json.loads(row) for node, row in zip(ids, rows, strict=True)
                      if row}

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Live nodes: id → their state and sessions (``sessions``: list of dicts)."""
        cutoff = time.time() - self.ttl_s
        async with asyncio.timeout(OP_TIMEOUT_S):
            ids = [_text(n) for n in
                   await self.redis.zrangebyscore(self.nodes_key, cutoff, "+inf")]
            pipe = self.redis.pipeline(transaction=False)
            for node in ids:
                pipe.hgetall(self.node_key(node))
            rows = await pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        for node, row in zip(ids, rows, strict=True):
            if not row:  # expired between the two reads
                continue
            values = {_text(k): json.loads(v) for k, v in row.items()}
            state = values.pop(NODE_FIELD, {})
            out[node] = {**state, "sessions": list(values.values())}
        return out

    async def aclose(self) -> None:
        """Leave the directory (a clean stop is not a dead node)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(OP_TIMEOUT_S):
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(self.node_key(self.node_id))
                pipe.zrem(self.nodes_key, self.node_id)
                await pipe.execute()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
