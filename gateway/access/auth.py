"""Authentication: who is calling, and for which assistant.

Credentials: API keys (``Authorization: Bearer`` or ``x-api-key``), short-lived
single-session tokens (JWT, HS256 via PyJWT), OAuth access tokens and legacy chatbot
JWTs (``gateway.api.oauth``), or nothing where anonymity is allowed. The outcome is a
``Principal``; failures are ``AuthError`` values, mapped to HTTP 401 or WebSocket close
4401 at the edge. Messages never echo the presented secret.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from gateway.config import Config
from gateway.errors import AuthError as AuthError  # re-exported for the transports
from gateway.errors import Forbidden as Forbidden
from gateway.errors import UnknownAssistant as UnknownAssistant
from gateway.store.assistants import DEFAULT_ASSISTANT, get_assistant
from gateway.store.conversations import Owner
from gateway.store.db import Database
from gateway.store.keys import KeyStore
from gateway.store.models import ApiKey

ISSUER = "gateway"
AUDIENCE = "gateway-session"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: how they authenticated, which assistants they may use, their tier."""

    kind: str  # api_key | session | oauth | legacy_jwt | anonymous
    subject: str  # key id, user id or client address: the rate-limit identity
    assistant_scope: str | None  # None: every assistant (an admin key)
    tier: str = "free"
    key_id: str | None = None
    user_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.kind == "api_key" and self.assistant_scope is None

    def assistant_for(self, requested: str | None) -> str:
        """The assistant a request runs as; Forbidden outside the credential's scope."""
        if self.assistant_scope is None:
            return requested or DEFAULT_ASSISTANT
        if requested and requested != self.assistant_scope:
            raise Forbidden("this credential is not valid for that assistant")
        return self.assistant_scope

    def owner(self, assistant_id: str, requested_user: str | None = None) -> Owner:
        """Whose conversations of ``assistant_id`` this caller may use. An API key is the
        assistant's own credential: all of them, or those of the user it names for its
        end users. A signed-in user (OAuth, legacy JWT, a session token minted for a
        user) only their own, whatever user a request names. Anyone else (anonymous, a
        token minted for no user) none: they only start new conversations."""
        if self.kind == "api_key":
            return Owner(assistant_id, requested_user, tenant=requested_user is None)
        return Owner(assistant_id, self.user_id)


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What a redeemed token (or an API key, or anonymity) allows one voice session."""

    session_id: str
    principal: Principal
    assistant_id: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def key_id(self) -> str | None:
        return self.principal.key_id


def bearer_or_header(headers: Any) -> str | None:
    auth = headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return str(auth[7:].strip()) or None
    key = headers.get("x-api-key")
    return str(key).strip() if key else None


def load_token_secret(cfg: Config) -> str:
    """The signing secret: from config/env, else generated once and kept in the data dir."""
    if cfg.auth.token_secret:
        return cfg.auth.token_secret
    path = Path(cfg.server.data_dir) / "token_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Authenticator:
    def __init__(self, cfg: Config, db: Database, keys: KeyStore, secret: str) -> None:
        self.cfg = cfg
        self.db = db
        self.keys = keys
        self.secret = secret
        # Extra credential kinds (OAuth access tokens, legacy JWTs) plug in here:
        # async (token, headers) -> Principal | None
        self.bearer_resolvers: list[Any] = []

    async def api_key(self, presented: str | None) -> ApiKey:
        if not presented:
            raise AuthError("missing API key (Authorization: Bearer <key> or x-api-key)")
        key = await self.keys.verify(presented)
        if key is None:
            raise AuthError("invalid or revoked API key")
        return key

    def key_principal(self, key: ApiKey) -> Principal:
        return Principal("api_key", f"key:{key.key_id}", key.assistant_id,
                         key.tier or "enterprise", key_id=key.key_id)

    async def principal(self, headers: Any, client: str, requested: str | None) -> Principal:
        """The caller of an HTTP request (anonymous only where allowed)."""
        presented = bearer_or_header(headers)
        if presented:
            for resolve in self.bearer_resolvers:
                found = await resolve(presented, headers)
                if found is not None:
                    return found  # type: ignore[no-any-return]
            if not presented.startswith("gw_") and presented.count(".") == 2:
                raise AuthError("invalid or expired token")
            return self.key_principal(await self.api_key(presented))
        return await self.anonymous(client, requested)

    async def anonymous(self, client: str, requested: str | None) -> Principal:
        assistant_id = requested or DEFAULT_ASSISTANT
        if len(assistant_id) > 64 or not assistant_id.isprintable():
            raise AuthError("invalid chat model id")
        assistant = await get_assistant(self.db, assistant_id)
        if assistant is None:
            raise AuthError("authentication required")
        if not (self.cfg.anonymous_allowed() and assistant.allow_anonymous):
            raise AuthError("authentication required: an API key or a token")
        return Principal("anonymous", f"ip:{client}", assistant_id, assistant.tier)

    async def check_assistant(self, assistant_id: str) -> None:
        if len(assistant_id) > 64 or not assistant_id.isprintable():
            raise UnknownAssistant("invalid chat model id")
        if await get_assistant(self.db, assistant_id) is None:
            raise UnknownAssistant(f"unknown chat model id: {assistant_id}")

    def mint(self, principal: Principal, assistant_id: str, ttl_s: int | None,
             extra: dict[str, Any], user_id: str | None = None) -> dict[str, Any]:
        """A single-session token. Its session acts for ``principal``'s user (OAuth), or
        for ``user_id`` if the minting key names one; otherwise for no user."""
        a = self.cfg.auth
        ttl = a.token_ttl_s if ttl_s is None else ttl_s
        if not a.token_ttl_min_s <= ttl <= a.token_ttl_max_s:
            raise ValueError(f"ttl must be within {a.token_ttl_min_s}..{a.token_ttl_max_s} s")
        now = int(time.time())
        session_id = "sess_" + uuid.uuid4().hex[:20]
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": principal.subject, "sid": session_id,
            "jti": uuid.uuid4().hex, "iat": now, "exp": now + ttl, "asst": assistant_id,
            "tier": principal.tier, "cfg": extra,
        }
        uid = principal.owner(assistant_id, user_id).user_id
        if uid is not None:
            claims["uid"] = uid
        token = jwt.encode(claims, self.secret, algorithm="HS256")
        return {"token": token, "sessionId": session_id, "expiresAt": _iso(now + ttl)}

    async def redeem(self, token: str) -> SessionGrant:
        """Verify a session token and mark it used. Expired, forged or reused: AuthError."""
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "jti", "sid", "sub", "asst"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("session token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid session token") from None
        if not await self.keys.redeem(claims["jti"], float(claims["exp"])):
            raise AuthError("session token already used")
        uid = claims.get("uid")
        principal = Principal("session", claims["sub"], claims["asst"],
                              claims.get("tier", "free"),
                              user_id=uid if isinstance(uid, str) else None, claims=claims)
        return SessionGrant(claims["sid"], principal, claims["asst"],
                            dict(claims.get("cfg") or {}))

    async def websocket_grant(
        self, token: str | None, headers: Any, client: str, requested: str | None
    ) -> SessionGrant:
        if token:
            return await self.redeem(token)
        principal = await self.principal(headers, client, requested)
        assistant_id = principal.assistant_for(requested)
        await self.check_assistant(assistant_id)
        return SessionGrant("sess_" + uuid.uuid4().hex[:20], principal, assistant_id)
