"""Property-based fuzzing of the HTTP API against the gateway's own OpenAPI document.

Schemathesis reads ``/openapi.json`` from a real gateway (uvicorn, real sockets, the
suite's database backend) and, for every operation, sends generated requests — valid
ones (positive mode) and deliberately invalid ones (negative mode) — with an admin API
key. Every response must:

* not be a 5xx (``not_a_server_error``);
* have a status code the operation declares (``status_code_conformance``);
* have a content type declared for that status (``content_type_conformance``);
* match the declared schema of that status, each event of an SSE stream included
  (``response_schema_conformance``).

Random identifiers mostly name nothing (a 404 is all they can reach), so in half of the
positive cases the identifiers are replaced by ones that exist: the ``default``
assistant, a document, a conversation and its reply, a template, a real WAV for the
audio uploads. Deletions get throwaway targets (a document, a conversation, an
assistant, a key), never the admin key the run depends on.

Bounded and reproducible: ``derandomize=True`` (the same cases on every run), at most
``MAX_EXAMPLES`` cases per operation and mode, no deadline (uploads run Whisper), no
shrinking (the first failing case is reported with its curl line), Schemathesis'
coverage phase off (hundreds of boundary cases per operation). Rate limits stay on but
high, so the limiter's code runs without refusing the fuzzer. About a minute per
backend (``GATEWAY_TEST_DB=postgres`` for PostgreSQL).

The harness drives Schemathesis' Python API (``schemathesis.openapi.from_url`` and
``APIOperation.as_strategy``) with Hypothesis itself: ``schemathesis.pytest.from_fixture``
(needed for a per-test server) fails under pytest 9 (it sets ``Function._nodeid``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from chat_helpers import make_key, wav_bytes
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

MAX_EXAMPLES = 20
HIGH = "100000/minute"
LIMITS = {f"group_{g}": HIGH for g in ("chat", "token", "health", "import", "query",
                                       "search", "voice", "oauth", "default")}
LIMITS.update({f"tier_{t}": HIGH for t in ("free", "basic", "pro", "enterprise")})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
WAV = "what_is_the_gateway.wav"


async def seed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Things for the fuzzer to find: ``{"keep": {...}, "delete": {...}}`` by field name."""

    async def ok(resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code in (200, 201), resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def document(title: str) -> str:
        body = await ok(await http.post("/api/v1/documents/import", json={
            "chatModelId": "default", "documents": [
                {"title": title, "content": f"{title}: the gateway speaks and listens."}]}))
        return str(body["documents"][0]["id"])

    async def conversation(text: str) -> dict[str, Any]:
        return await ok(await http.post("/api/chat", json={"message": text, "user_id": "fuzz"}))

    chat = await conversation("What is the gateway?")
    other = await conversation("What is barge-in?")
    await ok(await http.post("/api/v1/assistants", json={"id": "fuzz-disposable"}))
    key = await ok(await http.post("/api/v1/keys", json={"name": "disposable"}))
    keep = {"chatModelId": "default", "assistant_id": "default",
            "doc_id": await document("Kept document"),
            "conversation_id": chat["conversation_id"], "message_id": chat["message_id"],
            "template_name": "standard_assistant", "audio": wav_bytes(WAV)}
    delete = {**keep, "doc_id": await document("Disposable document"),
              "conversation_id": other["conversation_id"], "message_id": other["message_id"],
              "assistant_id": "fuzz-disposable", "key_id": key["key_id"]}
    return {"keep": keep, "delete": delete}


@pytest.fixture
async def fuzz_target(gateway_factory: Any) -> dict[str, Any]:
    gw = gateway_factory(ratelimit=LIMITS, server={"allow_anonymous": "false"})
    headers = {"Authorization": f"Bearer {await make_key(gw)}"}
    async with httpx.AsyncClient(base_url=gw.base, headers=headers, timeout=60) as http:
        known = await seed(http)
    return {"gw": gw, "headers": headers, "known": known}


def load_schema(gw: Any, headers: dict[str, str]) -> Any:
    """The gateway's own /openapi.json, as Schemathesis sees it."""
    config = schemathesis.config.SchemathesisConfig.from_dict({
        "headers": headers, "request-timeout": 60,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    })
    return schemathesis.openapi.from_url(f"{gw.base}/openapi.json", config=config)


def use_known(case: Any, known: dict[str, dict[str, Any]]) -> None:
    """Point a generated case at things that exist (throwaway ones for a DELETE)."""
    values = known["delete" if case.method.upper() == "DELETE" else "keep"]
    for container in (case.path_parameters, case.query, case.body):
        if isinstance(container, dict):
            for name in container.keys() & values.keys():
                container[name] = values[name]


def fuzz_operation(operation: Any, mode: GenerationMode, target: dict[str, Any]) -> str | None:
    """Run one operation's generated cases; the first failure's report, or None."""
    headers = target["headers"]

    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any, known: bool) -> None:
        if known and mode is GenerationMode.POSITIVE:
            use_known(case, target["known"])
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): no cases
        return None
    except (Exception, BaseExceptionGroup) as exc:  # Schemathesis' FailureGroup and the like
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


async def test_openapi_conformance(fuzz_target: dict[str, Any]) -> None:
    schema = load_schema(fuzz_target["gw"], fuzz_target["headers"])
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40  # the whole API is documented, not a stub
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Off the event loop: the cases block on HTTP to the gateway's own thread.
            found = await asyncio.to_thread(fuzz_operation, operation, mode, fuzz_target)
            if found:
                failures.append(found)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("POST", "/api/v1/documents/search", {"json": {"chatModelId": "a\x00b", "query": "x"}}),
    ("GET", "/api/v1/voice/twilio/twiml", {"params": {"assistant_id": "a\x00b"}}),
    ("GET", "/api/v1/documents/a%00b", {}),
    ("GET", "/api/v1/assistants/a%00b", {}),
    ("DELETE", "/api/v1/keys/a%00b", {}),
    ("POST", "/api/v1/keys", {"json": {"assistant_id": "a\x00b"}}),
])
async def test_nul_in_an_identifier_is_a_client_error(gateway_factory: Any, method: str,
                                                      path: str, kwargs: Any) -> None:
    """What the fuzzer found on PostgreSQL (its text type refuses NUL): a 500 there."""
    gw = gateway_factory()
    headers = {"Authorization": f"Bearer {await make_key(gw)}"}
    async with httpx.AsyncClient(base_url=gw.base, headers=headers) as http:
        resp = await http.request(method, path, **kwargs)
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()["error"]["code"] in ("INVALID_REQUEST", "INVALID_MODEL_ID")
