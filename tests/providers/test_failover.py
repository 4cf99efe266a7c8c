"""Failover: a stage's providers in order, circuit breakers, and the voice turn on top.

The failing providers are the real OpenAI client against a local server that speaks
OpenAI's wire format and misbehaves on request: errors, hangs, stalls mid-stream, 429s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.config import Config
from gateway.pipeline.breaker import Breaker
from gateway.pipeline.failover import Chain, Timeouts
from gateway.pipeline.pool import InferencePool
from gateway.providers.base import ChatRequest, Message, ProviderError
from gateway.providers.extractive_llm import ExtractiveLLM
from gateway.providers.openai_llm import OpenAILLM

FIRST_BYTE_S = 1.0


def openai_llm(server: Any, model: str) -> OpenAILLM:
    cfg = Config().replace(llm={
        "provider": "openai", "base_url": server.base_url, "api_key": server.api_key,
        "model": model, "first_token_timeout_s": FIRST_BYTE_S, "total_timeout_s": 10,
    })
    return OpenAILLM.from_config(cfg)


def chain(providers: list[Any], threshold: int = 3) -> Chain:
    pool = InferencePool("llm", 1, 8, 2.0)
    breakers = [Breaker(threshold, 30.0) for _ in providers]
    return Chain("llm", providers, pool, Timeouts(FIRST_BYTE_S, 10.0), breakers)


REQUEST = ChatRequest(messages=[Message("system", "Be brief."), Message("user", "ping")])


async def collect(c: Chain) -> str:
    def make(p: Any) -> Any:
        return p.generate(REQUEST) if hasattr(p, "generate") else p.stream(REQUEST)

    return "".join([t async for t in c.stream(make)])


@pytest.mark.parametrize("behaviour", ["server_error", "hang", "stall", "rate_limit"])
async def test_turn_completes_from_the_next_provider(openai_server, behaviour: str) -> None:
    openai_server.stall_after = 1
    c = chain([openai_llm(openai_server, behaviour), openai_llm(openai_server, "normal")])
    started = time.monotonic()
    text = await collect(c)
    elapsed = time.monotonic() - started
    assert text.endswith("Echo: ping")
    # No gap beyond the first-byte timeout (plus the client's own retry for 429/5xx).
    assert elapsed < FIRST_BYTE_S + 1.5, elapsed
    assert c.failovers == 1 and c.exhausted == 0
    openai_server.release_hung()


async def test_provider_error_only_when_every_provider_failed(openai_server) -> None:
    c = chain([openai_llm(openai_server, "server_error"), openai_llm(openai_server, "hang")])
    with pytest.raises(ProviderError, match="all llm providers failed"):
        await collect(c)
    assert c.exhausted == 1
    openai_server.release_hung()


async def test_breaker_skips_a_failing_provider_then_probes(openai_server) -> None:
    failing = openai_llm(openai_server, "server_error")
    c = chain([failing, ExtractiveLLM()], threshold=2)
    for _ in range(2):
        await collect(c)
    assert c.breakers[0].state(time.monotonic()) == "open"
    before = len(openai_server.requests)
    await collect(c)  # skipped: no request reaches the failing server
    assert len(openai_server.requests) == before
    assert "circuit open" in c.health()["openai"]
    c.breakers[0].opened_at = time.monotonic() - 31  # cooldown over: one probe goes through
    await collect(c)
    assert len(openai_server.requests) > before  # (the client retries a 500 once)


def test_breaker_state_machine() -> None:
    b = Breaker(threshold=2, cooldown_s=10)
    assert b.allow(0) and b.state(0) == "closed"
    b.failure(0, "x")
    assert b.state(0) == "closed"
    b.failure(1, "y")
    assert b.state(2) == "open" and not b.allow(2)
    assert b.state(11) == "half-open" and b.allow(11) and not b.allow(11)  # one probe
    b.failure(11, "z")
    assert b.state(12) == "open"
    assert b.allow(22)
    b.success()
    assert b.state(22) == "closed" and b.describe(22) == "ok"


async def test_voice_turn_survives_a_hanging_primary(gateway_factory, openai_server) -> None:
    from voice_client import VoiceClient

    gw = gateway_factory(providers={"llm": [openai_llm(openai_server, "hang"), ExtractiveLLM()]},
                         llm={"first_token_timeout_s": FIRST_BYTE_S})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "How is the weather?"})
    reply = await client.wait_for("agent_response", timeout=20)
    await client.wait_for("stream_end", timeout=30)
    await client.close()
    assert "sunny" in reply["text"]
    assert not client.events("error")
    openai_server.release_hung()
    import httpx

    async with httpx.AsyncClient(base_url=gw.base) as http:
        health = (await http.get("/api/health")).json()
        metrics = (await http.get("/metrics")).text
    assert health["provider_details"]["llm"]["failovers"] == 1
    assert set(health["provider_details"]["llm"]["providers"]) == {"openai", "extractive"}
    assert 'gateway_failovers_total{stage="llm"} 1' in metrics


async def test_voice_turn_all_providers_down(gateway_factory, openai_server) -> None:
    from voice_client import VoiceClient

    gw = gateway_factory(providers={"llm": [openai_llm(openai_server, "server_error")]})
    client = await VoiceClient.connect(gw.ws_url)
    await client.wait_for("session_started")
    await client.send_json({"type": "text", "text": "Hello?"})
    err = await client.wait_for("error", timeout=20)
    await client.wait_for("stream_end", timeout=10)
    await client.close()
    assert err["code"] == "PROVIDER_ERROR"
    await asyncio.sleep(0)
