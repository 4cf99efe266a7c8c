"""Session tokens: minted with an API key, single use, short-lived, unforgeable."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from gateway.store.db import Database
from gateway.store.keys import KeyStore


async def make_key(gw, **kwargs) -> str:
    db = Database.from_config(gw.cfg)
    _, key = await KeyStore(db).create("test", **kwargs)
    await db.close()
    return key


async def mint(gw, key: str | None, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=gw.base) as http:
        return await http.post("/api/get-access-token", json=body, headers=headers)


async def ws_close_code(url: str) -> tuple[int | None, str]:
    async with websockets.connect(url) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
    return None, ""


@pytest.fixture
def secured(gateway_factory):
    return gateway_factory(server={"allow_anonymous": "false"})


async def test_token_opens_one_session_only(secured) -> None:
    key = await make_key(secured)
    resp = await mint(secured, key, avatarId="Pedro_Blue_Shirt_public", voiceId="joe")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"token", "sessionId", "expiresAt"}
    assert body["expiresAt"].endswith("Z")
    url = f"{secured.ws_url}?token={body['token']}"
    async with websockets.connect(url) as ws:
        first = await asyncio.wait_for(ws.recv(), 5)
        assert body["sessionId"] in first
    code, reason = await ws_close_code(url)
    assert code == 4401 and "already used" in reason


async def test_x_api_key_header_works_too(secured) -> None:
    key = await make_key(secured)
    async with httpx.AsyncClient(base_url=secured.base) as http:
        resp = await http.post("/api/get-access-token", json={}, headers={"x-api-key": key})
    assert resp.status_code == 200


async def test_expired_token_is_refused(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"},
                         auth={"token_ttl_min_s": 1})
    resp = await mint(gw, await make_key(gw), ttlSeconds=1)
    token = resp.json()["token"]
    await asyncio.sleep(2.2)
    code, reason = await ws_close_code(f"{gw.ws_url}?token={token}")
    assert code == 4401 and "expired" in reason


async def test_forged_token_is_refused(secured) -> None:
    token = (await mint(secured, await make_key(secured))).json()["token"]
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    code, reason = await ws_close_code(f"{secured.ws_url}?token={forged}")
    assert code == 4401 and "invalid" in reason


async def test_anonymous_refused_when_not_allowed(secured) -> None:
    code, _ = await ws_close_code(secured.ws_url)
    assert code == 4401


async def test_minting_needs_a_valid_key(secured) -> None:
    for key in (None, "gw_nope_nope", "something"):
        resp = await mint(secured, key)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "UNAUTHORIZED"
    key = await make_key(secured)
    resp = await mint(secured, key, ttlSeconds=999999)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "INVALID_REQUEST"


async def test_revoked_key_cannot_mint(secured) -> None:
    db = Database.from_config(secured.cfg)
    store = KeyStore(db)
    record, key = await store.create("soon revoked")
    await store.revoke(record.key_id)
    await db.close()
    assert (await mint(secured, key)).status_code == 401


async def test_health(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base) as http:
        body = (await http.get("/api/health")).json()
    assert body["status"] == "ok"
    assert set(body["providers"]) == {"vad", "stt", "llm", "tts"}
    assert all(v == "ok" for v in body["providers"].values())
