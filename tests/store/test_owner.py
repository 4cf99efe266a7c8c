"""Ownership (``Owner``): every conversation lookup of the store, on both backends.

A conversation belongs to an assistant and, where there is one, a user. An owner with a
user sees that user's conversations of its assistant; a tenant (the assistant's own API
key, naming no user) sees all of the assistant's; an owner with neither sees none.
"""

from __future__ import annotations

import pytest

from gateway.store import conversations as store
from gateway.store.conversations import Owner
from gateway.store.db import Database
from gateway.store.models import Conversation
from gateway.store.voice_log import VoiceLog

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = Owner("default", "alice")
BOB = Owner("default", "bob")
TENANT = Owner("default", tenant=True)
OTHER_TENANT = Owner("other", tenant=True)
NOBODY = Owner("default")
# (conversation id, assistant, user, session id, a message)
ROWS = [("conv_alice", "default", "alice", "sess-a", "My card PIN is 4242"),
        ("conv_anon", "default", None, "sess-n", "an anonymous question about pins"),
        ("conv_other", "other", "alice", "sess-a", "another assistant's pin talk")]


async def fill(db: Database) -> None:
    async with db.session() as s:
        for cid, assistant, user, session, text in ROWS:
            conv = await store.ensure_conversation(s, cid, assistant, user_id=user,
                                                   session_id=session, title=text,
                                                   source="chat")
            await store.add_messages(s, conv, [("user", text, {}), ("assistant", "ok", {})])
        await s.commit()


async def test_the_rule() -> None:
    alice = Conversation(id="c", assistant_id="default", user_id="alice")
    tenants = Conversation(id="t", assistant_id="default", user_id=None)
    assert ALICE.may_use(alice) and TENANT.may_use(alice) and TENANT.may_use(tenants)
    assert not BOB.may_use(alice) and not ALICE.may_use(tenants)
    assert not OTHER_TENANT.may_use(alice) and not Owner("other", "alice").may_use(alice)
    assert not NOBODY.may_use(alice) and not NOBODY.may_use(tenants)
    assert not NOBODY.sees_any and TENANT.sees_any and BOB.sees_any


async def test_every_lookup_applies_it(db: Database) -> None:
    await fill(db)
    async with db.session() as s:
        async def ids(owner: Owner) -> dict[str, object]:
            listed, total = await store.list_conversations(s, owner, 50, 0)
            hits = await store.search_owned(s, owner, "pin", conversation_id=None, limit=50)
            owned = [c for c, *_ in ROWS if await store.owned(s, owner, c) is not None]
            return {
                "owned": sorted(owned),
                "listed": sorted(r.conversation.id for r in listed), "total": total,
                "session": [(await store.by_session(s, owner, sess) or Conversation()).id
                            for sess in ("sess-a", "sess-n")],
                "by_id": sorted(await store.conversations_by_id(s, owner,
                                                                [c for c, *_ in ROWS])),
                "search": sorted({h.conversation_id for h in hits}),
            }

        assert await ids(ALICE) == {
            "owned": ["conv_alice"], "listed": ["conv_alice"], "total": 1,
            "session": ["conv_alice", None], "by_id": ["conv_alice"],
            "search": ["conv_alice"]}
        both = ["conv_alice", "conv_anon"]
        assert await ids(TENANT) == {"owned": both, "listed": both, "total": 2,
                                     "session": ["conv_alice", "conv_anon"], "by_id": both,
                                     "search": both}
        none = {"owned": [], "listed": [], "total": 0, "session": [None, None],
                "by_id": [], "search": []}
        assert await ids(BOB) == none
        assert await ids(NOBODY) == none
        assert (await ids(OTHER_TENANT))["owned"] == ["conv_other"]


async def test_a_client_session_id_of_another_is_not_taken(db: Database) -> None:
    await fill(db)
    async with db.session() as s:
        found, usable = await store.by_client_session(s, ALICE, "sess-a")
        assert found is not None and found.id == "conv_alice" and usable == "sess-a"
        assert await store.by_client_session(s, BOB, "sess-a") == (None, None)
        assert await store.by_client_session(s, NOBODY, "sess-n") == (None, None)
        assert await store.by_client_session(s, BOB, "sess-new") == (None, "sess-new")
        # Per assistant: "other" has its own sess-a (alice's there), not "default"'s.
        assert await store.by_client_session(s, Owner("other", "bob"), "sess-n") == (
            None, "sess-n")


async def test_writes_never_land_in_a_foreign_conversation(db: Database) -> None:
    await fill(db)
    async with db.session() as s:
        for owner in (BOB, NOBODY, OTHER_TENANT):
            with pytest.raises(LookupError):
                await store.create_or_continue(s, owner, "conv_alice", session_id=None,
                                               title="x", source="chat")
        mine = await store.create_or_continue(s, ALICE, "conv_alice", session_id=None,
                                              title="x", source="chat")
        fresh = await store.create_or_continue(s, NOBODY, "conv_new", session_id=None,
                                               title="hello", source="chat")
        assert mine.id == "conv_alice" and (fresh.assistant_id, fresh.user_id) == (
            "default", None)


async def test_voice_history_only_for_its_owner(db: Database) -> None:
    await fill(db)
    log = VoiceLog(db)
    for owner in (BOB, NOBODY, OTHER_TENANT, Owner("other", "alice")):
        assert await log.history(owner, "conv_alice", 10) is None
    assert await log.history(ALICE, "conv_unknown", 10) is None
    history = await log.history(ALICE, "conv_alice", 10)
    assert history is not None and [m.content for m in history] == [
        "My card PIN is 4242", "ok"]
