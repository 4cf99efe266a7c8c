"""API keys (hashed at rest) and single-use token ids, in a SQLite file."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import keys as keys_module
from gateway.store.keys import KEY_PREFIX, ApiKey, KeyStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "keys.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[KeyStore]:
    s = KeyStore(db_path)
    yield s
    s.close()


def split_key(plaintext: str) -> tuple[str, str]:
    assert plaintext.startswith(KEY_PREFIX)
    key_id, _, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    return key_id, secret


def test_create_and_verify(store: KeyStore, db_path: Path) -> None:
    assert db_path.exists()  # parent directories are created
    record, plaintext = store.create("kiosk")
    assert isinstance(record, ApiKey)
    assert record.name == "kiosk" and record.revoked_at is None
    assert abs(record.created_at - time.time()) < 60
    key_id, secret = split_key(plaintext)
    assert key_id == record.key_id and len(key_id) == 12
    assert len(secret) >= 40  # 256 bits, urlsafe base64
    assert store.verify(plaintext) == record


def test_keys_are_unique(store: KeyStore) -> None:
    made = [store.create(f"k{i}") for i in range(20)]
    assert len({r.key_id for r, _ in made}) == 20
    assert len({p for _, p in made}) == 20
    for record, plaintext in made:
        assert store.verify(plaintext) == record


def test_verify_rejects_bad_keys(store: KeyStore) -> None:
    record, plaintext = store.create("a")
    key_id, secret = split_key(plaintext)
    other_record, other = store.create("b")
    _, other_secret = split_key(other)
    for bad in [
        "",
        secret,
        plaintext[len(KEY_PREFIX) :],
        "xx_" + plaintext[len(KEY_PREFIX) :],
        f"{KEY_PREFIX}{key_id}",
        f"{KEY_PREFIX}{key_id}_",
        f"{KEY_PREFIX}_{secret}",
        f"{KEY_PREFIX}{key_id}_{secret}x",
        f"{KEY_PREFIX}{key_id}_{secret[:-1]}",
        f"{KEY_PREFIX}{key_id}_{other_secret}",  # another key's secret
        f"{KEY_PREFIX}{'0' * 12}_{secret}",  # unknown id
        plaintext.upper(),
        plaintext + " ",
    ]:
        assert store.verify(bad) is None, bad
    assert store.verify(plaintext) == record
    assert store.verify(other) == other_record


def test_only_a_hash_is_stored(store: KeyStore, db_path: Path) -> None:
    _, plaintext = store.create("secret-holder")
    key_id, secret = split_key(plaintext)
    row = (
        sqlite3.connect(db_path)
        .execute("SELECT secret_hash FROM api_keys WHERE key_id=?", (key_id,))
        .fetchone()
    )
    assert row == (hashlib.sha256(secret.encode()).hexdigest(),)
    # neither the secret nor the whole key is anywhere on disk (database, WAL, journal)
    files = [p for p in db_path.parent.iterdir() if p.is_file()]
    assert files
    for path in files:
        raw = path.read_bytes()
        assert secret.encode() not in raw, path.name
        assert plaintext.encode() not in raw, path.name
    store.close()  # checkpoint the WAL into the main file, then look again
    for path in [p for p in db_path.parent.iterdir() if p.is_file()]:
        assert secret.encode() not in path.read_bytes(), path.name


def test_revoke(store: KeyStore) -> None:
    record, plaintext = store.create("a")
    _, keep = store.create("b")
    assert store.revoke(record.key_id) is True
    assert store.verify(plaintext) is None
    assert store.verify(keep) is not None
    assert store.revoke(record.key_id) is False  # already revoked
    assert store.revoke("nope") is False
    (revoked,) = [k for k in store.list() if k.key_id == record.key_id]
    assert revoked.revoked_at is not None and revoked.revoked_at >= revoked.created_at


def test_list(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.list() == []
    clock = itertools.count(1_000_000.0, 10.0)
    monkeypatch.setattr(keys_module.time, "time", lambda: next(clock))
    made = [store.create(name)[0] for name in ("first", "second", "third")]
    store.revoke(made[1].key_id)
    listed = store.list()
    assert [k.name for k in listed] == ["first", "second", "third"]
    assert [k.created_at for k in listed] == [1_000_000.0, 1_000_010.0, 1_000_020.0]
    assert listed[0] == made[0] and listed[2] == made[2]
    assert listed[1].revoked_at == 1_000_030.0
    assert all(isinstance(k, ApiKey) for k in listed)


def test_redeem_is_single_use(store: KeyStore) -> None:
    exp = time.time() + 600
    assert store.redeem("jti-1", exp) is True
    assert store.redeem("jti-1", exp) is False
    assert store.redeem("jti-1", exp + 1000) is False
    assert store.redeem("jti-2", exp) is True


def test_persistent_across_reopen(db_path: Path) -> None:
    s1 = KeyStore(db_path)
    record, plaintext = s1.create("persist")
    revoked, revoked_plain = s1.create("gone")
    s1.revoke(revoked.key_id)
    exp = time.time() + 600
    assert s1.redeem("once", exp) is True
    s1.close()

    s2 = KeyStore(db_path)
    try:
        assert s2.verify(plaintext) == record
        assert s2.verify(revoked_plain) is None
        assert s2.redeem("once", exp) is False  # still used after a restart
        assert s2.redeem("twice", exp) is True
        assert {k.name for k in s2.list()} == {"persist", "gone"}
    finally:
        s2.close()


def test_expired_token_ids_are_pruned(store: KeyStore, db_path: Path) -> None:
    now = time.time()
    store.redeem("old", now - 3600)
    store.redeem("fresh", now + 600)
    store.redeem("trigger", now + 600)  # each redeem prunes ids expired > 60 s ago
    rows = {r[0] for r in sqlite3.connect(db_path).execute("SELECT jti FROM used_tokens")}
    assert rows == {"fresh", "trigger"}


def test_str_path(tmp_path: Path) -> None:
    s = KeyStore(str(tmp_path / "k.db"))
    try:
        _, plaintext = s.create("x")
        assert s.verify(plaintext) is not None
    finally:
        s.close()
