"""Semantic search over real HTTP (the gateway's own embedder, the selected database):
knowledge-base search, grounded query sources and conversation/message search find by
meaning a question that shares no word with its answer; exact words still rank."""

from __future__ import annotations

import random

from chat_helpers import client, make_key

MUSEUM = [
    {"title": "Opening hours", "content": "The museum is open from 9 am to 5 pm daily."},
    {"title": "Admission", "content": "Tickets cost 12 euros; children under six go free."},
    {"title": "Pets", "content": "Dogs are welcome on a leash in the garden."},
    {"title": "Wifi", "content": "The network password is ZX-4410."},
]


async def test_documents_and_query_find_by_meaning(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        resp = await http.post("/api/v1/documents/import", json={
            "chatModelId": "default", "documents": MUSEUM})
        assert resp.status_code == 200, resp.text
        ids = {d["title"]: d["id"] for d in resp.json()["documents"]}

        async def search(query: str) -> list[dict]:
            r = await http.post("/api/v1/documents/search", json={
                "chatModelId": "default", "query": query, "limit": 3})
            assert r.status_code == 200, r.text
            return list(r.json()["documents"])

        for query, title in (("when can I visit", "Opening hours"),
                             ("how much is entry", "Admission"),
                             ("may I bring my puppy", "Pets"),
                             ("ZX-4410", "Wifi")):
            found = await search(query)
            assert found and found[0]["id"] == ids[title], (query, found)
            assert 0.3 <= found[0]["relevance"] <= 1.0
        r = await http.post("/api/v1/chat/query", json={
            "chatModelId": "default", "query": "when can I visit"})
        assert r.status_code == 200, r.text
        assert r.json()["sources"][0]["documentId"] == ids["Opening hours"]


async def test_conversation_and_message_search_by_meaning(gateway) -> None:
    async with client(gateway, await make_key(gateway)) as http:
        convs = []
        for session, question, answer in (
                ("s1", "What are your hours?", "The museum is open from 9 am to 5 pm."),
                ("s2", "Any dinner ideas?", "Try a vegetarian lasagna with spinach.")):
            r = await http.post("/api/conversations/log", json={
                "sessionId": session, "user_id": "u1", "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]})
            assert r.status_code == 200, r.text
            convs.append(r.json()["conversationId"])
        msgs = (await http.post("/api/search/messages", json={
            "query": "when can I visit", "user_id": "u1"})).json()["results"]
        assert msgs and "9 am" in msgs[0]["content"]
        assert 0.3 <= msgs[0]["similarity_score"] <= 1.0
        found = (await http.post("/api/search/conversations", json={
            "query": "something to cook tonight", "user_id": "u1"})).json()["results"]
        assert found and found[0]["conversation_id"] == convs[1]
        other = (await http.post("/api/search/messages", json={
            "query": "when can I visit", "user_id": "someone-else"})).json()["results"]
        assert other == []


async def test_an_exact_code_ranks_its_note_above_notes_that_only_look_alike(gateway) -> None:
    """Notes that differ only in a code embed alike; the one holding the query's code
    comes first (the fused rank, not the cosine alone: kill -9 test, CI 2026-12-04)."""
    codes = [f"durable{random.Random(n).getrandbits(32):08x}" for n in range(30)]
    async with client(gateway, await make_key(gateway)) as http:
        resp = await http.post("/api/v1/documents/import", json={
            "chatModelId": "default", "documents": [
                {"title": f"Durability note {c}", "url": f"https://example.com/{c}",
                 "content": f"# Note\n\nThe keyword {c} proves this note survived."}
                for c in codes]})
        assert resp.status_code == 200, resp.text
        ids = dict(zip(codes, (d["id"] for d in resp.json()["documents"]), strict=True))
        for code in codes:
            r = await http.post("/api/v1/documents/search", json={
                "chatModelId": "default", "query": code, "limit": 5})
            assert r.status_code == 200, r.text
            assert [d["id"] for d in r.json()["documents"]][:1] == [ids[code]], code
