"""Assistants (chat models) and API keys under /api/v1, over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import websockets

from gateway.store.db import Database
from gateway.store.keys import KeyStore


async def admin_key(gw) -> str:
    db = Database.from_config(gw.cfg)
    try:
        _, key = await KeyStore(db).create("test admin")
    finally:
        await db.close()
    return key


def client(gw, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=gw.base, headers=headers, timeout=60)


def unique(prefix: str = "asst") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body == {"success": False, "error": {"code": code,
                                                "message": body["error"]["message"]}}


FULL = {
    "name": "Museum guide",
    "description": "Answers visitors' questions",
    "system_prompt": "You are the guide of {museum}. Be brief.",
    "template_name": "guide",
    "template_variables": {"museum": "the city museum"},
    "llm_provider": "extractive", "llm_model": "none",
    "stt_provider": "whisper", "stt_model": "tiny.en",
    "tts_provider": "piper", "voice": "joe", "language": "en",
    "allow_anonymous": False, "tier": "pro",
    "tools": [{"type": "webhook", "name": "opening_hours", "description": "today's hours",
               "url": "https://museum.example/hours"}, {"type": "builtin", "name": "end_call"}],
}


async def test_assistant_crud(gateway) -> None:
    assistant_id = unique()
    async with client(gateway, await admin_key(gateway)) as http:
        resp = await http.post("/api/v1/assistants", json={"id": assistant_id, **FULL})
        assert resp.status_code == 201, resp.text
        created = resp.json()["assistant"]
        assert resp.json()["success"] is True
        assert {k: created[k] for k in FULL} == FULL
        assert created["id"] == assistant_id
        assert created["knowledge_base"] == {"documents": 0}
        assert created["created_at"].endswith("Z")

        got = (await http.get(f"/api/v1/assistants/{assistant_id}")).json()["assistant"]
        assert got == created
        listed = (await http.get("/api/v1/assistants", params={"limit": 100})).json()
        assert assistant_id in {a["id"] for a in listed["assistants"]}
        assert listed["total"] >= 2  # with the default assistant

        resp = await http.patch(f"/api/v1/assistants/{assistant_id}",
                                json={"voice": "amy", "template_name": None, "tier": "basic"})
        assert resp.status_code == 200, resp.text
        updated = resp.json()["assistant"]
        assert (updated["voice"], updated["template_name"], updated["tier"]) == (
            "amy", None, "basic")
        assert updated["system_prompt"] == FULL["system_prompt"]

        resp = await http.delete(f"/api/v1/assistants/{assistant_id}")
        assert resp.json() == {"success": True, "deleted": assistant_id}
        assert_error(await http.get(f"/api/v1/assistants/{assistant_id}"), 404,
                     "INVALID_MODEL_ID")
        assert_error(await http.delete(f"/api/v1/assistants/{assistant_id}"), 404,
                     "INVALID_MODEL_ID")


async def test_generated_id_duplicates_and_validation(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        resp = await http.post("/api/v1/assistants", json={})
        assert resp.status_code == 201
        made = resp.json()["assistant"]
        assert made["id"].startswith("asst_") and made["name"] == made["id"]
        assert (made["tier"], made["language"], made["allow_anonymous"]) == ("free", "en", False)
        assert_error(await http.post("/api/v1/assistants", json={"id": made["id"]}), 409,
                     "CONFLICT")
        for bad in ({"id": "has space"}, {"id": "x" * 65}, {"tier": "platinum"},
                    {"name": ""}, {"tools": "not a list"}, {"system_prompt": "a\u0000b"},
                    {"name": None}, {"tools": [{"type": "webhook", "name": "no_url"}]},
                    {"tools": ["launch_rocket"]}):
            assert_error(await http.post("/api/v1/assistants", json=bad), 400,
                         "INVALID_REQUEST")
        assert_error(await http.patch(f"/api/v1/assistants/{made['id']}",
                                      json={"language": None}), 400, "INVALID_REQUEST")
        assert_error(await http.delete("/api/v1/assistants/default"), 400, "INVALID_REQUEST")


async def test_create_with_documents_is_its_knowledge_base(gateway) -> None:
    assistant_id = unique()
    docs = [{"title": "Hours", "content": "The aquarium opens at nine."},
            {"title": "Tickets", "content": "Children under five enter free."}]
    async with client(gateway, await admin_key(gateway)) as http:
        resp = await http.post("/api/v1/assistants", json={"id": assistant_id,
                                                           "documents": docs})
        assert resp.status_code == 201, resp.text
        assert resp.json()["assistant"]["knowledge_base"] == {"documents": 2}
        found = (await http.post("/api/v1/documents/search", json={
            "chatModelId": assistant_id, "query": "aquarium"})).json()["documents"]
        assert [d["title"] for d in found] == ["Hours"]
        # Deleting the assistant deletes its knowledge base too.
        await http.delete(f"/api/v1/assistants/{assistant_id}")
        await http.post("/api/v1/assistants", json={"id": assistant_id})
        found = (await http.post("/api/v1/documents/search", json={
            "chatModelId": assistant_id, "query": "aquarium"})).json()["documents"]
        assert found == []


async def test_scoped_key_reads_and_updates_only_its_assistant(gateway) -> None:
    mine, theirs = unique(), unique()
    async with client(gateway, await admin_key(gateway)) as admin:
        for assistant_id in (mine, theirs):
            await admin.post("/api/v1/assistants", json={"id": assistant_id, "tier": "basic"})
        key = (await admin.post("/api/v1/keys", json={"assistant_id": mine,
                                                      "name": "mine"})).json()["key"]
    async with client(gateway, key) as http:
        assert (await http.get(f"/api/v1/assistants/{mine}")).status_code == 200
        resp = await http.patch(f"/api/v1/assistants/{mine}",
                                json={"system_prompt": "Speak like a pirate."})
        assert resp.json()["assistant"]["system_prompt"] == "Speak like a pirate."
        listed = (await http.get("/api/v1/assistants")).json()
        assert [a["id"] for a in listed["assistants"]] == [mine] and listed["total"] == 1

        assert_error(await http.get(f"/api/v1/assistants/{theirs}"), 403, "FORBIDDEN")
        assert_error(await http.patch(f"/api/v1/assistants/{theirs}", json={"voice": "x"}),
                     403, "FORBIDDEN")
        assert_error(await http.patch(f"/api/v1/assistants/{mine}", json={"tier": "pro"}),
                     403, "FORBIDDEN")
        assert_error(await http.delete(f"/api/v1/assistants/{mine}"), 403, "FORBIDDEN")
        assert_error(await http.post("/api/v1/assistants", json={}), 403, "FORBIDDEN")
        assert_error(await http.get("/api/v1/keys"), 403, "FORBIDDEN")
        assert_error(await http.post("/api/v1/keys", json={"assistant_id": mine}), 403,
                     "FORBIDDEN")


async def test_key_management(gateway) -> None:
    assistant_id = unique()
    async with client(gateway, await admin_key(gateway)) as admin:
        await admin.post("/api/v1/assistants", json={"id": assistant_id})
        resp = await admin.post("/api/v1/keys", json={"name": "crm sync",
                                                      "assistant_id": assistant_id,
                                                      "tier": "pro"})
        assert resp.status_code == 201, resp.text
        made = resp.json()
        secret = made["key"]
        assert secret.startswith("gw_") and made["success"] is True
        assert (made["name"], made["assistant_id"], made["tier"], made["revoked"]) == (
            "crm sync", assistant_id, "pro", False)

        listed = await admin.get("/api/v1/keys")
        assert listed.status_code == 200
        assert secret not in listed.text and secret.split("_", 2)[2] not in listed.text
        rows = {k["key_id"]: k for k in listed.json()["keys"]}
        assert "key" not in rows[made["key_id"]]
        assert rows[made["key_id"]]["name"] == "crm sync"

        async with client(gateway, secret) as http:
            assert (await http.get(f"/api/v1/assistants/{assistant_id}")).status_code == 200
            resp = await admin.delete(f"/api/v1/keys/{made['key_id']}")
            assert resp.json() == {"success": True, "revoked": made["key_id"]}
            assert_error(await http.get(f"/api/v1/assistants/{assistant_id}"), 401,
                         "INVALID_TOKEN")
        assert_error(await admin.delete(f"/api/v1/keys/{made['key_id']}"), 404, "NOT_FOUND")
        listed = (await admin.get("/api/v1/keys", params={"limit": 200})).json()["keys"]
        revoked = [k for k in listed if k["key_id"] == made["key_id"]]
        assert revoked and revoked[0]["revoked"] is True and revoked[0]["revoked_at"]

        assert_error(await admin.post("/api/v1/keys", json={"assistant_id": "nope-nope"}),
                     404, "INVALID_MODEL_ID")
        assert_error(await admin.post("/api/v1/keys", json={"tier": "gold"}), 400,
                     "INVALID_REQUEST")
        admin2 = (await admin.post("/api/v1/keys", json={})).json()
        assert admin2["assistant_id"] is None
        async with client(gateway, admin2["key"]) as http:
            assert (await http.get("/api/v1/keys")).status_code == 200


async def test_deleting_an_assistant_revokes_its_keys(gateway) -> None:
    assistant_id = unique()
    async with client(gateway, await admin_key(gateway)) as admin:
        await admin.post("/api/v1/assistants", json={"id": assistant_id})
        key = (await admin.post("/api/v1/keys", json={"assistant_id": assistant_id})).json()
        await admin.delete(f"/api/v1/assistants/{assistant_id}")
    async with client(gateway, key["key"]) as http:
        assert_error(await http.get(f"/api/v1/assistants/{assistant_id}"), 401,
                     "INVALID_TOKEN")


async def test_no_credential_no_access(gateway) -> None:
    async with client(gateway, None) as anon, client(gateway, "gw_abc_def") as bad:
        for http in (anon, bad):
            for method, path in (("GET", "/api/v1/assistants"),
                                 ("GET", "/api/v1/assistants/default"),
                                 ("POST", "/api/v1/assistants"),
                                 ("PATCH", "/api/v1/assistants/default"),
                                 ("GET", "/api/v1/keys"), ("POST", "/api/v1/keys"),
                                 ("DELETE", "/api/v1/keys/abc")):
                resp = await http.request(method, path, json={})
                assert_error(resp, 401, "INVALID_TOKEN")


async def typed_turn(url: str, headers: dict[str, str], text: str) -> str:
    """One typed turn on the voice WebSocket; the agent's reply."""
    async with websockets.connect(url, additional_headers=headers) as ws:
        events: list[dict[str, Any]] = []

        async def until(kind: str) -> dict[str, Any]:
            while True:
                message = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(message, str):
                    events.append(json.loads(message))
                    if events[-1]["type"] == kind:
                        return events[-1]
                    assert events[-1]["type"] != "error", events[-1]

        await until("session_started")
        await ws.send(json.dumps({"type": "text", "text": text}))
        await until("stream_end")
    return str(next(e for e in events if e["type"] == "agent_response")["text"])


async def test_voice_turn_answers_from_the_assistants_documents(gateway) -> None:
    assistant_id = unique("museum")
    key = await admin_key(gateway)
    async with client(gateway, key) as http:
        await http.post("/api/v1/assistants", json={"id": assistant_id, "name": "Museum"})
        resp = await http.post("/api/v1/documents/import", json={
            "chatModelId": assistant_id, "documents": [{
                "title": "Opening hours",
                "content": "The museum opens at ten in the morning and closes at six."}]})
        assert resp.status_code == 200
    headers = {"x-api-key": key}
    reply = await typed_turn(f"{gateway.ws_url}?assistant_id={assistant_id}", headers,
                             "When does the museum open?")
    assert "opens at ten" in reply
    # The default assistant has its own knowledge base, without the museum.
    reply = await typed_turn(gateway.ws_url, headers, "When does the museum open?")
    assert "opens at ten" not in reply


async def test_an_assistants_own_llm_provider_answers_its_turns(gateway) -> None:
    assistant_id = unique("bench")
    key = await admin_key(gateway)
    async with client(gateway, key) as http:
        resp = await http.post("/api/v1/assistants", json={
            "id": assistant_id, "name": "Fixed answers", "llm_provider": "null"})
        assert resp.status_code in (200, 201), resp.text
        # Its provider loads in the background now, before its first turn.
        extra = gateway.app.state.runtime._extra
        for _ in range(250):
            if ("llm", "null", None) in extra:
                break
            await asyncio.sleep(0.02)
        assert extra.get(("llm", "null", None)) is not None
        bad = await http.post("/api/v1/assistants", json={
            "id": unique(), "name": "Typo", "llm_provider": "gpt-5-turbo"})
        assert_error(bad, 400, "INVALID_REQUEST")
        # It names the field and the choices; the client's own value is not echoed (an
        # error text never carries what could read as a host or a path: leakcheck).
        message = bad.json()["error"]["message"]
        assert message.startswith("llm_provider:") and "extractive" in message
        bad = await http.post("/api/v1/assistants", json={
            "id": unique(), "name": "Typo", "stt_provider": "whisper", "stt_model": "huge"})
        assert_error(bad, 400, "INVALID_REQUEST")
        assert "tiny.en" in bad.json()["error"]["message"]
    headers = {"x-api-key": key}
    reply = await typed_turn(f"{gateway.ws_url}?assistant_id={assistant_id}", headers,
                             "When does the museum open?")
    assert reply.strip() == "Hello! This is a benchmark reply."  # the null LLM's answer
    # Other assistants keep the configured LLM.
    reply = await typed_turn(gateway.ws_url, headers, "What is the gateway?")
    assert "benchmark reply" not in reply


async def test_turn_taking_settings(gateway) -> None:
    """An assistant's own interruption / end-of-turn settings: stored, returned, checked."""
    own = {"interruptions": {"mode": "words", "backchannels": ["genau", "na ja"],
                             "min_words": 2, "min_confidence": 0.5},
           "end_of_turn": {"detector": "silence", "max_wait_ms": 1800}}
    async with client(gateway, await admin_key(gateway)) as http:
        resp = await http.post("/api/v1/assistants", json={"turn_taking": own})
        assert resp.status_code == 201, resp.text
        made = resp.json()["assistant"]
        assert made["turn_taking"] == own
        assert (await http.get("/api/v1/assistants/default")).json()["assistant"][
            "turn_taking"] == {}
        for bad, says in (({"interruptions": {"mode": "never"}}, "mode must be words or speech"),
                          ({"interruptions": {"min_words": 0}}, "min_words"),
                          ({"interruptions": {"backchannels": "mhm"}}, "must be a list"),
                          ({"interruptions": []}, "must be an object"),
                          ({"end_of_turn": {"threshold": 1.5}}, "threshold"),
                          ({"end_of_turn": {"pause_ms": 1}}, "pause_ms"),
                          ({"barge": {}}, "unknown section")):
            resp = await http.patch(f"/api/v1/assistants/{made['id']}",
                                    json={"turn_taking": bad})
            assert_error(resp, 400, "INVALID_REQUEST")
            assert says in resp.json()["error"]["message"], resp.text
        resp = await http.patch(f"/api/v1/assistants/{made['id']}",
                                json={"turn_taking": {"interruptions": {"mode": "speech"}}})
        assert resp.json()["assistant"]["turn_taking"] == {"interruptions": {"mode": "speech"}}
        got = (await http.get(f"/api/v1/assistants/{made['id']}")).json()["assistant"]
        assert got["turn_taking"] == {"interruptions": {"mode": "speech"}}
        assert_error(await http.patch(f"/api/v1/assistants/{made['id']}",
                                      json={"turn_taking": None}), 400, "INVALID_REQUEST")
