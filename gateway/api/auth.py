"""Authentication: API keys from headers, short-lived single-session tokens (JWT).

Errors are values (``AuthError``) mapped to HTTP 401 or WebSocket close 4401 at the
edge; messages never echo the presented secret.
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
from gateway.store.keys import ApiKey, KeyStore

ISSUER = "gateway"
AUDIENCE = "gateway-session"


class AuthError(Exception):
    code = "UNAUTHORIZED"


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What a redeemed token (or an API key, or anonymity) allows a session."""

    session_id: str
    key_id: str | None
    claims: dict[str, Any] = field(default_factory=dict)


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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class Authenticator:
    def __init__(self, cfg: Config, keys: KeyStore, secret: str) -> None:
        self.cfg = cfg
        self.keys = keys
        self._secret = secret

    def api_key(self, presented: str | None) -> ApiKey:
        if not presented:
            raise AuthError("missing API key (Authorization: Bearer <key> or x-api-key)")
        key = self.keys.verify(presented)
        if key is None:
            raise AuthError("invalid or revoked API key")
        return key

    def mint(self, key: ApiKey, ttl_s: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        a = self.cfg.auth
        ttl = a.token_ttl_s if ttl_s is None else ttl_s
        if not a.token_ttl_min_s <= ttl <= a.token_ttl_max_s:
            raise ValueError(f"ttl must be within {a.token_ttl_min_s}..{a.token_ttl_max_s} s")
        now = int(time.time())
        session_id = "sess_" + uuid.uuid4().hex[:20]
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": key.key_id, "sid": session_id,
            "jti": uuid.uuid4().hex, "iat": now, "exp": now + ttl, "cfg": extra,
        }
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        expires = datetime.fromtimestamp(now + ttl, UTC).isoformat().replace("+00:00", "Z")
        return {"token": token, "sessionId": session_id, "expiresAt": expires}

    def redeem(self, token: str) -> SessionGrant:
        """Verify a session token and mark it used. Expired, forged or reused: AuthError."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "jti", "sid", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("session token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid session token") from None
        if not self.keys.redeem(claims["jti"], float(claims["exp"])):
            raise AuthError("session token already used")
        return SessionGrant(claims["sid"], claims["sub"], dict(claims.get("cfg") or {}))

    def websocket_grant(self, token: str | None, presented_key: str | None) -> SessionGrant:
        new_id = "sess_" + uuid.uuid4().hex[:20]
        if token:
            return self.redeem(token)
        if presented_key:
            return SessionGrant(new_id, self.api_key(presented_key).key_id)
        if self.cfg.anonymous_allowed():
            return SessionGrant(new_id, None)
        raise AuthError("authentication required: ?token=<session token> or an API key")
