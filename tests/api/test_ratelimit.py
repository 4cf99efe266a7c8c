"""Rate limits: per endpoint group, per tier, per key or client IP; 429 + headers;
the WebSocket error event; failing open; and one limit shared by two gateway processes
through the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from test_tokens import make_key, mint

REDIS_URL = "async+redis://127.0.0.1:6379"


def assert_limited(resp: httpx.Response, limit: int, code: str = "RATE_LIMITED") -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.headers["x-ratelimit-limit"] == str(limit)
    assert resp.headers["x-ratelimit-remaining"] == "0"
    retry_after = int(resp.headers["retry-after"])
    assert retry_after >= 1
    assert int(resp.headers["x-ratelimit-reset"]) >= int(time.time())


async def test_group_limit_counts_down_then_refuses(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_token": "3/minute"})
    key = await make_key(gw)  # admin key: enterprise tier, far above 3/minute
    remaining = []
    for _ in range(3):
        resp = await mint(gw, key)
        assert resp.status_code == 200
        assert resp.headers["x-ratelimit-limit"] == "3"
        remaining.append(int(resp.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    refused = await mint(gw, key)
    assert_limited(refused, 3)
    assert int(refused.headers["retry-after"]) <= 60


async def test_tier_limit_spans_endpoint_groups(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"tier_free": "3/minute;1000/day"})
    key = await make_key(gw, tier="free")
    async with httpx.AsyncClient(base_url=gw.base) as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/api/models", headers=headers)).status_code == 200
        assert (await http.get("/api/templates", headers=headers)).status_code == 200
        assert (await mint(gw, key)).status_code == 200
        assert_limited(await http.get("/api/models", headers=headers), 3)
        # Another key on the same tier has its own budget.
        other = await make_key(gw, tier="free")
        ok = await http.get("/api/models", headers={"x-api-key": other})
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining"] == "2"


async def test_daily_tier_limit_says_when_to_come_back(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"tier_basic": "100/minute;2/day"})
    key = await make_key(gw, tier="basic")
    async with httpx.AsyncClient(base_url=gw.base) as http:
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(2):
            assert (await http.get("/api/models", headers=headers)).status_code == 200
        resp = await http.get("/api/models", headers=headers)
    assert_limited(resp, 2, code="QUOTA_EXCEEDED")  # the plan's quota, seed 001's code
    assert int(resp.headers["retry-after"]) > 3600  # a day window, not a minute one


async def test_a_voice_session_over_the_daily_quota_says_so(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"tier_basic": "100/minute;1/day"})
    headers = {"Authorization": f"Bearer {await make_key(gw, tier='basic')}"}
    async with httpx.AsyncClient(base_url=gw.base) as http:
        assert (await http.get("/api/models", headers=headers)).status_code == 200
    async with websockets.connect(gw.ws_url, additional_headers=headers) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert event["type"] == "error" and event["code"] == "QUOTA_EXCEEDED"
    assert event["retry_after"] > 3600


async def test_keys_are_limited_separately(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_token": "1/minute"})
    first, second = await make_key(gw), await make_key(gw)
    assert (await mint(gw, first)).status_code == 200
    assert_limited(await mint(gw, first), 1)
    assert (await mint(gw, second)).status_code == 200


async def test_anonymous_callers_are_limited_per_ip(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_health": "2/minute"})
    async with httpx.AsyncClient(base_url=gw.base) as here:
        for expected in ("1", "0"):
            resp = await here.get("/api/health")
            assert resp.status_code == 200
            assert resp.headers["x-ratelimit-remaining"] == expected
        assert_limited(await here.get("/api/health"), 2)
    # Another source address (the whole 127/8 is loopback on Linux) has its own budget.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=gw.base, transport=transport) as elsewhere:
        assert (await elsewhere.get("/api/health")).status_code == 200


async def test_voice_sessions_over_the_limit_get_an_error_event(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_voice": "1/minute"})
    headers = {"Authorization": f"Bearer {await make_key(gw)}"}
    async with websockets.connect(gw.ws_url, additional_headers=headers) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session_started"
    async with websockets.connect(gw.ws_url, additional_headers=headers) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert event["type"] == "error" and event["code"] == "RATE_LIMITED"
    assert event["retryable"] is True and event["retry_after"] >= 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


async def test_disabled_means_no_limits_and_no_headers(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"enabled": False, "group_health": "1/minute"})
    async with httpx.AsyncClient(base_url=gw.base) as http:
        for _ in range(3):
            resp = await http.get("/api/health")
            assert resp.status_code == 200
            assert "x-ratelimit-limit" not in resp.headers


async def test_unreachable_redis_fails_open(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"storage_url": "async+redis://127.0.0.1:1",
                                    "group_health": "1/minute"})
    async with httpx.AsyncClient(base_url=gw.base) as http:
        for _ in range(3):
            started = time.monotonic()
            resp = await http.get("/api/health")
            assert resp.status_code == 200
            assert "x-ratelimit-limit" not in resp.headers
            assert time.monotonic() - started < 3


# ---------------------------------------------------------------- two processes, one Redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, db_url: str, prefix: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m gateway serve`` configured through the environment; (process, base URL)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEWAY_") or k == "GATEWAY_TEST_DB"}
    env.update({
        "GATEWAY_SERVER__PORT": str(port), "GATEWAY_SERVER__DATA_DIR": str(data_dir),
        "GATEWAY_SERVER__LOG_LEVEL": "warning", "GATEWAY_SERVER__LOG_FORMAT": "json",
        "GATEWAY_SERVER__ALLOW_ANONYMOUS": "true", "GATEWAY_DATABASE__URL": db_url,
        "GATEWAY_RATELIMIT__STORAGE_URL": REDIS_URL, "GATEWAY_RATELIMIT__KEY_PREFIX": prefix,
        "GATEWAY_RATELIMIT__GROUP_HEALTH": "5/minute",
        "GATEWAY_RATELIMIT__GROUP_TOKEN": "4/minute",
        # Null providers: these processes only need to answer HTTP, and start in seconds.
        "GATEWAY_VAD__PROVIDER": "null", "GATEWAY_STT__PROVIDER": "null",
        "GATEWAY_LLM__PROVIDER": "null", "GATEWAY_TTS__PROVIDER": "null",
    })
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "server.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:  # uvicorn listens only after the lifespan started (migrations done)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((data_dir / "server.log").read_text()[-3000:]) from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def redis_prefix():
    prefix = f"gwtest-{uuid.uuid4().hex[:12]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield prefix, client
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


async def test_limits_hold_across_two_processes_sharing_redis(
    tmp_path: Path, new_database_url, redis_prefix
) -> None:
    prefix, client = redis_prefix
    db_url = new_database_url()  # one database: the API key is valid on both
    key = await _prepared_key(db_url)  # schema ready: both processes can start at once
    started = await asyncio.gather(
        *(asyncio.to_thread(_start, tmp_path / name, db_url, prefix) for name in "ab"),
        return_exceptions=True)
    procs = [r[0] for r in started if isinstance(r, tuple)]
    bases = [r[1] for r in started if isinstance(r, tuple)]
    try:
        for result in started:
            if isinstance(result, BaseException):
                raise result
        async with httpx.AsyncClient() as http:
            # Anonymous, per IP: 5/minute in total over both processes.
            seen = []
            for i in range(5):
                resp = await http.get(f"{bases[i % 2]}/api/health")
                assert resp.status_code == 200, resp.text
                seen.append(resp.headers["x-ratelimit-remaining"])
            assert seen == ["4", "3", "2", "1", "0"]
            for base in bases:
                assert_limited(await http.get(f"{base}/api/health"), 5)
            # Per key, 4/minute: of 12 concurrent requests spread over both, exactly 4 pass.
            auth = {"Authorization": f"Bearer {key}"}
            burst = await asyncio.gather(*(
                http.post(f"{bases[i % 2]}/api/get-access-token", json={}, headers=auth)
                for i in range(12)))
            assert sorted(r.status_code for r in burst) == [200] * 4 + [429] * 8
            for resp in burst:
                if resp.status_code == 429:
                    assert_limited(resp, 4)
        assert list(client.scan_iter(match=f"{prefix}:*")), "no counters in Redis"
    finally:
        for proc in procs:
            _stop(proc)


async def _prepared_key(db_url: str) -> str:
    from gateway.config import Config
    from gateway.store.assistants import ensure_default_assistant
    from gateway.store.db import Database
    from gateway.store.keys import KeyStore

    db = Database(db_url)
    try:
        await db.migrate()
        await ensure_default_assistant(db, Config())
        _, key = await KeyStore(db).create("shared")
    finally:
        await db.close()
    return key
