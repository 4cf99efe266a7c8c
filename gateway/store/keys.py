"""API keys (stored hashed) and single-use session tokens, in a SQLite file in the data dir.

Keys are 256-bit random secrets, so one SHA-256 is the right hash (a slow password
hash adds nothing for such entropy). The key is shown once at creation and never
stored. Session tokens are JWTs (PyJWT, HS256); their ids are recorded when redeemed,
so a token opens one session only, across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS used_tokens (
    jti TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
"""
KEY_PREFIX = "gw_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    created_at: float
    revoked_at: float | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key; returns the record and the plaintext key (shown once)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys(key_id, secret_hash, name, created_at) VALUES (?,?,?,?)",
                (key_id, _hash(secret), name, now),
            )
        return ApiKey(key_id, name, now, None), f"{KEY_PREFIX}{key_id}_{secret}"

    def verify(self, presented: str) -> ApiKey | None:
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
        if not sep or not key_id or not secret:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT secret_hash, name, created_at, revoked_at FROM api_keys WHERE key_id=?",
                (key_id,),
            ).fetchone()
        if row is None or row[3] is not None:
            _hash(secret)  # same work either way: no timing hint that the id exists
            return None
        if not hmac.compare_digest(row[0], _hash(secret)):
            return None
        return ApiKey(key_id, row[1], row[2], row[3])

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, name, created_at, revoked_at FROM api_keys ORDER BY created_at"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE key_id=? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
        return cur.rowcount > 0

    def redeem(self, jti: str, expires_at: float) -> bool:
        """Record a token as used; False if it was used before."""
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM used_tokens WHERE expires_at < ?", (now - 60,))
            try:
                self._db.execute(
                    "INSERT INTO used_tokens(jti, expires_at) VALUES (?,?)", (jti, expires_at)
                )
            except sqlite3.IntegrityError:
                return False
        return True
