"""The cluster's Redis parts on the real Redis: the session directory (dead nodes expire)
and the event bus (delivery, own events skipped, garbage ignored)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from gateway.cluster.bus import RedisBus
from gateway.cluster.directory import Directory
from gateway.cluster.events import KEY_REVOKED, SESSION_ENDED, Event, SessionInfo

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    """A client on this test's loop, and a key prefix of its own (deleted after)."""
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    prefix = f"gwtest-{secrets.token_hex(6)}"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def info(sid: str) -> SessionInfo:
    return SessionInfo(sid, "ws", "default", "k1", time.time())


async def test_directory_lists_live_nodes_and_expires_a_dead_one() -> None:
    async with redis() as (client, prefix):
        await directory_case(client, prefix)


async def directory_case(client: Redis, prefix: str) -> None:
    live: dict[str, list[SessionInfo]] = {"a": [info("s1"), info("s2")], "b": [info("s3")]}
    dirs = {n: Directory(client, prefix, n, heartbeat_s=0.2, ttl_s=1.0,
                         snapshot=lambda n=n: (live[n], {"active": len(live[n])}))
            for n in live}
    for d in dirs.values():
        d.start()
    try:
        await asyncio.sleep(0.3)
        nodes = await dirs["a"].nodes()
        assert {n: sorted(s["session_id"] for s in st["sessions"]) for n, st in nodes.items()} \
            == {"a": ["s1", "s2"], "b": ["s3"]}
        assert nodes["a"]["active"] == 2
        live["a"].pop()  # a session ends: listed gone after the debounce, not a heartbeat
        dirs["a"].changed()
        await asyncio.sleep(0.15)
        assert [s["session_id"] for s in (await dirs["b"].nodes())["a"]["sessions"]] == ["s1"]
        # b dies without a word (its task stops, nothing deleted): gone after the TTL.
        assert dirs["b"]._task is not None
        dirs["b"]._task.cancel()
        started = time.monotonic()
        while "b" in await dirs["a"].nodes():
            assert time.monotonic() - started < 2.0, "a dead node is still listed"
            await asyncio.sleep(0.1)
        assert time.monotonic() - started > 0.5  # not before its TTL ran out
    finally:
        for d in dirs.values():
            await d.aclose()
    assert await dirs["a"].nodes() == {}  # a clean stop leaves at once


async def test_bus_delivers_to_other_nodes_only() -> None:
    async with redis() as (client, prefix):
        await bus_case(client, prefix)


async def bus_case(client: Redis, prefix: str) -> None:
    got: dict[str, list[Event]] = {"a": [], "b": []}

    async def handler_for(node: str, event: Event) -> None:
        got[node].append(event)

    buses = {n: RedisBus(client, f"{prefix}:events", n,
                         lambda e, n=n: handler_for(n, e)) for n in got}
    for bus in buses.values():
        bus.start()
    try:
        for bus in buses.values():
            await asyncio.wait_for(bus.subscribed.wait(), 5)
        await client.publish(f"{prefix}:events", b"not json")
        await client.publish(f"{prefix}:events", b'{"kind": "reboot", "target": "x"}')
        assert await buses["a"].publish(Event(KEY_REVOKED, "k1", "a"))
        assert await buses["b"].publish(Event(SESSION_ENDED, "s9", "b"))
        deadline = time.monotonic() + 3
        while not (got["a"] and got["b"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert got == {"a": [Event(SESSION_ENDED, "s9", "b")],
                       "b": [Event(KEY_REVOKED, "k1", "a")]}
    finally:
        for bus in buses.values():
            with contextlib.suppress(Exception):
                await bus.aclose()


def test_events_match_the_sessions_they_name() -> None:
    s = info("s1")
    assert Event(KEY_REVOKED, "k1").matches(s) and not Event(KEY_REVOKED, "k2").matches(s)
    assert Event(SESSION_ENDED, "s1").matches(s)
    assert Event.decode(Event(KEY_REVOKED, "k1", "n").encode()) == Event(KEY_REVOKED, "k1", "n")
    for bad in (b"[]", b"{}", b'{"kind": "key_revoked", "target": 5}', b"\xff"):
        assert Event.decode(bad) is None
