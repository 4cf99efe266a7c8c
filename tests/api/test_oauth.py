"""OAuth 2 authorization code + PKCE, the sign-in page, and legacy chatbot JWTs.

The browser is played by httpx (cookies kept, redirects not followed, so each step can
be inspected): authorize → sign-in form → redirect with code → token with the verifier.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from sqlalchemy import update
from test_tokens import make_key

from gateway.cli import main as cli_main
from gateway.store.db import Database
from gateway.store.models import Assistant, OAuthCode
from gateway.store.users import authenticate, create_client, create_user, get_client

AUTHORIZE = "/api/oauth/aist/authorize"
TOKEN = "/api/oauth/aist/token"
REDIRECT = "http://127.0.0.1:8765/callback"
CLIENT = "mobile-app"
USER, PASSWORD = "alice", "correct horse battery"


def challenge_of(verifier: str) -> str:
    """RFC 7636 §4.2, computed here independently of the server's library."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_verifier() -> str:
    return secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]


async def oauth_gateway(gateway_factory, **sections):
    """A gateway with a user, a registered client and a second assistant, "support"."""
    gw = gateway_factory(server={"allow_anonymous": "false"}, **sections)
    db = Database.from_config(gw.cfg)
    try:
        await create_user(db, USER, PASSWORD)
        await create_client(db, CLIENT, [REDIRECT], "Mobile app")
        async with db.session() as s:
            s.add(Assistant(id="support", name="Support desk", tier="pro"))
            await s.commit()
    finally:
        await db.close()
    return gw


@pytest.fixture
async def gw(gateway_factory):
    return await oauth_gateway(gateway_factory)


def browser(gw) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.base, follow_redirects=False, timeout=10)


def authorize_params(verifier: str, **overrides) -> dict:
    params = {"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT,
              "state": "st-123", "code_challenge": challenge_of(verifier),
              "code_challenge_method": "S256", "scope": "chat voice"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def hidden_request(page: str) -> str:
    found = re.search(r'name="request" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, verifier: str, *, password: str = PASSWORD,
                  assistant: str = "support", action: str = "allow",
                  **overrides) -> httpx.Response:
    page = await http.get(AUTHORIZE, params=authorize_params(verifier, **overrides))
    assert page.status_code == 200, page.text
    return await http.post(AUTHORIZE, data={
        "request": hidden_request(page.text), "username": USER, "password": password,
        "chatModelId": assistant, "action": action})


def code_of(resp: httpx.Response) -> str:
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


async def exchange(http: httpx.AsyncClient, code: str, verifier: str,
                   **overrides) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": CLIENT, "code_verifier": verifier}
    form.update(overrides)
    return await http.post(TOKEN, data={k: v for k, v in form.items() if v is not None})


async def access_token(gw, assistant: str = "support") -> str:
    verifier = new_verifier()
    async with browser(gw) as http:
        code = code_of(await sign_in(http, verifier, assistant=assistant))
        resp = await exchange(http, code, verifier)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def first_event(url: str, headers: dict | None = None) -> dict:
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        return dict(json.loads(await asyncio.wait_for(ws.recv(), 5)))


async def close_code(url: str, headers: dict | None = None) -> int | None:
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None


# ---------------------------------------------------------------- the flow


async def test_browser_flow_issues_a_token_for_the_chosen_assistant(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        page = await http.get(AUTHORIZE, params=authorize_params(verifier))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-frame-options"] == "DENY"
        assert 'value="support"' in page.text and "Support desk" in page.text
        assert "gw_oauth_csrf" in page.headers["set-cookie"]
        assert "httponly" in page.headers["set-cookie"].lower()
        resp = await http.post(AUTHORIZE, data={
            "request": hidden_request(page.text), "username": USER, "password": PASSWORD,
            "chatModelId": "support", "action": "allow"})
        code = code_of(resp)
        token = await exchange(http, code, verifier)
    assert token.status_code == 200, token.text
    body = token.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "chatModelId"}
    assert body["token_type"] == "Bearer"
    assert body["chatModelId"] == "support"
    assert body["scope"] == "chat voice"
    assert 0 < body["expires_in"] <= 3600
    assert token.headers["cache-control"] == "no-store"


async def test_access_token_works_on_http_endpoints_within_its_assistant(gw) -> None:
    token = await access_token(gw)
    async with httpx.AsyncClient(base_url=gw.base) as http:
        minted = await http.post("/api/get-access-token", json={}, headers=bearer(token))
        assert minted.status_code == 200, minted.text
        assert set(minted.json()) == {"token", "sessionId", "expiresAt"}
        search = await http.post("/api/v1/documents/search", headers=bearer(token),
                                 json={"chatModelId": "support", "query": "gateway"})
        assert search.status_code == 200, search.text
        assert search.json()["success"] is True
        models = await http.get("/api/models", headers=bearer(token))
        assert models.status_code == 200
        ids = [m["id"] for m in models.json()["models"] if m["type"] == "assistant"]
        assert ids == ["support"]
        # The token is bound to the assistant the user picked.
        other = await http.post("/api/get-access-token", json={"chatModelId": "default"},
                                headers=bearer(token))
        assert other.status_code == 403
        forged = await http.get("/api/models", headers=bearer(token[:-3] + "abc"))
        assert forged.status_code == 401


async def test_access_token_opens_voice_sessions(gw) -> None:
    token = await access_token(gw)
    first = await first_event(gw.ws_url, bearer(token))
    assert first["type"] == "session_started"
    first = await first_event(f"{gw.ws_url}?access_token={token}")
    assert first["type"] == "session_started"
    assert await close_code(f"{gw.ws_url}?access_token=not.a.token") == 4401


# ---------------------------------------------------------------- refusals


async def test_wrong_verifier_is_invalid_grant(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        code = code_of(await sign_in(http, verifier))
        resp = await exchange(http, code, new_verifier())
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
        missing = await exchange(http, code, None)
        assert missing.status_code == 400
        assert missing.json()["error"] == "invalid_request"


async def test_code_is_single_use(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        code = code_of(await sign_in(http, verifier))
        first, second = await asyncio.gather(exchange(http, code, verifier),
                                             exchange(http, code, verifier))
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 400]
        again = await exchange(http, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_redirect_uri_must_match_exactly(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        code = code_of(await sign_in(http, verifier))
        resp = await exchange(http, code, verifier, redirect_uri=REDIRECT + "/")
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_grant"
        # An unregistered redirect URI is never redirected to: an error page instead.
        page = await http.get(AUTHORIZE, params=authorize_params(
            verifier, redirect_uri="http://127.0.0.1:8765/evil"))
        assert page.status_code == 400
        assert "location" not in page.headers
        unknown = await http.get(AUTHORIZE, params=authorize_params(verifier,
                                                                   client_id="nobody"))
        assert unknown.status_code == 400 and "location" not in unknown.headers


async def test_expired_code_is_refused(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        code = code_of(await sign_in(http, verifier))
        db = Database.from_config(gw.cfg)
        async with db.session() as s:
            await s.execute(update(OAuthCode).values(expires_at=time.time() - 1))
            await s.commit()
        await db.close()
        resp = await exchange(http, code, verifier)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("method", ["plain", None])
async def test_plain_or_missing_challenge_method_is_refused(gw, method) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        resp = await http.get(AUTHORIZE, params=authorize_params(
            verifier, code_challenge=verifier, code_challenge_method=method))
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["st-123"]
    assert "code" not in query


async def test_challenge_is_required(gw) -> None:
    async with browser(gw) as http:
        resp = await http.get(AUTHORIZE, params=authorize_params(
            new_verifier(), code_challenge=None, code_challenge_method=None))
    assert resp.status_code == 302
    assert parse_qs(urlsplit(resp.headers["location"]).query)["error"] == ["invalid_request"]


async def test_wrong_password_shows_the_form_again(gw) -> None:
    async with browser(gw) as http:
        resp = await sign_in(http, new_verifier(), password="wrong password")
    assert resp.status_code == 400
    assert "Invalid username or password" in resp.text
    assert "location" not in resp.headers


async def test_unknown_assistant_is_refused_on_the_form(gw) -> None:
    async with browser(gw) as http:
        resp = await sign_in(http, new_verifier(), assistant="no-such-assistant")
    assert resp.status_code == 400
    assert "Pick an assistant" in resp.text


async def test_cancel_redirects_with_access_denied(gw) -> None:
    async with browser(gw) as http:
        resp = await sign_in(http, new_verifier(), action="deny")
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"]


async def test_form_needs_its_cookie_and_an_untampered_request(gw) -> None:
    verifier = new_verifier()
    async with browser(gw) as http:
        page = await http.get(AUTHORIZE, params=authorize_params(verifier))
        blob = hidden_request(page.text)
    fields = {"request": blob, "username": USER, "password": PASSWORD,
              "chatModelId": "support"}
    async with browser(gw) as other_site:  # no cookie: a cross-site post
        resp = await other_site.post(AUTHORIZE, data=fields)
    assert resp.status_code == 400 and "location" not in resp.headers
    async with browser(gw) as http:
        await http.get(AUTHORIZE, params=authorize_params(verifier))
        resp = await http.post(AUTHORIZE, data={**fields, "request": blob[:-2] + "xx"})
    assert resp.status_code == 400 and "expired or is invalid" in resp.text


async def test_token_endpoint_errors_follow_rfc6749(gw) -> None:
    async with browser(gw) as http:
        grant = await http.post(TOKEN, data={"grant_type": "password", "username": "x"})
        assert grant.status_code == 400
        assert grant.json()["error"] == "unsupported_grant_type"
        client = await exchange(http, "abc", new_verifier(), client_id="nobody")
        assert client.status_code in (400, 401)
        assert client.json()["error"] == "invalid_client"
        code = await exchange(http, "not-a-code", new_verifier())
        assert code.status_code == 400 and code.json()["error"] == "invalid_grant"
        as_json = await http.post(TOKEN, json={"grant_type": "authorization_code"})
        assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


async def test_hostile_parameters_never_cause_a_server_error(gateway_factory) -> None:
    gw = await oauth_gateway(gateway_factory, ratelimit={"group_oauth": "1000/minute"})
    verifier = new_verifier()
    odd = ['a"b', "x\\y", "é", "<script>", "\u0000"]
    async with browser(gw) as http:
        for value in odd:
            for name in ("response_type", "redirect_uri", "client_id", "code_challenge",
                         "state", "scope"):
                resp = await http.get(AUTHORIZE, params=authorize_params(
                    verifier, **{name: value}))
                assert resp.status_code in (200, 302, 400), (name, value, resp.text)
                assert "<script>" not in resp.text
            resp = await http.post(TOKEN, data={"grant_type": value, "code": value,
                                                "client_id": value})
            assert resp.status_code in (400, 401) and "error" in resp.json()
        garbage = await http.post(AUTHORIZE, content=b"\xff\xfe=%%%",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
        assert garbage.status_code == 400
        page = await http.get(AUTHORIZE, params=authorize_params(verifier))
        for value in odd:
            resp = await http.post(AUTHORIZE, data={
                "request": hidden_request(page.text), "username": value, "password": value,
                "chatModelId": value})
            assert resp.status_code == 400, resp.text
    key = await make_key(gw)
    async with httpx.AsyncClient(base_url=gw.base) as http:
        for escaped in (r"\u0000", r"\ud800"):  # JSON escapes: NUL, a lone surrogate
            resp = await http.post(
                "/api/auth/oauth", content=f'{{"chatModelId": "{escaped}"}}'.encode(),
                headers={"x-api-key": key, "content-type": "application/json"})
            assert resp.status_code == 400, resp.text


# ---------------------------------------------------------------- legacy chatbot JWTs


async def test_legacy_jwt_needs_the_chatbot_header(gw) -> None:
    token = await access_token(gw)
    async with httpx.AsyncClient(base_url=gw.base) as http:
        resp = await http.post("/api/auth/oauth", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["chatModelId"] == "support" and body["token_type"] == "Bearer"
        jwt_token = body["token"]
        legacy = bearer(jwt_token, **{"x-use-chatbot-auth": "true"})
        ok = await http.post("/api/v1/documents/search", headers=legacy,
                             json={"chatModelId": "support", "query": "gateway"})
        assert ok.status_code == 200, ok.text
        without = await http.get("/api/models", headers=bearer(jwt_token))
        assert without.status_code == 401
        assert "x-use-chatbot-auth" in without.json()["error"]["message"]
        # A legacy JWT cannot be exchanged again, nor can nothing at all.
        again = await http.post("/api/auth/oauth", headers=legacy)
        assert again.status_code == 401
        assert (await http.post("/api/auth/oauth")).status_code == 401
    assert (await first_event(gw.ws_url, legacy))["type"] == "session_started"
    assert await close_code(gw.ws_url, bearer(jwt_token)) == 4401


async def test_api_key_exchanges_for_a_legacy_jwt(gw) -> None:
    key = await make_key(gw)  # an admin key: any assistant
    async with httpx.AsyncClient(base_url=gw.base) as http:
        resp = await http.post("/api/auth/oauth", headers={"x-api-key": key},
                               json={"chatModelId": "support"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["chatModelId"] == "support"
        models = await http.get("/api/models", headers=bearer(
            resp.json()["token"], **{"x-use-chatbot-auth": "true"}))
        assert models.status_code == 200
        assert [m["id"] for m in models.json()["models"] if m["type"] == "assistant"] == [
            "support"]
        unknown = await http.post("/api/auth/oauth", headers={"x-api-key": key},
                                  json={"chatModelId": "nope"})
        assert unknown.status_code == 404


# ---------------------------------------------------------------- command line


def test_cli_creates_users_and_clients(tmp_path, monkeypatch, new_database_url) -> None:
    url = new_database_url()
    monkeypatch.setenv("GATEWAY_SERVER__DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("GATEWAY_DATABASE__URL", url)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-password\n"))
    assert cli_main(["users", "create", "--username", "bob"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-password\n"))
    assert cli_main(["users", "create", "--username", "bob"]) == 1  # exists
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli_main(["users", "create", "--username", "carol"]) == 1
    assert cli_main(["oauth-clients", "create", "--client-id", "web",
                     "--redirect-uri", "https://app.example/cb",
                     "--redirect-uri", "http://localhost:3000/cb"]) == 0
    assert cli_main(["oauth-clients", "create", "--client-id", "bad",
                     "--redirect-uri", "http://app.example/cb"]) == 1  # http off loopback

    async def check() -> None:
        db = Database(url)
        try:
            assert await authenticate(db, "bob", "s3cret-password") is not None
            assert await authenticate(db, "bob", "wrong-password") is None
            assert await authenticate(db, "nobody", "s3cret-password") is None
            client = await get_client(db, "web")
            assert client is not None
            assert client.redirect_uris == ["https://app.example/cb", "http://localhost:3000/cb"]
            assert await get_client(db, "bad") is None
        finally:
            await db.close()

    asyncio.run(check())
