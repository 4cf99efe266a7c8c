"""HybridLLM against a real local backend in the SmarterAvatar "Hybrid Integration" shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hybrid_server import LocalHybridServer

from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import ChatRequest, Message, Passage, ProviderError
from gateway.providers.hybrid_llm import HybridLLM, request_body

REPLY = "The gateway is a voice server for browsers and kiosks."
REQUEST = ChatRequest(
    messages=(Message("system", "You are the voice of Gym Pulse."),
              Message("user", "Hi"), Message("assistant", "Hello! How can I help?"),
              Message("user", "What is the gateway?")),
    passages=(Passage("About", "The gateway serves voice.", "about.md", 0.8),),
    session_id="conv_123",
)


@asynccontextmanager
async def make_llm(server: LocalHybridServer, **hybrid: Any) -> AsyncIterator[HybridLLM]:
    settings = {"url": server.url, "api_key": server.token, "timeout_s": 1.0,
                "headers": ["X-Tenant: gym-pulse"], **hybrid}
    llm = HybridLLM.from_config(Config().replace(hybrid=settings))
    try:
        yield llm
    finally:
        await llm.aclose()


async def collect(llm: HybridLLM, request: ChatRequest = REQUEST) -> list[str]:
    return [token async for token in llm.stream(request)]


async def failure(llm: HybridLLM, sink: list[str] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        async for token in llm.stream(REQUEST):
            if sink is not None:
                sink.append(token)
    return info.value


async def test_json_reply_is_spoken_in_word_tokens(hybrid_server: LocalHybridServer) -> None:
    async with make_llm(hybrid_server) as llm:
        tokens = await collect(llm)
    assert "".join(tokens) == REPLY and tokens[:2] == ["The ", "gateway "]
    sent = hybrid_server.last
    assert sent["body"] == {
        "message": "What is the gateway?", "sessionId": "conv_123",
        "context": {"history": [{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello! How can I help?"}],
                    "passages": [{"title": "About", "text": "The gateway serves voice.",
                                  "source": "about.md", "score": 0.8}],
                    "systemPrompt": "You are the voice of Gym Pulse."}}
    headers = sent["headers"]
    assert headers["authorization"] == f"Bearer {hybrid_server.token}"
    assert headers["x-tenant"] == "gym-pulse"
    assert headers["accept"] == "text/event-stream, application/json"


@pytest.mark.parametrize("mode", ["sse_data", "sse_event", "sse_final"])
async def test_sse_replies_stream(hybrid_server: LocalHybridServer, mode: str) -> None:
    hybrid_server.mode = mode
    async with make_llm(hybrid_server) as llm:
        tokens = await collect(llm)
    assert "".join(tokens) == REPLY  # the final {response} is not spoken twice
    assert hybrid_server.last["outcome"] == "completed"


async def test_tokens_arrive_as_the_backend_sends_them(hybrid_server: LocalHybridServer) -> None:
    hybrid_server.mode = "sse_data"
    hybrid_server.token_delay_s = 0.05
    async with make_llm(hybrid_server) as llm:
        began = time.monotonic()
        arrivals = [(time.monotonic() - began, t) async for t in llm.stream(REQUEST)]
    assert arrivals[0][0] < 0.15 and arrivals[-1][0] > 0.4


async def test_closing_the_stream_closes_the_response(hybrid_server: LocalHybridServer) -> None:
    hybrid_server.mode = "sse_data"
    hybrid_server.token_delay_s = 0.05
    async with make_llm(hybrid_server) as llm:
        stream = llm.stream(REQUEST)
        assert await anext(stream) == "The "
        await stream.aclose()
        deadline = time.monotonic() + 2
        while hybrid_server.last["outcome"] == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert hybrid_server.last["outcome"] == "disconnected"


def test_request_body_without_system_prompt_or_session() -> None:
    body = request_body(ChatRequest(messages=(Message("user", "Hello"),)))
    assert body == {"message": "Hello", "sessionId": "",
                    "context": {"history": [], "passages": []}}


async def test_registry_and_repr(hybrid_server: LocalHybridServer) -> None:
    cfg = Config().replace(llm={"provider": "hybrid"},
                           hybrid={"url": hybrid_server.url, "api_key": "hyb-secret-999",
                                   "headers": ["X-Key: header-secret-777"]})
    llm = registry.create_llm(cfg)
    try:
        assert isinstance(llm, HybridLLM)
        assert "hyb-secret-999" not in repr(llm) and "header-secret-777" not in repr(llm)
        assert "hyb-secret-999" not in repr(cfg) and "header-secret-777" not in repr(cfg)
    finally:
        await llm.aclose()


# --- errors -------------------------------------------------------------------------------


async def test_wrong_token_is_not_retryable(hybrid_server: LocalHybridServer) -> None:
    hybrid_server.echo_token_in_errors = True
    async with make_llm(hybrid_server, api_key="hyb-wrong-token-123456") as llm:
        err = await failure(llm)
    assert not err.retryable and "HTTP 401" in str(err) and "hybrid.api_key" in str(err)
    assert "hyb-wrong-token-123456" not in str(err) and hybrid_server.token not in str(err)


@pytest.mark.parametrize(("behaviour", "status", "retryable"), [
    ("rate_limit", 429, True), ("server_error", 500, True)])
async def test_status_errors(hybrid_server: LocalHybridServer, behaviour: str, status: int,
                             retryable: bool) -> None:
    hybrid_server.behaviour = behaviour
    hybrid_server.echo_token_in_errors = True  # a backend that quotes the gateway's token
    async with make_llm(hybrid_server) as llm:
        err = await failure(llm)
    assert err.retryable is retryable and f"HTTP {status}" in str(err)
    assert hybrid_server.token not in str(err)


async def test_a_reply_that_is_not_json(hybrid_server: LocalHybridServer) -> None:
    hybrid_server.behaviour = "bad_json"
    async with make_llm(hybrid_server) as llm:
        err = await failure(llm)
    assert not err.retryable and "no JSON" in str(err)


async def test_error_event_mid_stream(hybrid_server: LocalHybridServer) -> None:
    hybrid_server.mode = "sse_event"
    hybrid_server.behaviour = "error_event"
    tokens: list[str] = []
    async with make_llm(hybrid_server) as llm:
        err = await failure(llm, tokens)
    assert tokens == ["The ", "gateway "] and "backend exploded" in str(err)


async def test_hang_and_stall_hit_the_timeout(hybrid_server: LocalHybridServer) -> None:
    async with make_llm(hybrid_server, timeout_s=0.5) as llm:
        for behaviour in ("hang", "stall"):
            hybrid_server.mode = "sse_data"
            hybrid_server.behaviour = behaviour
            began = time.monotonic()
            err = await failure(llm)
            assert time.monotonic() - began < 1.2 and err.retryable and "timed out" in str(err)
            hybrid_server.release_hung()


async def test_unreachable_backend() -> None:
    llm = HybridLLM(url="http://127.0.0.1:9/chat", timeout_s=1.0)
    try:
        err = await failure(llm)
    finally:
        await llm.aclose()
    assert err.retryable and "cannot reach hybrid backend" in str(err)


def test_url_must_be_http() -> None:
    with pytest.raises(ProviderError, match=r"hybrid\.url"):
        HybridLLM(url="")
