"""API keys (hashed at rest) and single-use token ids, in the database (both backends)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect, select, text

from gateway.store import keys as keys_module
from gateway.store.db import Database
from gateway.store.keys import KEY_PREFIX, KeyStore
from gateway.store.models import ApiKey, Assistant, UsedToken

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def store(db: Database) -> KeyStore:
    return KeyStore(db)


def split_key(plaintext: str) -> tuple[str, str]:
    assert plaintext.startswith(KEY_PREFIX)
    key_id, _, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    return key_id, secret


def fields(record: ApiKey | None) -> tuple[object, ...] | None:
    if record is None:
        return None
    return (record.key_id, record.secret_hash, record.name, record.assistant_id, record.tier,
            record.created_at, record.revoked_at)


async def test_create_and_verify(store: KeyStore) -> None:
    record, plaintext = await store.create("kiosk")
    assert isinstance(record, ApiKey)
    assert record.name == "kiosk" and record.revoked_at is None
    assert record.assistant_id is None and record.tier is None  # an admin key
    assert abs(record.created_at - time.time()) < 60
    key_id, secret = split_key(plaintext)
    assert key_id == record.key_id and len(key_id) == 12
    assert len(secret) >= 40  # 256 bits, urlsafe base64
    assert fields(await store.verify(plaintext)) == fields(record)


async def test_scoped_key(db: Database, store: KeyStore) -> None:
    async with db.session() as s:
        s.add(Assistant(id="shop", name="Shop"))
        await s.commit()
    _, plaintext = await store.create("shop key", assistant_id="shop", tier="pro")
    verified = await store.verify(plaintext)
    assert verified is not None
    assert (verified.assistant_id, verified.tier) == ("shop", "pro")


async def test_keys_are_unique(store: KeyStore) -> None:
    made = [await store.create(f"k{i}") for i in range(20)]
    assert len({r.key_id for r, _ in made}) == 20
    assert len({p for _, p in made}) == 20
    for record, plaintext in made:
        assert fields(await store.verify(plaintext)) == fields(record)


async def test_verify_rejects_bad_keys(store: KeyStore) -> None:
    record, plaintext = await store.create("a")
    key_id, secret = split_key(plaintext)
    other_record, other = await store.create("b")
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
        f"{KEY_PREFIX}{key_id}' OR '1'='1_{secret}",
        f"{KEY_PREFIX}{key_id}\x00_{secret}",
        plaintext.upper(),
        plaintext + " ",
    ]:
        assert await store.verify(bad) is None, bad
    assert fields(await store.verify(plaintext)) == fields(record)
    assert fields(await store.verify(other)) == fields(other_record)


async def all_rows_as_text(db: Database) -> str:
    """Every row of every table (FTS shadow tables included), as text."""
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        parts = []
        for table in tables:
            rows = await conn.execute(text(f'SELECT * FROM "{table}"'))
            parts.extend(repr(tuple(row)) for row in rows)
    assert tables
    return "\n".join(parts)


def sqlite_files(db: Database) -> list[Path]:
    main = Path(db.url.split("///", 1)[1])
    return [p for p in main.parent.iterdir() if p.name.startswith(main.name)]


async def test_only_a_hash_is_stored(db: Database, store: KeyStore) -> None:
    _, plaintext = await store.create("secret-holder")
    key_id, secret = split_key(plaintext)
    async with db.session() as s:
        stored = await s.scalar(select(ApiKey.secret_hash).where(ApiKey.key_id == key_id))
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    dump = await all_rows_as_text(db)
    assert key_id in dump and secret not in dump
    if db.is_sqlite:  # and nowhere on disk: database, WAL, shared memory
        files = sqlite_files(db)
        assert len(files) >= 2
        for path in files:
            assert secret.encode() not in path.read_bytes(), path.name
        await db.close()  # checkpoints the WAL into the main file: look again
        for path in sqlite_files(db):
            assert secret.encode() not in path.read_bytes(), path.name


async def test_revoke(store: KeyStore) -> None:
    record, plaintext = await store.create("a")
    _, keep = await store.create("b")
    assert await store.revoke(record.key_id) is True
    assert await store.verify(plaintext) is None
    assert await store.verify(keep) is not None
    assert await store.revoke(record.key_id) is False  # already revoked
    assert await store.revoke("nope") is False
    (revoked,) = [k for k in await store.list() if k.key_id == record.key_id]
    assert revoked.revoked_at is not None and revoked.revoked_at >= revoked.created_at


async def test_list(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await store.list() == []
    clock = itertools.count(1_000_000.0, 10.0)
    monkeypatch.setattr(keys_module, "time", SimpleNamespace(time=lambda: next(clock)))
    made = [(await store.create(name))[0] for name in ("first", "second", "third")]
    await store.revoke(made[1].key_id)
    listed = await store.list()
    assert [k.name for k in listed] == ["first", "second", "third"]
    assert [k.created_at for k in listed] == [1_000_000.0, 1_000_010.0, 1_000_020.0]
    assert fields(listed[0]) == fields(made[0]) and fields(listed[2]) == fields(made[2])
    assert listed[1].revoked_at == 1_000_030.0
    assert all(isinstance(k, ApiKey) for k in listed)


async def test_redeem_is_single_use(store: KeyStore) -> None:
    exp = time.time() + 600
    assert await store.redeem("jti-1", exp) is True
    assert await store.redeem("jti-1", exp) is False
    assert await store.redeem("jti-1", exp + 1000) is False
    assert await store.redeem("jti-2", exp) is True


async def test_concurrent_redeem_lets_exactly_one_win(store: KeyStore) -> None:
    exp = time.time() + 600
    results = await asyncio.gather(*(store.redeem("raced", exp) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]


async def test_persistent_across_reopen(database_url: str) -> None:
    db1 = Database(database_url)
    await db1.migrate()
    s1 = KeyStore(db1)
    record, plaintext = await s1.create("persist")
    revoked, revoked_plain = await s1.create("gone")
    await s1.revoke(revoked.key_id)
    exp = time.time() + 600
    assert await s1.redeem("once", exp) is True
    await db1.close()

    db2 = Database(database_url)
    try:
        await db2.migrate()  # idempotent on an up-to-date schema
        s2 = KeyStore(db2)
        assert fields(await s2.verify(plaintext)) == fields(record)
        assert await s2.verify(revoked_plain) is None
        assert await s2.redeem("once", exp) is False  # still used after a restart
        assert await s2.redeem("twice", exp) is True
        assert {k.name for k in await s2.list()} == {"persist", "gone"}
    finally:
        await db2.close()


async def test_expired_token_ids_are_pruned(db: Database, store: KeyStore) -> None:
    now = time.time()
    await store.redeem("old", now - 3600)
    await store.redeem("fresh", now + 600)
    await store.redeem("trigger", now + 600)  # each redeem prunes ids expired > 60 s ago
    async with db.session() as s:
        assert set(await s.scalars(select(UsedToken.jti))) == {"fresh", "trigger"}
