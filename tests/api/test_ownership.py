"""Ownership everywhere (issue 9, item 3): no caller resumes, appends to, reads, searches,
rates or deletes a conversation of another assistant or another user.

The reproduction: user alice tells the assistant "My card PIN is 4242, remember it."
Then other callers name her conversation (its id, or her ``sessionId``) — an API key
acting for user bob, a key of another assistant, an OAuth user, anonymous callers, and
voice sessions on session tokens minted for bob or for no user. The LLM is a local
OpenAI-format server that records every request: none of theirs may carry alice's
words, each of them gets a new conversation (its id in the answer or in
``session_started``), and alice's conversation gets none of their turns. Alice herself
(her key + user id, her session token) still continues it. Over HTTP the same callers
get 404 for her conversation, as for an unknown one.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_helpers import add_assistant, assert_error, client, make_key, post_sse, wav_bytes
from test_oauth import CLIENT, PASSWORD, REDIRECT, USER, access_token
from voice_client import VoiceClient

from gateway.providers.null import NullTTS
from gateway.store.db import Database
from gateway.store.users import create_client, create_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
from openai_server import LocalOpenAIServer

PIN = "My card PIN is 4242, remember it."
SECRET = "4242"
QUESTION = "What is my PIN?"


@pytest.fixture(scope="module")
def llm() -> Any:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
async def world(gateway_factory: Any, llm: LocalOpenAIServer) -> dict[str, Any]:
    """A gateway on the recording LLM (anonymous allowed: loopback), a second assistant,
    keys, an OAuth user, and alice's conversation with her PIN in it."""
    llm.reset()
    gw = gateway_factory(llm={"provider": "openai", "base_url": llm.base_url,
                              "api_key": llm.api_key, "first_token_timeout_s": 10,
                              "total_timeout_s": 30},
                         providers={"tts": NullTTS()})  # a short tone: quick voice turns
    await add_assistant(gw, "other", allow_anonymous=True)
    db = Database.from_config(gw.cfg)
    try:
        await create_user(db, USER, PASSWORD)
        await create_client(db, CLIENT, [REDIRECT], "Mobile app")
    finally:
        await db.close()
    w = {"gw": gw, "key": await make_key(gw), "default_key": await make_key(gw, "default"),
         "other_key": await make_key(gw, "other"),
         "oauth": await access_token(gw, assistant="default")}
    async with client(gw, w["default_key"]) as http:
        resp = await http.post("/api/chat", json={"message": PIN, "user_id": "alice",
                                                  "sessionId": "alice-session"})
    assert resp.status_code == 200, resp.text
    w["conv"] = resp.json()["conversation_id"]
    assert SECRET in str(llm.last.messages)
    return w


def seen_since(llm: LocalOpenAIServer, n: int) -> str:
    """Everything the LLM was sent after its n-th request."""
    return " ".join(str(r.messages) for r in llm.requests[n:])


async def messages_of(w: dict[str, Any], conv: str) -> list[str]:
    async with client(w["gw"], w["default_key"]) as http:
        resp = await http.get(f"/api/conversation/{conv}/messages", params={"limit": 200})
    assert resp.status_code == 200, resp.text
    return [m["content"] for m in resp.json()["messages"]]


async def test_chat_never_continues_another_callers_conversation(world, llm) -> None:
    w, conv = world, world["conv"]
    attempts: list[tuple[str, str | None, dict[str, Any]]] = [
        ("key acting for bob", w["default_key"], {"user_id": "bob", "conversation_id": conv}),
        ("key acting for bob, her sessionId", w["key"],
         {"user_id": "bob", "sessionId": "alice-session"}),
        ("key acting for bob, streamed", w["key"],
         {"user_id": "bob", "conversation_id": conv, "stream": True}),
        ("another assistant's key", w["other_key"], {"conversation_id": conv}),
        ("another assistant's key, her sessionId", w["other_key"],
         {"sessionId": "alice-session"}),
        ("OAuth user", w["oauth"], {"conversation_id": conv}),
        ("OAuth user naming alice", w["oauth"], {"conversation_id": conv, "user_id": "alice"}),
        ("anonymous", None, {"conversation_id": conv, "user_id": "alice"}),
        ("anonymous, her sessionId", None, {"sessionId": "alice-session"}),
    ]
    for who, credential, body in attempts:
        before = len(llm.requests)
        async with client(w["gw"], credential) as http:
            if body.get("stream"):
                resp, events = await post_sse(http, "/api/chat",
                                              json={"message": QUESTION, **body})
                got = events[0][1]["conversation_id"] if events else None
                assert [n for n, _ in events][-2:] == ["agent_response", "stream_end"], who
            else:
                resp = await http.post("/api/chat", json={"message": QUESTION, **body})
                got = resp.json().get("conversation_id")
                # Nor does it take her sessionId (her later lookups by it find hers only);
                # another assistant's session ids are its own.
                if credential != w["other_key"]:
                    assert resp.json().get("sessionId") != "alice-session", who
        assert resp.status_code == 200, (who, resp.text)
        assert got and got != conv, who
        assert len(llm.requests) > before and SECRET not in seen_since(llm, before), who
    # Only alice's exchange is in her conversation; she (and her tenant) continue it.
    assert await messages_of(w, conv) == [PIN, f"Echo: {PIN}"]
    for credential, body in ((w["default_key"], {"user_id": "alice"}), (w["key"], {})):
        before = len(llm.requests)
        async with client(w["gw"], credential) as http:
            resp = await http.post("/api/chat", json={"message": QUESTION,
                                                      "conversation_id": conv, **body})
        assert resp.json()["conversation_id"] == conv
        assert SECRET in seen_since(llm, before)
    async with client(w["gw"], w["default_key"]) as http:  # and by her sessionId
        resp = await http.post("/api/chat", json={"message": QUESTION, "user_id": "alice",
                                                  "sessionId": "alice-session"})
    assert resp.json()["conversation_id"] == conv
    assert len(await messages_of(w, conv)) == 8


@pytest.mark.slow
async def test_voice_chat_upload_starts_a_new_conversation(world, llm) -> None:
    w = world
    before = len(llm.requests)
    async with client(w["gw"], w["default_key"]) as http:
        resp, events = await post_sse(
            http, "/api/chat/voice", data={"conversation_id": w["conv"], "user_id": "bob"},
            files={"audio": ("q.wav", wav_bytes("what_is_the_gateway.wav"), "audio/wav")})
    assert resp.status_code == 200
    started = dict(events)["stream_start"]
    assert started["conversation_id"] != w["conv"]
    assert SECRET not in seen_since(llm, before)
    assert await messages_of(w, w["conv"]) == [PIN, f"Echo: {PIN}"]


async def token_for(w: dict[str, Any], **body: Any) -> str:
    async with client(w["gw"], w["default_key"]) as http:
        resp = await http.post("/api/get-access-token", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


async def voice_turn(w: dict[str, Any], llm: LocalOpenAIServer, query: str,
                     headers: dict[str, str] | None = None) -> tuple[str, str]:
    """A v1 session naming alice's conversation, one typed turn: (the conversation the
    session used, what the LLM was sent)."""
    before = len(llm.requests)
    url = w["gw"].ws_url + query
    voice = await VoiceClient.connect(url, additional_headers=headers or {})
    try:
        await voice.send_json({"type": "start", "conversation_id": w["conv"]})
        started = await voice.wait_for("session_started", timeout=10)
        await voice.send_json({"type": "text", "text": QUESTION})
        await voice.wait_for("stream_end", timeout=60)
    finally:
        await voice.close()
    return started["conversation_id"], seen_since(llm, before)


async def test_voice_sessions_resume_only_their_own(world, llm) -> None:
    w, conv = world, world["conv"]
    attempts = [
        ("token minted for bob", f"?token={await token_for(w, user_id='bob')}", None),
        ("token minted for no user", f"?token={await token_for(w)}", None),
        ("anonymous", "", None),
        ("another assistant's key", "", {"x-api-key": w["other_key"]}),
        ("OAuth user", f"?access_token={w['oauth']}", None),
    ]
    for who, query, headers in attempts:
        used, seen = await voice_turn(w, llm, query, headers)
        assert used != conv and used.startswith("conv_"), who
        assert QUESTION in seen and SECRET not in seen, who
        if who == "token minted for bob":
            bobs = used
    # bob's new conversation is stored as his: he reads it, alice does not.
    async with client(w["gw"], w["default_key"]) as http:
        for _ in range(100):
            resp = await http.get(f"/api/conversation/{bobs}/messages",
                                  params={"user_id": "bob"})
            if resp.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert [m["content"] for m in resp.json()["messages"]][0] == QUESTION
        assert_error(await http.get(f"/api/conversation/{bobs}/messages",
                                    params={"user_id": "alice"}), 404, "NOT_FOUND")
    # Her own session token resumes it, with her history, and its turn is stored there.
    used, seen = await voice_turn(w, llm, f"?token={await token_for(w, user_id='alice')}")
    assert used == conv and SECRET in seen
    for _ in range(100):  # voice turns are written in the background
        stored = await messages_of(w, conv)
        if len(stored) > 2:
            break
        await asyncio.sleep(0.05)
    assert stored[:3] == [PIN, f"Echo: {PIN}", QUESTION]
    assert len(stored) == 4  # none of the other sessions' turns


async def test_http_routes_hide_foreign_conversations(world) -> None:
    w, conv = world, world["conv"]
    outsiders: list[tuple[str, str | None, dict[str, str]]] = [
        ("key acting for bob", w["default_key"], {"user_id": "bob"}),
        ("another assistant's key", w["other_key"], {}),
        ("OAuth user", w["oauth"], {}),
        ("anonymous", None, {}),
    ]
    for who, credential, user in outsiders:
        async with client(w["gw"], credential) as http:
            for resp in (
                await http.get(f"/api/conversation/{conv}/messages", params=user),
                await http.get(f"/api/feedback/analyze/{conv}", params=user),
                await http.post("/api/feedback", json={"conversation_id": conv,
                                                       "feedback_type": "thumbs_down", **user}),
                await http.post(f"/api/conversation/{conv}/template", params=user,
                                json={"template_name": "standard_assistant"}),
                await http.delete(f"/api/conversation/{conv}", params=user),
            ):
                assert_error(resp, 404, "NOT_FOUND")
            for path in ("/api/search/messages", "/api/search/conversations"):
                found = (await http.post(path, json={"query": "card PIN", **user})).json()
                assert conv not in {r["conversation_id"] for r in found["results"]}, who
            listed = (await http.get("/api/conversations", params=user)).json()
            assert conv not in {c["id"] for c in listed["conversations"]}, who
    assert await messages_of(w, conv) == [PIN, f"Echo: {PIN}"]
    # The owner: her key + user id, and the assistant's key naming no user.
    async with client(w["gw"], w["default_key"]) as http:
        mine = {"user_id": "alice"}
        assert (await http.get(f"/api/conversation/{conv}/messages", params=mine)
                ).status_code == 200
        assert (await http.post("/api/feedback", json={
            "conversation_id": conv, "feedback_type": "thumbs_up", **mine})).status_code == 200
        found = (await http.post("/api/search/messages", json={"query": "card PIN", **mine}
                                 )).json()
        assert {r["conversation_id"] for r in found["results"]} == {conv}
        listed = (await http.get("/api/conversations")).json()
        assert conv in {c["id"] for c in listed["conversations"]}
        assert (await http.delete(f"/api/conversation/{conv}", params=mine)).status_code == 200
        assert_error(await http.get(f"/api/conversation/{conv}/messages"), 404, "NOT_FOUND")


async def test_oauth_users_conversations_are_theirs(world) -> None:
    w = world
    async with client(w["gw"], w["oauth"]) as http:
        mine = (await http.post("/api/chat", json={"message": "A note for me only"})).json()
        conv = mine["conversation_id"]
        assert (await http.get(f"/api/conversation/{conv}/messages")).status_code == 200
        listed = (await http.get("/api/conversations", params={"user_id": "alice"})).json()
        assert [c["id"] for c in listed["conversations"]] == [conv]  # held to their own
        again = (await http.post("/api/chat", json={"message": "more",
                                                    "conversation_id": conv})).json()
        assert again["conversation_id"] == conv
        # A session token the OAuth user mints acts for them: it resumes their own.
        minted = (await http.post("/api/get-access-token", json={"user_id": "bob"})).json()
    voice = await VoiceClient.connect(f"{w['gw'].ws_url}?token={minted['token']}")
    try:
        await voice.send_json({"type": "start", "conversation_id": conv})
        assert (await voice.wait_for("session_started", timeout=10))["conversation_id"] == conv
    finally:
        await voice.close()
    async with client(w["gw"], w["default_key"]) as http:
        assert_error(await http.get(f"/api/conversation/{conv}/messages",
                                    params={"user_id": "bob"}), 404, "NOT_FOUND")
        assert (await http.get(f"/api/conversation/{conv}/messages")).status_code == 200
    async with client(w["gw"]) as anonymous:
        assert_error(await anonymous.get(f"/api/conversation/{conv}/messages"), 404,
                     "NOT_FOUND")
    async with httpx.AsyncClient(base_url=w["gw"].base) as http:  # the conversation log
        first = await http.post("/api/conversations/log", json={
            "sessionId": "kiosk-1", "messages": [{"role": "user", "content": "hi"}]})
        second = await http.post("/api/conversations/log", json={
            "sessionId": "kiosk-1", "messages": [{"role": "user", "content": "again"}]})
    # Anonymous loggers cannot add to a log by naming its sessionId: each is its own.
    assert first.json()["conversationId"] != second.json()["conversationId"]
