"""Two gateway processes on one PostgreSQL and one Redis behave as one service (issue 12).

The nodes are real processes (``gateway serve``) started together on a fresh database;
the tests talk to each node directly, then through HAProxy. One pair of nodes serves the
whole module, in order; the drain test ends node A, so it comes last.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cluster_nodes import Balancer, Cluster, start_cluster
from voice_client import VoiceClient

pytestmark = pytest.mark.timeout(240)

WEATHER = "What is the weather today?"  # ~2 s of espeak-ng speech in reply


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def balancer(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    lb = Balancer(cluster.nodes, tmp_path_factory.mktemp("haproxy"))
    lb.start()
    yield lb
    lb.stop()


def admin(cluster: Cluster) -> dict[str, str]:
    return {"x-api-key": cluster.admin_key}


async def api(node: Any, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.request(method, node.base + path, headers={"x-api-key": key}, **kw)


async def new_key(cluster: Cluster, name: str, tier: str = "enterprise"
                  ) -> tuple[str, str]:
    resp = await api(cluster.nodes[0], "POST", "/api/v1/keys", cluster.admin_key,
               json={"name": name, "tier": tier})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["key"], body["key_id"]


async def open_session(url: str, **headers: str) -> VoiceClient:
    client = await VoiceClient.connect(url, additional_headers=headers or None)
    await client.wait_for("session_started", timeout=10)
    return client


async def placement(node: Any, key: str, ids: set[str]) -> dict[str, str]:
    """Session id → node, read from ``node``'s listing once all of ``ids`` are in it
    (each node rewrites its directory entry within ~0.1 s of a change)."""
    deadline = time.monotonic() + 2.0
    while True:
        listing = (await api(node, "GET", "/api/v1/sessions", key)).json()
        found = {s["session_id"]: s["node"] for s in listing["sessions"]
                 if s["session_id"] in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def closed(client: VoiceClient, since: float) -> tuple[float, int | None]:
    """Seconds from ``since`` until the server closed the session (at most 5 s), and the
    close code."""
    async with asyncio.timeout(5):
        await client.closed.wait()
    return time.monotonic() - since, client.ws.close_code


async def test_token_minted_on_one_node_works_once_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.nodes
    minted = await api(a, "POST", "/api/get-access-token", cluster.admin_key, json={})
    token = minted.json()["token"]
    client = await open_session(f"{b.ws}?token={token}")
    await client.close()
    for node in (b, a):  # replayed: refused on both nodes
        async with websockets.connect(f"{node.ws}?token={token}") as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4401


async def test_key_revoked_on_a_ends_its_sessions_on_b(cluster: Cluster) -> None:
    a, b = cluster.nodes
    key, key_id = await new_key(cluster, "revoked-soon")
    other, _ = await new_key(cluster, "stays")
    by_key = await open_session(b.ws, **{"x-api-key": key})
    token = (await api(a, "POST", "/api/get-access-token", key, json={})).json()["token"]
    by_token = await open_session(f"{b.ws}?token={token}")  # minted by the key
    bystander = await open_session(b.ws, **{"x-api-key": other})

    asked = time.monotonic()
    resp = await api(a, "DELETE", f"/api/v1/keys/{key_id}", cluster.admin_key)
    assert resp.status_code == 200, resp.text
    for client in (by_key, by_token):
        took, code = await closed(client, since=asked)
        [error] = client.events("error")
        assert took < 2.0, took
        assert code == 4401 and error["code"] == "UNAUTHORIZED", (code, error)
        assert error["message"] == "the API key of this session was revoked"
    assert not bystander.closed.is_set()  # another key's session goes on
    await bystander.send_json({"type": "ping"})
    await bystander.wait_for("pong", timeout=5)
    await bystander.close()


async def test_key_revoked_from_the_cli_ends_its_sessions(cluster: Cluster) -> None:
    """`gateway keys revoke` is no node: with the cluster's config it publishes too."""
    a, b = cluster.nodes
    key, key_id = await new_key(cluster, "revoked-by-cli")
    client = await open_session(b.ws, **{"x-api-key": key})
    out = await asyncio.to_thread(a.cli, "keys", "revoke", key_id)
    assert f"revoked {key_id}" in out
    _, code = await closed(client, since=time.monotonic())
    assert code == 4401 and client.events("error")[-1]["code"] == "UNAUTHORIZED"


async def test_sessions_listed_and_ended_through_the_other_node(cluster: Cluster) -> None:
    a, b = cluster.nodes
    client = await open_session(b.ws, **admin(cluster))
    sid = client.events("session_started")[0]["session_id"]
    assert await placement(a, cluster.admin_key, {sid}) == {sid: "node-b"}
    listing = (await api(a, "GET", "/api/v1/sessions", cluster.admin_key)).json()
    [entry] = [s for s in listing["sessions"] if s["session_id"] == sid]
    assert entry["transport"] == "ws" and entry["assistant_id"] == "default", entry
    assert {n["node"] for n in listing["nodes"]} == {"node-a", "node-b"}

    asked = time.monotonic()
    resp = await api(a, "DELETE", f"/api/v1/sessions/{sid}", cluster.admin_key)
    assert resp.status_code == 200 and resp.json()["node"] == "node-b", resp.text
    took, code = await closed(client, since=asked)
    assert took < 2.0, took
    assert code == 1000 and client.events("error")[-1]["code"] == "SESSION_ENDED"
    # Gone from the directory too (B rewrites its entry within ~0.1 s of a change).
    deadline = time.monotonic() + 1.0
    while (await api(a, "DELETE", f"/api/v1/sessions/{sid}",
                     cluster.admin_key)).status_code != 404:
        assert time.monotonic() < deadline, "still listed"
        await asyncio.sleep(0.05)


async def test_a_turn_over_b_is_listed_through_a(cluster: Cluster) -> None:
    a, b = cluster.nodes
    client = await open_session(b.ws, **admin(cluster))
    conversation = client.events("session_started")[0]["conversation_id"]
    await client.send_json({"type": "text", "text": WEATHER})
    done = await client.wait_for("tts_complete", timeout=30)
    assert done["interrupted"] is False
    await client.close()
    deadline = time.monotonic() + 5  # the voice log writes in batches
    while time.monotonic() < deadline:
        resp = await api(a, "GET", f"/api/conversation/{conversation}/messages",
                   cluster.admin_key)
        if resp.status_code == 200 and len(resp.json()["messages"]) == 2:
            break
        await asyncio.sleep(0.2)
    messages = resp.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"], resp.text
    assert messages[0]["content"] == WEATHER and "sunny" in messages[1]["content"]


async def test_rate_limits_are_shared(cluster: Cluster) -> None:
    """The free tier's 10/minute, spent half on each node: the 11th is refused on B."""
    a, b = cluster.nodes
    key, _ = await new_key(cluster, "free", tier="free")
    codes = [(await api(node, "GET", "/api/v1/assistants", key)).status_code
             for node in (a, b) * 5]
    assert codes == [200] * 10, codes
    refused = await api(b, "GET", "/api/v1/assistants", key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "RATE_LIMITED"


async def test_balancer_spreads_sessions(cluster: Cluster, balancer: Balancer) -> None:
    clients = [await open_session(balancer.ws, **admin(cluster)) for _ in range(6)]
    ours = {c.events("session_started")[0]["session_id"] for c in clients}
    found = await placement(cluster.nodes[0], cluster.admin_key, ours)
    per_node = {n: list(found.values()).count(n) for n in set(found.values())}
    assert per_node == {"node-a": 3, "node-b": 3}, per_node
    # Each node's /metrics shows the whole service as of its last heartbeat (0.5 s here).
    deadline = time.monotonic() + 3
    while True:
        text = (await api(cluster.nodes[0], "GET", "/metrics", "")).text
        seen = dict(re.findall(r'^gateway_cluster_sessions_live\{node="([^"]+)"\} (\S+)$',
                               text, re.M))
        if seen == {"node-a": "3.0", "node-b": "3.0"} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert seen == {"node-a": "3.0", "node-b": "3.0"}, text
    assert "gateway_cluster_nodes 2.0" in text
    for c in clients:
        await c.close()


async def test_sigterm_mid_reply(cluster: Cluster, balancer: Balancer, tmp_path: Path) -> None:
    """SIGTERM on A while it speaks: that reply plays to its end; A's readiness and new
    upgrades say 503; new sessions through the balancer all land on B, none fails (also
    through a balancer without readiness checks, which sends them to A first: A's 503 is
    retried on B); once the caller hangs up, A exits and B keeps serving."""
    a, b = cluster.nodes
    blind = Balancer(cluster.nodes, tmp_path / "blind", checks=False)
    blind.start()
    try:
        talker = await open_session(a.ws, **admin(cluster))
        await talker.send_json({"type": "text", "text": WEATHER})
        started = await talker.wait_for("tts_start", timeout=30)
        while not any(r.audio for r in talker.log):
            await asyncio.sleep(0.01)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (ready := await api(a, "GET", "/api/health/ready", "")).status_code == 200:
            assert time.monotonic() < deadline, "A never began draining"
            await asyncio.sleep(0.02)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"

        # A balancer that does not know A drains (leastconn: A has none of its connections)
        # tries A first; A answers the upgrade 503 and the balancer retries it on B.
        retried = [await open_session(blind.ws, **admin(cluster)) for _ in range(2)]
        metrics = (await api(a, "GET", "/metrics", "")).text
        tried_a = re.search(r"^gateway_admissions_refused_total (\S+)$", metrics, re.M)
        assert tried_a and float(tried_a[1]) >= 1, metrics  # A said 503 at least once
        assert (await api(a, "GET", "/api/health", "")).status_code == 200  # alive
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(a.ws, additional_headers=admin(cluster))
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "1"

        # Through the balancer, at once: every new session opens, on B.
        fresh = [await open_session(balancer.ws, **admin(cluster)) for _ in range(2)] + retried
        ids = {c.events("session_started")[0]["session_id"] for c in fresh}
        found = await placement(b, cluster.admin_key, ids)
        assert len(found) == 4 and set(found.values()) == {"node-b"}, found

        done = await talker.wait_for("tts_complete", timeout=30,
                                     response_id=started["response_id"])
        assert done["interrupted"] is False and "interrupted" not in talker.types()
        assert not talker.closed.is_set()  # the session goes on until it ends or the deadline
        await talker.close()
        assert a.proc.wait(timeout=15) in (0, -signal.SIGTERM)

        for c in fresh:  # B serves on
            await c.send_json({"type": "text", "text": WEATHER})
        for c in fresh:
            assert (await c.wait_for("tts_complete", timeout=60))["interrupted"] is False
            await c.close()
        gone = (await api(b, "GET", "/api/v1/sessions", cluster.admin_key)).json()
        assert [n["node"] for n in gone["nodes"]] == ["node-b"]  # A left the directory
    finally:
        blind.stop()  # (its tunnels carry two of the sessions)


def test_cluster_mode_needs_a_token_secret(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    env = {"GATEWAY_CLUSTER__ENABLED": "true",
           "GATEWAY_CLUSTER__REDIS_URL": "redis://127.0.0.1:6379/0",
           "GATEWAY_DATABASE__URL": "postgresql+asyncpg://postgres@127.0.0.1/test"}
    with pytest.raises(ConfigError, match="token_secret"):
        load_config(environ=env)
    cfg = load_config(environ={**env, "GATEWAY_AUTH__TOKEN_SECRET": "s" * 32})
    assert cfg.ratelimit.storage_url == "async+redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load_config(environ={**env, "GATEWAY_AUTH__TOKEN_SECRET": "s" * 32,
                             "GATEWAY_DATABASE__URL": ""})
