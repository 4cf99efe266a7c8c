"""Gateway users (OAuth sign-in), registered OAuth clients, and authorization codes.

Passwords are hashed with Argon2id (argon2-cffi, its default parameters); verifying
takes tens of milliseconds and runs in a worker thread. Authorization codes are stored
as a SHA-256 of the code (a 48-character random secret, so a fast hash suffices), and
a code is consumed by one conditional UPDATE, so two racing token requests cannot
both succeed, even across gateway processes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import ClientError

from .db import Database
from .models import OAuthClient, OAuthCode, User

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_USERNAME = 200

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so the answer takes as long either way."""
    return _hasher.hash("not-a-real-password")


class StoreError(ClientError, ValueError):
    """A value the store refuses (duplicate, malformed); the message is safe to show."""


def _storable(value: str | None, max_len: int) -> bool:
    """Worth a lookup: bounded, and printable (PostgreSQL refuses NUL in text)."""
    return value is not None and 0 < len(value) <= max_len and value.isprintable()


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def create_user(db: Database, username: str, password: str) -> User:
    username = username.strip()
    if not 0 < len(username) <= MAX_USERNAME or not username.isprintable():
        raise StoreError(f"username must be 1..{MAX_USERNAME} printable characters")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise StoreError(f"password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters")
    hashed = await asyncio.to_thread(_hasher.hash, password)
    user = User(username=username, password_hash=hashed, created_at=time.time())
    async with db.session() as s:
        s.add(user)
        try:
            await s.commit()
        except IntegrityError:
            raise StoreError(f"user {username!r} exists") from None
    return user


def _verify(hashed: str | None, password: str) -> bool:
    try:
        return _hasher.verify(hashed or _dummy_hash(), password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


async def authenticate(db: Database, username: str, password: str) -> User | None:
    """The user if the password matches; None otherwise (same cost for unknown names)."""
    if not _storable(username, MAX_USERNAME) or len(password) > MAX_PASSWORD:
        return None
    async with db.session() as s:
        record = await s.scalar(select(User).where(User.username == username))
    hashed = record.password_hash if record else None
    ok = await asyncio.to_thread(_verify, hashed, password)
    return record if ok and record is not None else None


def check_redirect_uri(uri: str) -> None:
    """Absolute, no fragment (RFC 6749 §3.1.2); http only for loopback (RFC 8252 §7.3)."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or len(uri) > 2000:
        raise StoreError(f"redirect URI must be absolute, without a fragment: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise StoreError(f"http redirect URIs are only allowed on loopback: {uri!r}")


async def create_client(db: Database, client_id: str, redirect_uris: list[str],
                        name: str = "") -> OAuthClient:
    if not 0 < len(client_id) <= 100 or not client_id.isprintable():
        raise StoreError("client id must be 1..100 printable characters")
    if not redirect_uris:
        raise StoreError("at least one redirect URI is required")
    for uri in redirect_uris:
        check_redirect_uri(uri)
    client = OAuthClient(client_id=client_id, name=name or client_id,
                         redirect_uris=list(redirect_uris), created_at=time.time())
    async with db.session() as s:
        s.add(client)
        try:
            await s.commit()
        except IntegrityError:
            raise StoreError(f"client {client_id!r} exists") from None
    return client


async def get_client(db: Database, client_id: str | None) -> OAuthClient | None:
    if not _storable(client_id, 100):
        return None
    async with db.session() as s:
        return await s.get(OAuthClient, client_id)


@dataclass(frozen=True, slots=True)
class NewCode:
    """An authorization code about to be stored (the plaintext goes to the client only)."""

    code: str
    client_id: str
    user_id: str
    assistant_id: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: str
    scope: str


async def save_code(db: Database, new: NewCode, ttl_s: float) -> None:
    now = time.time()
    async with db.session() as s:
        # Keep the table small: codes long past their expiry are of no use to anyone.
        await s.execute(delete(OAuthCode).where(OAuthCode.expires_at < now - 3600))
        s.add(OAuthCode(
            code_hash=code_hash(new.code), client_id=new.client_id, user_id=new.user_id,
            assistant_id=new.assistant_id, redirect_uri=new.redirect_uri,
            code_challenge=new.code_challenge, code_challenge_method=new.code_challenge_method,
            scope=new.scope, expires_at=now + ttl_s,
        ))
        await s.commit()


async def get_code(db: Database, code: str | None) -> OAuthCode | None:
    if not code or len(code) > 200:
        return None
    async with db.session() as s:
        return await s.get(OAuthCode, code_hash(code))


async def consume_code(db: Database, hashed: str) -> bool:
    """Mark a code used; False if it was used (or expired) meanwhile."""
    now = time.time()
    async with db.session() as s:
        result = await s.execute(
            update(OAuthCode)
            .where(OAuthCode.code_hash == hashed, OAuthCode.used_at.is_(None),
                   OAuthCode.expires_at > now)
            .values(used_at=now)
        )
        await s.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
