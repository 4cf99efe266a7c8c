"""Property-based fuzzing of the HTTP API against the gateway's own OpenAPI document.

Schemathesis reads ``/openapi.json`` from a real gateway (uvicorn, real sockets, the
suite's database backend) and, for every operation, sends generated requests — valid
ones and deliberately invalid ones — with an admin API key. Each response must:

* not be a 5xx (``not_a_server_error``);
* have a status code the operation declares (``status_code_conformance``);
* have a content type the operation declares for that status (``content_type_conformance``);
* match the declared JSON schema of that status (``response_schema_conformance``).

Bounded and reproducible: ``derandomize=True`` (the same cases every run), a few
examples per operation and mode, no deadline (a voice upload runs Whisper), the
coverage phase off (it enumerates hundreds of boundary cases per operation). Rate
limits are on but high, so the limiter's code path runs without refusing the fuzzer.

Run alone: ``pytest tests/api/test_schemathesis.py`` (``GATEWAY_TEST_DB=postgres`` for
the PostgreSQL backend).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from chat_helpers import make_key
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

MAX_EXAMPLES = 30
HIGH = "100000/minute"
LIMITS = {f"group_{g}": HIGH for g in ("chat", "token", "health", "import", "query",
                                       "search", "voice", "oauth", "default")}
LIMITS.update({f"tier_{t}": HIGH for t in ("free", "basic", "pro", "enterprise")})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
async def fuzz_target(gateway_factory: Any) -> dict[str, Any]:
    gw = gateway_factory(ratelimit=LIMITS, server={"allow_anonymous": "false"})
    return {"gw": gw, "headers": {"Authorization": f"Bearer {await make_key(gw)}"}}


def load_schema(gw: Any, headers: dict[str, str]) -> Any:
    """The gateway's own /openapi.json, as Schemathesis sees it."""
    config = schemathesis.config.SchemathesisConfig.from_dict({
        "headers": headers, "request-timeout": 60,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    })
    return schemathesis.openapi.from_url(f"{gw.base}/openapi.json", config=config)


def fuzz_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> str | None:
    """Run one operation's generated cases; the first failure's report, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # no parameters or body to make invalid: no negative cases
        return None
    except (Exception, BaseExceptionGroup) as exc:  # Schemathesis' FailureGroup and the like
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


async def test_openapi_conformance(fuzz_target: dict[str, Any]) -> None:
    schema = load_schema(fuzz_target["gw"], fuzz_target["headers"])
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found = await asyncio.to_thread(fuzz_operation, operation, mode,
                                            fuzz_target["headers"])
            if found:
                failures.append(found)
        count += 1
    assert count > 30
    assert not failures, "\n\n".join(failures)
