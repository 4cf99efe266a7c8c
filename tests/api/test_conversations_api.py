"""Conversations, messages, search, feedback, templates and the conversation log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from chat_helpers import ISO_UTC, add_assistant, assert_error, client, make_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
from openai_server import LocalOpenAIServer

SEED_LOG = {
    "sessionId": "session-123",
    "messages": [{"role": "user", "content": "Hello"},
                 {"role": "assistant", "content": "Hi there!"}],
    "metadata": {"duration": 180, "source": "web"},
}
PYTHON = [
    ("How do I write a function in Python?",
     "To write a function in Python, you use the def keyword followed by the name."),
    ("I need help with pandas data frames in Python",
     "A data frame is a table; pandas reads CSV files into one with read_csv."),
    ("Travel recommendations for Lisbon",
     "Visit the Alfama district and take tram 28 up the hill."),
]


async def log(http, session: str, user: str, reply: str, **extra) -> str:
    resp = await http.post("/api/conversations/log", json={
        "sessionId": session, "messages": [{"role": "user", "content": user},
                                           {"role": "assistant", "content": reply}], **extra})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["conversationId"])


async def test_conversation_log_seed_example(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        resp = await http.post("/api/conversations/log", json=SEED_LOG)
        assert resp.status_code == 200
        body = resp.json()
        assert body["success"] is True and set(body) == {"success", "conversationId"}
        again = await http.post("/api/conversations/log", json={
            "sessionId": "session-123", "messages": [{"role": "user", "content": "Bye"}]})
        assert again.json()["conversationId"] == body["conversationId"]
        msgs = (await http.get(f"/api/conversation/{body['conversationId']}/messages")).json()
        assert [m["content"] for m in msgs["messages"]] == ["Hello", "Hi there!", "Bye"]
        assert_error(await http.post("/api/conversations/log", json={
            "messages": [{"role": "wizard", "content": "x"}]}), 400, "INVALID_REQUEST")
        assert_error(await http.post("/api/conversations/log", json={
            "messages": [{"role": "user", "content": "x"}] * 501}), 400, "INVALID_REQUEST")


async def test_list_and_paginate(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        made = [await log(http, f"s{i}", f"Question number {i}", "Answer", user_id="user123")
                for i in range(5)]
        await log(http, "other", "Someone else", "Answer", user_id="user456")
        page = (await http.get("/api/conversations",
                               params={"user_id": "user123", "limit": 2})).json()
        assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
        seen = [c["id"] for c in page["conversations"]]
        rest = (await http.get("/api/conversations", params={
            "user_id": "user123", "limit": 10, "offset": 2})).json()
        seen += [c["id"] for c in rest["conversations"]]
        everyone = (await http.get("/api/conversations")).json()
        assert {c["transport"] for c in everyone["conversations"]} == {"http"}
        assert_error(await http.get("/api/conversations", params={"limit": 0}), 400,
                     "INVALID_REQUEST")
        assert_error(await http.get("/api/conversations", params={"limit": 101}), 400,
                     "INVALID_REQUEST")
        assert_error(await http.get("/api/conversations", params={"user_id": "a\x00"}), 400,
                     "INVALID_REQUEST")
        assert_error(await http.get("/api/conversation/a%00b/messages"), 400,
                     "INVALID_REQUEST")
    assert sorted(seen) == sorted(made) and len(set(seen)) == 5
    assert seen == list(reversed(made))  # most recently active first
    assert everyone["total"] == 6 and everyone["limit"] == 10
    for conv in page["conversations"]:
        assert set(conv) >= {"id", "title", "created_at", "updated_at", "message_count"}
        assert ISO_UTC.match(conv["created_at"]) and ISO_UTC.match(conv["updated_at"])
        assert conv["message_count"] == 2 and conv["title"].startswith("Question number")


async def test_messages_pagination_and_delete(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        conv = await log(http, "long", "first", "second")
        await http.post("/api/conversations/log", json={
            "sessionId": "long", "messages": [{"role": "user", "content": f"m{i}"}
                                              for i in range(8)]})
        page = (await http.get(f"/api/conversation/{conv}/messages",
                               params={"limit": 3, "offset": 1})).json()
        assert page["total"] == 10 and page["limit"] == 3 and page["offset"] == 1
        assert page["conversation_id"] == conv and page["title"] == "first"
        assert [m["content"] for m in page["messages"]] == ["second", "m0", "m1"]
        for m in page["messages"]:
            assert {"id", "role", "content", "created_at"} <= set(m)
            assert ISO_UTC.match(m["created_at"])
        default = (await http.get(f"/api/conversation/{conv}/messages")).json()
        assert default["limit"] == 50 and len(default["messages"]) == 10
        deleted = await http.delete(f"/api/conversation/{conv}")
        assert deleted.json() == {"status": "success",
                                  "message": "Conversation deleted successfully"}
        assert_error(await http.get(f"/api/conversation/{conv}/messages"), 404, "NOT_FOUND")
        assert_error(await http.delete(f"/api/conversation/{conv}"), 404, "NOT_FOUND")
        hits = (await http.post("/api/search/messages", json={"query": "m0"})).json()
        assert hits["results"] == []


async def test_search(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        ids = [await log(http, f"py{i}", q, a, user_id="user123")
               for i, (q, a) in enumerate(PYTHON)]
        for i, topic in enumerate(("cooking pasta", "gardening tips", "car repair",
                                   "birthday ideas", "weather today", "music theory")):
            await log(http, f"bg{i}", f"Tell me about {topic}", "Sure, here you go.",
                      user_id="user123")
        found = (await http.post("/api/search/conversations", json={
            "query": "python programming", "user_id": "user123", "limit": 10})).json()
        msgs = (await http.post("/api/search/messages", json={
            "query": "python function examples", "user_id": "user123", "limit": 10})).json()
        only = (await http.post("/api/search/messages", json={
            "query": "python", "conversation_id": ids[1]})).json()
        nobody = (await http.post("/api/search/messages", json={
            "query": "python", "user_id": "someone-else"})).json()
        assert_error(await http.post("/api/search/messages", json={"query": ""}), 400,
                     "INVALID_REQUEST")
    hits = found["results"]
    assert {h["conversation_id"] for h in hits} == set(ids[:2])
    for h in hits:
        assert set(h) == {"conversation_id", "title", "created_at", "updated_at",
                          "similarity_score", "snippet"}
        assert 0 < h["similarity_score"] <= 1 and "ython" in h["snippet"]
    scores = [h["similarity_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    top = msgs["results"][0]
    assert top["conversation_id"] == ids[0] and "function" in top["content"]
    assert set(top) == {"message_id", "conversation_id", "role", "content", "created_at",
                        "similarity_score"}
    assert {r["conversation_id"] for r in only["results"]} == {ids[1]}
    assert nobody["results"] == []


async def test_feedback_and_analysis(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        chat = (await http.post("/api/chat", json={"message": "What is the gateway?",
                                                   "user_id": "user123"})).json()
        conv, msg = chat["conversation_id"], chat["message_id"]
        seed = {"conversation_id": conv, "message_id": msg, "feedback_type": "thumbs_up",
                "feedback_value": 1, "comment": "Great response!", "user_id": "user123"}
        first = await http.post("/api/feedback", json=seed)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "success" and first.json()["feedback_id"]
        await http.post("/api/feedback", json={**seed, "feedback_type": "thumbs_down",
                                               "feedback_value": -1, "comment": None})
        await http.post("/api/feedback", json={"conversation_id": conv,
                                               "feedback_type": "rating", "feedback_value": 4})
        analysis = (await http.get(f"/api/feedback/analyze/{conv}")).json()
        assert_error(await http.post("/api/feedback", json={**seed, "conversation_id": "x"}),
                     404, "NOT_FOUND")
        assert_error(await http.post("/api/feedback", json={**seed, "message_id": "msg_x"}),
                     404, "NOT_FOUND")
        assert_error(await http.post("/api/feedback", json={"conversation_id": conv}), 400,
                     "INVALID_REQUEST")
        assert_error(await http.get("/api/feedback/analyze/conv_nope"), 404, "NOT_FOUND")
    assert analysis["conversation_id"] == conv
    assert analysis["total_messages"] == 2 and analysis["messages_with_feedback"] == 1
    assert analysis["positive_feedback"] == 2 and analysis["negative_feedback"] == 1
    assert analysis["average_rating"] == pytest.approx((5 + 1 + 4) / 3, abs=0.01)
    details = analysis["feedback_details"]
    assert [d["feedback_type"] for d in details] == ["thumbs_up", "thumbs_down", "rating"]
    assert details[0]["message_id"] == msg and ISO_UTC.match(details[0]["timestamp"])


async def test_template_shapes_the_prompt(gateway_factory) -> None:
    """The prompt the LLM receives follows request > conversation template > assistant."""
    with LocalOpenAIServer() as llm_server:
        gw = gateway_factory(llm={"provider": "openai", "base_url": llm_server.base_url,
                                  "api_key": llm_server.api_key})
        await add_assistant(gw, "shop", name="Shopbot", allow_anonymous=True,
                            system_prompt="You sell {item}.",
                            template_variables={"item": "bicycles"})

        def system() -> str:
            return str(llm_server.last.messages[0]["content"])

        async with client(gw, await make_key(gw, "shop")) as http:
            body = (await http.post("/api/chat", json={"message": "hello"})).json()
            assert body["response"] == "Echo: hello"
            assert system().startswith("You sell bicycles.")
            conv = body["conversation_id"]
            choice = {"template_name": "expert_assistant",
                      "variables": {"additional_instructions": "Use code examples.",
                                    "domain": "bicycle repair"}}
            resp = await http.post(f"/api/conversation/{conv}/template", json=choice)
            assert resp.json() == {"status": "success", "conversation_id": conv,
                                   "template": "expert_assistant"}
            await http.post("/api/chat", json={"message": "again", "conversation_id": conv})
            assert system().startswith("You are Shopbot, an expert in bicycle repair.")
            assert "Use code examples." in system()
            history = [m["content"] for m in llm_server.last.messages[1:]]
            assert history == ["hello", "Echo: hello", "again"]
            await http.post("/api/chat", json={"message": "x", "conversation_id": conv,
                                               "system_prompt": "Talk like a pirate."})
            assert system().startswith("Talk like a pirate.")
            assert_error(await http.post(f"/api/conversation/{conv}/template",
                                         json={"template_name": "nope"}), 400,
                         "INVALID_REQUEST")
            assert_error(await http.post("/api/conversation/conv_nope/template", json=choice),
                         404, "NOT_FOUND")


async def test_conversations_are_private_to_their_assistant(gateway_factory) -> None:
    gw = gateway_factory(server={"allow_anonymous": "false"})
    await add_assistant(gw, "b-side")
    key_a, key_b = await make_key(gw, "default"), await make_key(gw, "b-side")
    async with client(gw, key_b) as b:
        conv = await log(b, "secret", "my secret question", "secret answer")
        assert (await b.get("/api/conversations")).json()["total"] == 1
    async with client(gw, key_a) as a:
        assert (await a.get("/api/conversations")).json()["total"] == 0
        for resp in (await a.get(f"/api/conversation/{conv}/messages"),
                     await a.get(f"/api/feedback/analyze/{conv}"),
                     await a.post(f"/api/conversation/{conv}/template",
                                  json={"template_name": "standard_assistant"}),
                     await a.post("/api/feedback", json={"conversation_id": conv,
                                                         "feedback_type": "thumbs_up"}),
                     await a.delete(f"/api/conversation/{conv}")):
            assert_error(resp, 404, "NOT_FOUND")
        for path in ("/api/search/messages", "/api/search/conversations"):
            assert (await a.post(path, json={"query": "secret"})).json()["results"] == []
    async with client(gw, await make_key(gw)) as admin:
        listed = await admin.get("/api/conversations", headers={"x-chat-model-id": "b-side"})
        assert listed.json()["total"] == 1
