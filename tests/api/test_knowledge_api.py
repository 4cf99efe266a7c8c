"""The knowledge-base API (seed 001) over real HTTP: import, search, query, update, delete.

The seed's request examples are replayed as they are published (same bodies, same
chat model id: the test creates an assistant called ``your-chat-model-id``).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from gateway.store.db import Database
from gateway.store.keys import KeyStore

SEED_MODEL = "your-chat-model-id"

# The seed's import examples (cURL, Python, JavaScript, PHP and the request-body table).
SEED_IMPORTS: list[dict[str, Any]] = [
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "Product Documentation",
        "content": "Full content of your document goes here...",
        "url": "https://example.com/docs/product",
        "metadata": {"category": "documentation", "language": "en"}}]},
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "Getting Started Guide",
        "content": "Welcome to our platform. Here is how to get started...",
        "url": "https://docs.example.com/getting-started"}]},
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "FAQ: Shipping",
        "content": "We offer free shipping on orders over $50...",
        "url": "https://shop.example.com/faq/shipping"}]},
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "FAQ: Returns",
        "content": "You can return items within 30 days of purchase...",
        "url": "https://shop.example.com/faq/returns"}]},
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "Product Specifications",
        "content": "Our widget has the following specifications...",
        "url": "https://example.com/products/widget"}]},
    # The Python example sends url=None when it has none.
    {"chatModelId": SEED_MODEL, "documents": [{
        "title": "FAQ: Payments", "content": "We accept cards and bank transfers.",
        "url": None}]},
]
# The documents the seed's search and query responses cite.
SECURITY_DOCS: list[dict[str, Any]] = [
    {"title": "Security Guide",
     "content": "To reset your password, navigate to Settings > Security > Change Password. "
                "Enter your current password, then the new one twice."},
    {"title": "Security Best Practices",
     "content": "Password security matters: use a long unique password for every account "
                "and turn on two-factor authentication."},
]
SEED_SEARCH = {"chatModelId": SEED_MODEL, "query": "password security", "limit": 10}
SEED_QUERY = {"chatModelId": SEED_MODEL, "query": "How do I reset my password?",
              "options": {"maxTokens": 500, "temperature": 0.7}}


async def admin_key(gw, **kwargs: Any) -> str:
    db = Database.from_config(gw.cfg)
    try:
        _, key = await KeyStore(db).create("test", **kwargs)
    finally:
        await db.close()
    return key


def client(gw, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=gw.base, headers=headers, timeout=60)


async def new_assistant(http: httpx.AsyncClient, assistant_id: str | None = None) -> str:
    assistant_id = assistant_id or f"kb-{uuid.uuid4().hex[:10]}"
    await http.delete(f"/api/v1/assistants/{assistant_id}")  # a shared database may have it
    resp = await http.post("/api/v1/assistants", json={"id": assistant_id, "name": "KB test"})
    assert resp.status_code == 201, resp.text
    return assistant_id


async def import_docs(http: httpx.AsyncClient, model: str, docs: list[dict[str, Any]]
                      ) -> list[str]:
    resp = await http.post("/api/v1/documents/import",
                           json={"chatModelId": model, "documents": docs})
    assert resp.status_code == 200, resp.text
    return [d["id"] for d in resp.json()["documents"]]


async def search(http: httpx.AsyncClient, model: str, query: str, limit: int = 10
                 ) -> list[dict[str, Any]]:
    resp = await http.post("/api/v1/documents/search",
                           json={"chatModelId": model, "query": query, "limit": limit})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    return list(body["documents"])


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in resp.text


async def test_seed_examples_import_search_and_query(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        await new_assistant(http, SEED_MODEL)
        titles = {}
        for example in SEED_IMPORTS:
            resp = await http.post("/api/v1/documents/import", json=example)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["success"] is True and body["imported"] == 1
            (doc,) = body["documents"]
            assert set(doc) == {"id", "title", "status"}
            assert doc["title"] == example["documents"][0]["title"]
            assert doc["status"] in ("ready", "processing")
            titles[doc["id"]] = doc["title"]
        ids = await import_docs(http, SEED_MODEL, SECURITY_DOCS)
        guide, practices = ids

        found = (await http.post("/api/v1/documents/search", json=SEED_SEARCH)).json()
        assert found["success"] is True
        docs = found["documents"]
        assert {d["id"] for d in docs[:2]} == {guide, practices}
        for d in docs:
            assert {"id", "title", "content", "relevance"} <= set(d)
            assert 0.0 < d["relevance"] <= 1.0
        assert [d["relevance"] for d in docs] == sorted((d["relevance"] for d in docs),
                                                        reverse=True)

        resp = await http.post("/api/v1/chat/query", json=SEED_QUERY)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["success"] is True
        assert "Settings > Security > Change Password" in answer["response"]
        assert answer["sources"][0] == {"documentId": guide, "title": "Security Guide",
                                        "relevance": answer["sources"][0]["relevance"]}
        for source in answer["sources"]:
            assert set(source) == {"documentId", "title", "relevance"}

        # Every imported seed document is there, with its url and metadata.
        listed = (await http.get("/api/v1/documents",
                                 params={"chatModelId": SEED_MODEL, "limit": 100})).json()
        assert listed["total"] == len(SEED_IMPORTS) + 2
        first = (await http.get(f"/api/v1/documents/{next(iter(titles))}")).json()
        assert first["document"]["metadata"] == {"category": "documentation", "language": "en"}
        assert first["document"]["url"] == "https://example.com/docs/product"


async def test_batch_limit_is_100_documents(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        docs = [{"title": f"Doc {i}", "content": f"Item number {i} of the batch."}
                for i in range(101)]
        resp = await http.post("/api/v1/documents/import",
                               json={"chatModelId": model, "documents": docs})
        assert_error(resp, 400, "INVALID_REQUEST")
        assert "100" in resp.json()["error"]["message"]
        resp = await http.post("/api/v1/documents/import",
                               json={"chatModelId": model, "documents": docs[:100]})
        assert resp.status_code == 200 and resp.json()["imported"] == 100
        assert len({d["id"] for d in resp.json()["documents"]}) == 100
        resp = await http.post("/api/v1/documents/import",
                               json={"chatModelId": model, "documents": []})
        assert_error(resp, 400, "INVALID_REQUEST")


async def test_document_too_large_and_batch_is_all_or_nothing(gateway_factory) -> None:
    gw = gateway_factory(knowledge={"max_document_bytes": 2000})
    async with client(gw, await admin_key(gw)) as http:
        model = await new_assistant(http)
        ok = {"title": "Small", "content": "A small document about tulips."}
        big = {"title": "Big", "content": "é" * 1001}  # 1001 characters, 2002 bytes
        resp = await http.post("/api/v1/documents/import",
                               json={"chatModelId": model, "documents": [ok, big]})
        assert resp.status_code in (400, 413)
        assert_error(resp, resp.status_code, "DOCUMENT_TOO_LARGE")
        assert "documents[1]" in resp.json()["error"]["message"]
        assert await search(http, model, "tulips") == []  # the batch was refused whole
        assert (await http.post("/api/v1/documents/import", json={
            "chatModelId": model, "documents": [ok, {"title": "Fits", "content": "x" * 2000}]
        })).status_code == 200
        doc_id = (await search(http, model, "tulips"))[0]["id"]
        resp = await http.patch(f"/api/v1/documents/{doc_id}", json={"content": "y" * 2001})
        assert_error(resp, resp.status_code, "DOCUMENT_TOO_LARGE")


def long_document() -> str:
    topics = ["apples", "bridges", "comets", "dolphins", "engines", "falcons", "glaciers",
              "harbours", "islands", "jaguars"]
    paragraphs = []
    for i in range(40):
        topic = topics[i % len(topics)]
        paragraphs.append(f"Section {i} is about {topic}. " + " ".join(
            f"Sentence {j} of section {i} describes {topic} in more detail." for j in range(6)))
    paragraphs.append("The final section mentions the quokka, a small marsupial.")
    return "\n\n".join(paragraphs)


async def test_long_document_is_chunked_and_found_by_its_passage(gateway) -> None:
    content = long_document()
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        (doc_id,) = await import_docs(http, model, [{"title": "Encyclopedia", "content": content}])
        doc = (await http.get(f"/api/v1/documents/{doc_id}")).json()["document"]
        assert doc["chunks"] > 10
        assert doc["content"] == content
        assert doc["contentBytes"] == len(content.encode())
        (hit,) = await search(http, model, "quokka marsupial")
        assert hit["id"] == doc_id
        assert "quokka" in hit["content"] and len(hit["content"]) < 200
        resp = await http.post("/api/v1/chat/query",
                               json={"chatModelId": model, "query": "What is a quokka?"})
        assert "marsupial" in resp.json()["response"]


async def test_update_reindexes_the_document(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        (doc_id,) = await import_docs(http, model, [{
            "title": "Breakfast", "content": "The hotel serves marmalade with toast.",
            "metadata": {"v": 1}}])
        assert [d["id"] for d in await search(http, model, "marmalade")] == [doc_id]

        resp = await http.patch(f"/api/v1/documents/{doc_id}",
                                json={"content": "The hotel lobby has a xylophone."})
        assert resp.status_code == 200, resp.text
        doc = resp.json()["document"]
        assert doc["title"] == "Breakfast" and doc["metadata"] == {"v": 1}
        assert await search(http, model, "marmalade") == []
        assert [d["id"] for d in await search(http, model, "xylophone")] == [doc_id]

        # Metadata only: the index is untouched, the metadata replaced.
        resp = await http.patch(f"/api/v1/documents/{doc_id}", json={"metadata": {"v": 2}})
        assert resp.json()["document"]["metadata"] == {"v": 2}
        assert [d["id"] for d in await search(http, model, "xylophone")] == [doc_id]

        # PUT replaces the whole document; url and metadata reset when absent.
        resp = await http.put(f"/api/v1/documents/{doc_id}", json={
            "title": "Gardens", "content": "Peacocks walk in the rose garden."})
        assert resp.status_code == 200, resp.text
        doc = resp.json()["document"]
        assert doc["title"] == "Gardens" and doc["metadata"] == {} and doc["url"] is None
        assert await search(http, model, "xylophone") == []
        hits = await search(http, model, "peacocks")
        assert hits[0]["title"] == "Gardens"

        resp = await http.patch(f"/api/v1/documents/{doc_id}", json={"title": None})
        assert_error(resp, 400, "INVALID_REQUEST")
        resp = await http.put(f"/api/v1/documents/{doc_id}", json={"title": "No content"})
        assert_error(resp, 400, "INVALID_REQUEST")


async def test_delete_document(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        keep, gone = await import_docs(http, model, [
            {"title": "Keep", "content": "Otters hold hands while sleeping."},
            {"title": "Gone", "content": "Otters and beavers build dams sometimes."}])
        resp = await http.delete(f"/api/v1/documents/{gone}")
        assert resp.status_code == 200
        assert resp.json() == {"success": True, "deleted": gone}
        assert [d["id"] for d in await search(http, model, "otters")] == [keep]
        assert await search(http, model, "beavers") == []
        assert_error(await http.get(f"/api/v1/documents/{gone}"), 404, "NOT_FOUND")
        assert_error(await http.delete(f"/api/v1/documents/{gone}"), 404, "NOT_FOUND")
        listed = (await http.get("/api/v1/documents", params={"chatModelId": model})).json()
        assert [d["id"] for d in listed["documents"]] == [keep]


async def test_ranking_prefers_the_document_about_the_query(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        about, mention, other = await import_docs(http, model, [
            {"title": "Lighthouse maintenance",
             "content": "The lighthouse lamp is cleaned weekly. Lighthouse keepers log "
                        "every lighthouse inspection."},
            {"title": "Coastal walks",
             "content": "The coastal path passes cliffs, beaches, a cafe, a car park and, "
                        "far away, a lighthouse on the headland."},
            {"title": "Bakery", "content": "Fresh bread every morning."}])
        hits = await search(http, model, "lighthouse")
        assert [h["id"] for h in hits] == [about, mention]
        assert hits[0]["relevance"] > hits[1]["relevance"]
        assert other not in {h["id"] for h in hits}
        assert len(await search(http, model, "lighthouse", limit=1)) == 1


async def test_listing_is_paginated_and_bounded(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        ids = await import_docs(http, model, [{"title": f"Page {i}", "content": f"Body {i}."}
                                              for i in range(5)])
        seen = []
        for offset in (0, 2, 4):
            page = (await http.get("/api/v1/documents", params={
                "chatModelId": model, "limit": 2, "offset": offset})).json()
            assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == offset
            assert all("content" not in d for d in page["documents"])
            seen += [d["id"] for d in page["documents"]]
        assert seen == ids
        resp = await http.get("/api/v1/documents", params={"chatModelId": model, "limit": 101})
        assert_error(resp, 400, "INVALID_REQUEST")


async def test_errors_use_the_seed_body(gateway) -> None:
    key = await admin_key(gateway)
    async with client(gateway, None) as anon, client(gateway, "gw_bad_token") as bad, \
            client(gateway, key) as http:
        for caller in (anon, bad):
            for method, path, body in (
                ("POST", "/api/v1/documents/import", SEED_IMPORTS[0]),
                ("POST", "/api/v1/documents/search", SEED_SEARCH),
                ("POST", "/api/v1/chat/query", SEED_QUERY),
                ("GET", "/api/v1/documents", None),
            ):
                resp = await caller.request(method, path, json=body)
                assert_error(resp, 401, "INVALID_TOKEN")
        for path, body in (("/api/v1/documents/import", SEED_IMPORTS[0]),
                           ("/api/v1/documents/search", SEED_SEARCH),
                           ("/api/v1/chat/query", SEED_QUERY)):
            unknown = {**body, "chatModelId": "no-such-model"}
            assert_error(await http.post(path, json=unknown), 404, "INVALID_MODEL_ID")
        resp = await http.post("/api/v1/documents/search", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert_error(resp, 400, "INVALID_REQUEST")
        resp = await http.post("/api/v1/documents/search", json={"chatModelId": "default"})
        assert_error(resp, 400, "INVALID_REQUEST")
        resp = await http.post("/api/v1/documents/import", json={
            "chatModelId": "default", "documents": [{"title": "t", "content": "nul\u0000"}]})
        assert_error(resp, 400, "INVALID_REQUEST")
        # Elsewhere the body stays the plain one.
        resp = await anon.post("/api/get-access-token", json={})
        assert resp.status_code == 401
        assert resp.json() == {"error": resp.json()["error"]}
        assert resp.json()["error"]["code"] == "UNAUTHORIZED"


async def test_scoped_key_cannot_touch_another_assistant(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as admin:
        mine, theirs = await new_assistant(admin), await new_assistant(admin)
        (their_doc,) = await import_docs(admin, theirs, [{"title": "Secret",
                                                          "content": "Their pangolin plan."}])
        key = (await admin.post("/api/v1/keys", json={"assistant_id": mine})).json()["key"]
    async with client(gateway, key) as http:
        (my_doc,) = await import_docs(http, mine, [{"title": "Mine",
                                                    "content": "Our pangolin plan."}])
        assert [d["id"] for d in await search(http, mine, "pangolin")] == [my_doc]
        doc_body = {"title": "x", "content": "y"}
        for resp in (
            await http.post("/api/v1/documents/import",
                            json={"chatModelId": theirs, "documents": [doc_body]}),
            await http.post("/api/v1/documents/search",
                            json={"chatModelId": theirs, "query": "pangolin"}),
            await http.post("/api/v1/chat/query",
                            json={"chatModelId": theirs, "query": "pangolin"}),
            await http.get(f"/api/v1/documents/{their_doc}"),
            await http.patch(f"/api/v1/documents/{their_doc}", json={"title": "mine now"}),
            await http.delete(f"/api/v1/documents/{their_doc}"),
            await http.get("/api/v1/documents", params={"chatModelId": theirs}),
        ):
            assert_error(resp, 403, "FORBIDDEN")
    async with client(gateway, await admin_key(gateway)) as admin:
        doc = (await admin.get(f"/api/v1/documents/{their_doc}")).json()["document"]
        assert doc["title"] == "Secret"


@pytest.mark.parametrize("bad", [
    {"query": ""}, {"query": "x" * 2001}, {"limit": 0}, {"limit": 101}, {"limit": "ten"},
])
async def test_search_input_is_bounded(gateway, bad: dict[str, Any]) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        resp = await http.post("/api/v1/documents/search",
                               json={"chatModelId": "default", "query": "q", **bad})
        assert_error(resp, 400, "INVALID_REQUEST")


async def test_query_without_matching_documents_has_no_sources(gateway) -> None:
    async with client(gateway, await admin_key(gateway)) as http:
        model = await new_assistant(http)
        resp = await http.post("/api/v1/chat/query",
                               json={"chatModelId": model, "query": "What is a wombat?"})
        assert resp.status_code == 200
        body = resp.json()
        assert body["success"] is True and body["sources"] == [] and body["response"]


async def test_rate_limits_of_the_seed_groups(gateway_factory) -> None:
    gw = gateway_factory(ratelimit={"group_search": "2/minute", "group_import": "1/minute"})
    async with client(gw, await admin_key(gw)) as http:
        for _ in range(2):
            assert (await http.post("/api/v1/documents/search", json={
                "chatModelId": "default", "query": "gateway"})).status_code == 200
        resp = await http.post("/api/v1/documents/search",
                               json={"chatModelId": "default", "query": "gateway"})
        assert_error(resp, 429, "RATE_LIMITED")
        assert int(resp.headers["retry-after"]) > 0
        doc = {"title": "t", "content": "c"}
        assert (await http.post("/api/v1/documents/import", json={
            "chatModelId": "default", "documents": [doc]})).status_code == 200
        resp = await http.post("/api/v1/documents/import",
                               json={"chatModelId": "default", "documents": [doc]})
        assert_error(resp, 429, "RATE_LIMITED")
