"""API keys (stored hashed) and single-use token ids, in the database.

Keys are 256-bit random secrets, so one SHA-256 is the right hash (a slow password
hash adds nothing for such entropy). The key is shown once at creation and never
stored. Redeemed token ids are recorded so a token opens one session only, across
restarts and across gateway processes sharing the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .db import Database
from .models import ApiKey, UsedToken

KEY_PREFIX = "gw_"
_KEY_ID = re.compile(r"[0-9a-f]{12}")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, name: str, *, assistant_id: str | None = None, tier: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; returns the record and the plaintext key (shown once)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(key_id=key_id, secret_hash=_hash(secret), name=name,
                        assistant_id=assistant_id, tier=tier, created_at=time.time())
        async with self.db.session() as s:
            s.add(record)
            await s.commit()
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    async def verify(self, presented: str) -> ApiKey | None:
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
        # Only well-formed ids reach the database (PostgreSQL rejects NUL bytes).
        if not sep or not _KEY_ID.fullmatch(key_id) or not secret:
            return None
        async with self.db.session() as s:
            record = await s.get(ApiKey, key_id)
        if record is None or record.revoked_at is not None:
            _hash(secret)  # same work either way: no timing hint that the id exists
            return None
        if not hmac.compare_digest(record.secret_hash, _hash(secret)):
            return None
        return record

    async def list(self) -> list[ApiKey]:
        async with self.db.session() as s:
            rows = await s.scalars(select(ApiKey).order_by(ApiKey.created_at))
            return list(rows)

    async def revoke(self, key_id: str) -> bool:
        async with self.db.session() as s:
            result = await s.execute(
                update(ApiKey)
                .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            await s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def redeem(self, jti: str, expires_at: float) -> bool:
        """Record a token id as used; False if it was used before."""
        async with self.db.session() as s:
            await s.execute(delete(UsedToken).where(UsedToken.expires_at < time.time() - 60))
            s.add(UsedToken(jti=jti, expires_at=expires_at))
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()
                return False
        return True
