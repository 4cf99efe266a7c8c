"""Every request example of the four seed API documents, replayed against a real gateway.

The examples are rewritten as fixtures in ``tests/data/seeds/`` (the format is described
in ``seed_replay.py``): the request as the seed shows it, with ``{placeholders}`` for the
keys and ids a client would have, and the response the seed documents — status, the
fields it shows with their JSON types, the SSE event names for streams. Each seed runs
on a gateway of its own; the set-up first makes what the examples refer to:

* assistants ``your-chat-model-id`` (the seeds' literal id; no anonymous users),
  ``public-model`` (anonymous users allowed) and ``other-model``;
* keys: ``{api_key}`` (admin), ``{model_key}`` and ``{limit_key}`` (scoped to
  your-chat-model-id; the latter spent by a rate-limit example), ``{other_key}``
  (scoped to other-model), ``{free_key}`` (an admin key of the free tier);
* documents: a "Security Guide" and "Security Best Practices" for your-chat-model-id,
  the seed's "Product Catalog" (with its URL) for the default assistant;
* conversations of user ``user123``: ``{conversation_id}`` (a chat about writing a
  Python function; ``{message_id}`` is its reply, which has feedback) and
  ``{conversation_to_delete}``;
* a gateway user and an OAuth client (``{client_id}``, ``{redirect_uri}``, PKCE
  ``{code_verifier}``/``{code_challenge}``), and ``{access_token}`` from the OAuth flow.

A fixture with ``"gateway"`` runs on a second gateway: ``tools`` (an LLM that calls
tools: the OpenAI-format test server), ``failing_llm`` (an LLM server refusing every
request), ``cors`` (CORS origin https://app.example.com). Their requests use no key
(anonymous, allowed on loopback).

Where an example cannot work literally, its fixture says how it was adapted (listed
below the table).

Not replayable, and why: seed 001 ``QUOTA_EXCEEDED`` (a tier's day-long limit has to be
used up first; tests/api/test_ratelimit.py covers it); seed 002 and
003 ``INTERNAL_ERROR`` 500 (no request can make a correct server fail; the handler that
turns any exception into that body is covered by the fuzzer's no-5xx check); seed 003
session cookies (the gateway has no cookie sessions outside the OAuth sign-in page).

| seed | example | fixture |
|---|---|---|
| 000 | OAuth: authorize (PKCE), sign in, token, chat | 000_01_oauth_pkce_flow.json |
| 000 | OAuth token on /api/chat/voice (voice SSE) | 000_02_oauth_token_on_voice.json |
| 000 | anonymous chat (chatModel allows it) | 000_03_anonymous_chat.json |
| 000 | anonymous chat refused (not allowed) | 000_04_anonymous_refused.json |
| 000 | legacy JWT + x-use-chatbot-auth: true | 000_05_legacy_jwt.json |
| 000 | legacy JWT without its header: 401 | 000_06_legacy_jwt_needs_its_header.json |
| 000 | v1: Bearer API token + x-chat-model-id | 000_07_v1_api_token_and_model_header.json |
| 000 | v1: Bearer OAuth token + x-chat-model-id | 000_08_v1_oauth_access_token.json |
| 000 | streaming: ?stream=true (SSE events) | 000_09_stream_query_parameter.json |
| 000 | streaming: "stream": true in the body | 000_10_stream_body_flag.json |
| 000 | streaming: tool_start / tool_end | 000_11_stream_tool_events.json |
| 000 | API token in the x-api-key header | 000_12_x_api_key_header.json |
| 000 | CORS preflight (OPTIONS) | 000_13_cors_preflight.json |
| 000 | CORS cross-origin chat request | 000_14_cors_request.json |
| 001 | import: request body example | 001_01_import_documents.json |
| 001 | import: cURL example | 001_02_import_curl.json |
| 001 | import: Python example | 001_03_import_python.json |
| 001 | import: JavaScript example | 001_04_import_javascript.json |
| 001 | import: PHP example | 001_05_import_php.json |
| 001 | query: POST /chat/query | 001_06_query_documents.json |
| 001 | retrieve: POST /documents/search | 001_07_search_documents.json |
| 001 | error format: INVALID_TOKEN | 001_08_error_invalid_token.json |
| 001 | error: INVALID_MODEL_ID | 001_09_error_invalid_model_id.json |
| 001 | error: INVALID_REQUEST (malformed JSON) | 001_10_error_invalid_request.json |
| 001 | error: DOCUMENT_TOO_LARGE | 001_11_error_document_too_large.json |
| 001 | rate limit: search 60/min, RATE_LIMITED | 001_12_error_rate_limited.json |
| 002 | chat {message, sessionId, history} | 002_01_chat.json |
| 002 | avatar token: POST /api/get-access-token | 002_02_get_access_token.json |
| 002 | health check with providers | 002_03_health.json |
| 002 | conversation logging | 002_04_conversation_log.json |
| 002 | error: missing field message (400) | 002_05_error_missing_message.json |
| 002 | error: UNAUTHORIZED 401 | 002_06_error_unauthorized.json |
| 002 | rate limit: get-access-token 10/min | 002_07_error_rate_limited.json |
| 002 | error: PROVIDER_ERROR 502 | 002_08_error_provider.json |
| 002 | hybrid backend contract | 002_09_hybrid_backend_contract.json |
| 003 | health check | 003_01_health.json |
| 003 | chat request body example | 003_02_chat.json |
| 003 | GET /api/models | 003_03_models.json |
| 003 | GET /api/available_features | 003_04_available_features.json |
| 003 | GET /api/templates | 003_05_templates.json |
| 003 | GET /api/template/{template_name} | 003_06_template_detail.json |
| 003 | POST /api/conversation/{id}/template | 003_07_conversation_template.json |
| 003 | POST /api/feedback | 003_08_feedback.json |
| 003 | GET /api/feedback/analyze/{id} | 003_09_feedback_analyze.json |
| 003 | GET /api/speech/providers | 003_10_speech_providers.json |
| 003 | POST /api/transcribe (multipart) | 003_11_transcribe.json |
| 003 | GET /api/websocket/config | 003_12_websocket_config.json |
| 003 | WebSocket: connect to the configured URL | 003_13_websocket_connect.json |
| 003 | GET /api/conversations (pagination) | 003_14_conversations.json |
| 003 | GET /api/conversation/{id}/messages | 003_15_conversation_messages.json |
| 003 | DELETE /api/conversation/{id} | 003_16_delete_conversation.json |
| 003 | POST /api/search/conversations | 003_17_search_conversations.json |
| 003 | POST /api/search/messages | 003_18_search_messages.json |
| 003 | JavaScript SDK chat example | 003_19_sdk_chat.json |
| 003 | conversation_id continues a conversation | 003_20_continue_conversation.json |
| 003 | rate limit: Free tier 10/min, 429 | 003_21_rate_limited_free_tier.json |
| 003 | error: 400 invalid parameters | 003_22_error_400.json |
| 003 | error: 401 invalid API key | 003_23_error_401_invalid_key.json |
| 003 | error: 401 missing API key | 003_24_error_401_missing_key.json |
| 003 | error: 403 insufficient permissions | 003_25_error_403.json |
| 003 | error: 404 not found | 003_26_error_404.json |

Adaptations (the full text is in each fixture's ``adaptation``):

* 001 (all): base URL ``https://api.aismarttalk.tech/v1`` → ``/api/v1`` (seed 000: "All
  other v1 endpoints: /api/v1/*"); the paths below it are unchanged.
* 000_01: the seed names the OAuth steps only; the parameters are RFC 6749/7636's, and
  "the user logs in and selects chatModel" is the gateway's sign-in form, posted as a
  browser would (cookie kept, redirect not followed).
* 000_02: the recording is the multipart field ``audio``.
* 000_03: the anonymous caller names its chatModel in the body (``chatModelId``).
* 000_05: the exchange at /api/auth/oauth (not shown in the seed) takes the OAuth token.
* 000_07: the seed names no v1 endpoint; GET /api/v1/documents stands for them.
* 000_11 / 002_08: tool events and a provider failure need an LLM that calls tools or
  fails: the OpenAI-format test server, on a gateway of their own.
* 000_13 / 000_14: CORS origins are configuration (https://app.example.com here).
* 001_11: ``{oversized_content}`` is one byte over ``knowledge.max_document_bytes``.
* 001_12 / 002_07 / 003_21: a limit is shown by going one request over it, with a key
  of its own.
* 002_01 / 002_09: no credential, as in the seed (anonymous is allowed on loopback);
  a source without a URL has ``"url": null``.
* 002_02: the seed shows no credential; the gateway mints tokens for an API key only.
* 002_03: ``providers`` lists the gateway's stages (vad, stt, llm, tts: "ok"); there is
  no separate ``avatar`` provider (lip-sync comes from the TTS stage).
* 003_02 / 003_19: ``"model": "gpt-4o"`` names no assistant here, so the key's default
  assistant answers (GET /api/models lists the names ``model`` can take).
* 003_11: provider "openai" is answered by the loaded STT (its ``confidence`` is Whisper's
  mean token probability).
* 003_12: ``defaults`` names the loaded TTS's voice (``piper_voice``), not
  ``openai_voice`` / ``elevenlabs_voice``.
* 003_13: the socket URL comes from GET /api/websocket/config (not ws://localhost:6789)
  and carries a session token; the seed's message ``type`` field is checked.
* 003_16: deletes a conversation made for it, so the others keep theirs.
* 003_18: the seed's ``// comment`` inside the JSON body is dropped.
* 003_24 / 003_25: the seed-003 gateway refuses anonymous callers; 403 is a key scoped
  to another assistant.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_helpers import make_key
from seed_replay import SEEDS, load, replay, run_steps

from gateway.store.db import Database
from gateway.store.users import create_client, create_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers"))
from openai_server import LocalOpenAIServer

CHAT_MODEL = "your-chat-model-id"
USERNAME, PASSWORD = "seed-user", "seed user password"
CLIENT_ID, REDIRECT_URI = "seed-app", "http://127.0.0.1:8765/callback"
ORIGIN = "https://app.example.com"
# Integrations (knowledge base, Chat SDK) run with keys only; the public API and the
# avatar front end rely on anonymous access where it is allowed.
SEED_CONFIG: dict[str, dict[str, Any]] = {
    "000": {}, "001": {"server": {"allow_anonymous": "false"}},
    "002": {}, "003": {"server": {"allow_anonymous": "false"}},
}


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


def variants(gateway_factory: Any, llm: LocalOpenAIServer) -> dict[str, Callable[[], Any]]:
    """The other gateways some fixtures need, by the fixture's ``gateway`` name."""

    def openai_llm(model: str, **sections: Any) -> Any:
        return gateway_factory(llm={"provider": "openai", "base_url": llm.base_url,
                                    "api_key": llm.api_key, "model": model,
                                    "first_token_timeout_s": 10, "total_timeout_s": 30},
                               **sections)

    return {
        "tools": lambda: openai_llm("tools", knowledge={"top_k": 1},
                                    tools={"enabled": ["search_knowledge_base"]}),
        "failing_llm": lambda: openai_llm("unauthorized"),  # every request: 401
        "cors": lambda: gateway_factory(server={"cors_origins": [ORIGIN]}),
    }


# --- what the examples refer to ------------------------------------------------------


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post(path, json=body)
    assert resp.status_code in (200, 201), f"set-up {path}: {resp.text}"
    result: dict[str, Any] = resp.json()
    return result


async def _oauth_parties(gw: Any) -> None:
    db = Database.from_config(gw.cfg)
    try:
        await create_user(db, USERNAME, PASSWORD)
        await create_client(db, CLIENT_ID, [REDIRECT_URI], "Seed app")
    finally:
        await db.close()


def _pkce() -> dict[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return {"code_verifier": verifier, "state": secrets.token_hex(8),
            "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()}


async def build_world(gw: Any) -> dict[str, Any]:
    """Assistants, keys, documents, conversations and an OAuth token; the variables."""
    env: dict[str, Any] = {"api_key": await make_key(gw), "username": USERNAME,
                           "password": PASSWORD, "client_id": CLIENT_ID,
                           "redirect_uri": REDIRECT_URI, **_pkce()}
    limit = int(gw.cfg.knowledge.max_document_bytes)
    env["oversized_content"] = "x" * (limit + 1)
    async with httpx.AsyncClient(base_url=gw.base, timeout=60, headers={
            "Authorization": f"Bearer {env['api_key']}"}) as http:
        for aid, anonymous in ((CHAT_MODEL, False), ("public-model", True),
                               ("other-model", False)):
            await _post(http, "/api/v1/assistants", {"id": aid, "allow_anonymous": anonymous,
                                                     "tier": "pro"})
        for var, body in (("model_key", {"assistant_id": CHAT_MODEL}),
                          ("limit_key", {"assistant_id": CHAT_MODEL}),
                          ("other_key", {"assistant_id": "other-model"}),
                          ("free_key", {"tier": "free"})):
            env[var] = (await _post(http, "/api/v1/keys", {"name": var, **body}))["key"]
        await _post(http, "/api/v1/documents/import", {"chatModelId": CHAT_MODEL, "documents": [
            {"title": "Security Guide", "content": "To reset your password, navigate to "
             "Settings > Security > Change Password and follow the steps."},
            {"title": "Security Best Practices", "content": "Use a long password and a "
             "password manager; security keys make accounts safer."}]})
        await _post(http, "/api/v1/documents/import", {"chatModelId": "default", "documents": [
            {"title": "Product Catalog", "url": "https://example.com/catalog.pdf",
             "content": "We offer a range of products including headsets, speakers and "
             "avatar kiosks."}]})
        chat = await _post(http, "/api/chat", {"message": "How do I write a function in Python?",
                                               "user_id": "user123"})
        env.update(conversation_id=chat["conversation_id"], message_id=chat["message_id"])
        await _post(http, "/api/feedback", {"conversation_id": chat["conversation_id"],
                                            "message_id": chat["message_id"],
                                            "feedback_type": "rating", "feedback_value": 4})
        other = await _post(http, "/api/chat", {"message": "Travel recommendations, please",
                                                "user_id": "user123"})
        env["conversation_to_delete"] = other["conversation_id"]
    await _oauth_parties(gw)
    problems = await run_steps(gw.base, load("000")[0][1], env)  # the OAuth example itself
    assert not problems and env.get("access_token"), f"set-up OAuth flow: {problems}"
    return env


# --- the replay ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(SEED_CONFIG))
async def test_seed_examples(seed: str, gateway_factory: Any,
                             llm_server: LocalOpenAIServer) -> None:
    fixtures = load(seed)
    assert fixtures, f"no fixtures for seed {seed}"
    main = gateway_factory(**SEED_CONFIG[seed])
    env = await build_world(main)
    others = variants(gateway_factory, llm_server)
    started: dict[str, Any] = {}
    failures: list[str] = []
    for name, fixture in fixtures:
        kind = fixture.get("gateway")
        if kind is not None and kind not in started:
            started[kind] = others[kind]()
        gw = started[kind] if kind else main
        failures += [f"{name}: {p}" for p in await replay(gw.base, fixture, env)]
    assert not failures, "\n".join(failures)


def table_rows() -> list[str]:
    rows = []
    for path in sorted(SEEDS.glob("*.json")):
        fixture = json.loads(path.read_text())
        rows.append(f"| {fixture['seed']} | {fixture['example']} | {path.name} |")
    return rows


def test_the_table_lists_every_fixture() -> None:
    """The docstring's table is the fixtures' index: one row per file, none stale."""
    listed = re.findall(r"^\| (\d{3}) \| .* \| (\S+\.json) \|$", __doc__ or "", re.M)
    files = sorted(p.name for p in SEEDS.glob("*.json"))
    assert sorted(name for _, name in listed) == files
    for seed, name in listed:
        assert name.startswith(seed + "_")
