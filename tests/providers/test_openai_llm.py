"""OpenAILLM against a real local HTTP server speaking the OpenAI wire format.

The official client runs unpatched on our side; only the server is ours.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from openai_server import LocalOpenAIServer

from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import ChatRequest, Message, Passage, ProviderError
from gateway.providers.openai_llm import OpenAILLM, build_messages

SYSTEM = "You are the voice assistant of Gym Pulse. Answer briefly."
PASSAGES = (
    Passage("Opening hours", "We open at 6 am\non weekdays.", "hours.md", 0.9),
    Passage("Parking", "Parking is free for members.", "parking.md", 0.4),
)
REQUEST = ChatRequest(
    messages=(
        Message("system", SYSTEM),
        Message("user", "Hi there"),
        Message("assistant", "Hello! How can I help?"),
        Message("user", "When do you open?"),
    ),
    passages=PASSAGES,
    max_tokens=77,
    temperature=0.3,
)


@asynccontextmanager
async def make_llm(server: LocalOpenAIServer, **llm: Any) -> AsyncIterator[OpenAILLM]:
    settings = {
        "provider": "openai",
        "base_url": server.base_url,
        "api_key": server.api_key,
        "model": "gpt-test",
        # Generous unless a test is about timeouts: the first request of a busy CI run
        # (both databases' suites at once) once took over 0.5 s to its first token.
        "first_token_timeout_s": 5.0,
        "total_timeout_s": 10.0,
        **llm,
    }
    provider = OpenAILLM.from_config(Config().replace(llm=settings))
    try:
        yield provider
    finally:
        await provider.aclose()


async def collect(llm: OpenAILLM, request: ChatRequest = REQUEST) -> list[str]:
    return [token async for token in llm.stream(request)]


async def failure(llm: OpenAILLM, sink: list[str] | None = None) -> ProviderError:
    """Run a reply that must fail; return the error (tokens before it go to ``sink``)."""
    with pytest.raises(ProviderError) as info:
        async for token in llm.stream(REQUEST):
            if sink is not None:
                sink.append(token)
    return info.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the happy path -------------------------------------------------------------------


async def test_tokens_arrive_in_order(openai_server: LocalOpenAIServer) -> None:
    async with make_llm(openai_server) as llm:
        tokens = await collect(llm)
    assert tokens == ["Echo: ", "When ", "do ", "you ", "open?"]  # role chunk skipped
    assert "".join(tokens) == "Echo: When do you open?"
    assert openai_server.last.wait() == "completed"  # the handler ends just after its last byte


async def test_request_carries_params_prompt_passages_and_history(
    openai_server: LocalOpenAIServer,
) -> None:
    async with make_llm(openai_server, model="gpt-4o-mini") as llm:
        await collect(llm)
    sent = openai_server.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {openai_server.api_key}"
    body = sent.body
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("gpt-4o-mini", 77, 0.3)
    assert body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    system = body["messages"][0]["content"]
    assert system.startswith(SYSTEM)
    assert "Facts:\n1. Opening hours: We open at 6 am on weekdays.\n" in system
    assert system.endswith("2. Parking: Parking is free for members.")
    assert body["messages"][-1] == {"role": "user", "content": "When do you open?"}


async def test_usage_only_chunk_is_ignored(openai_server: LocalOpenAIServer) -> None:
    openai_server.force_usage_chunk = True  # llama.cpp-style: a chunk with no choices
    openai_server.reply = "Six am."
    async with make_llm(openai_server) as llm:
        assert "".join(await collect(llm)) == "Six am."


async def test_empty_key_sends_placeholder(openai_server: LocalOpenAIServer) -> None:
    async with make_llm(openai_server, api_key="") as llm:
        await failure(llm)  # the test server wants its own key: 401
    assert openai_server.last.headers["authorization"] == "Bearer not-needed"


async def test_registry_builds_the_provider(openai_server: LocalOpenAIServer) -> None:
    cfg = Config().replace(llm={"provider": "openai", "base_url": openai_server.base_url})
    llm = registry.create_llm(cfg)
    try:
        assert isinstance(llm, OpenAILLM) and llm.name == "openai"
    finally:
        await llm.aclose()


# --- errors ---------------------------------------------------------------------------


async def test_401_is_not_retryable_and_hides_the_key(openai_server: LocalOpenAIServer) -> None:
    secret = "sk-wrong-secret-key-987654321"
    openai_server.echo_key_in_errors = True  # even if the server quotes the whole key
    # Generous budgets: an error answer is immediate, but a loaded machine must not turn it
    # into a first-token timeout.
    async with make_llm(openai_server, api_key=secret, first_token_timeout_s=5.0,
                        total_timeout_s=10.0) as llm:
        err = await failure(llm)
    assert not err.retryable
    assert "401" in str(err) and "invalid_api_key" in str(err)
    assert secret not in str(err) and secret[-8:] not in str(err)
    assert isinstance(err.__cause__, openai.AuthenticationError)
    assert len(openai_server.requests) == 1  # the client does not retry a 401


@pytest.mark.parametrize(
    ("behaviour", "status", "cause"),
    [("rate_limit", 429, openai.RateLimitError), ("server_error", 500, openai.InternalServerError)],
)
async def test_429_and_500_are_retryable(
    openai_server: LocalOpenAIServer, behaviour: str, status: int, cause: type[Exception]
) -> None:
    openai_server.echo_key_in_errors = True
    # The client's retry backoff (0.375-0.5 s) runs inside the first-token budget.
    async with make_llm(openai_server, model=behaviour, first_token_timeout_s=5.0,
                        total_timeout_s=10.0) as llm:
        err = await failure(llm)
    assert err.retryable
    assert f"HTTP {status}" in str(err) and "request id req_" in str(err)
    assert openai_server.api_key not in str(err)
    assert isinstance(err.__cause__, cause)
    assert len(openai_server.requests) == 2  # max_retries=1: one retry inside the client


async def test_exhausted_quota_is_not_retryable(openai_server: LocalOpenAIServer) -> None:
    async with make_llm(openai_server, model="quota", first_token_timeout_s=5.0,
                        total_timeout_s=10.0) as llm:
        err = await failure(llm)
    assert not err.retryable and "insufficient_quota" in str(err)


async def test_unreachable_server_is_retryable() -> None:
    cfg = Config().replace(llm={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    llm = OpenAILLM.from_config(cfg)
    try:
        err = await failure(llm)
    finally:
        await llm.aclose()
    assert err.retryable and "cannot reach" in str(err)
    assert isinstance(err.__cause__, openai.APIConnectionError)


# --- timeouts and closing ---------------------------------------------------------------


async def test_hang_before_first_byte_hits_first_token_timeout(
    openai_server: LocalOpenAIServer,
) -> None:
    async with make_llm(openai_server, model="hang", first_token_timeout_s=0.5) as llm:
        began = time.monotonic()
        err = await failure(llm)
        elapsed = time.monotonic() - began
    assert 0.45 <= elapsed < 0.9
    assert err.retryable and "first-token timeout" in str(err)
    assert openai_server.last.wait() == "disconnected"  # the request was abandoned


async def test_mid_stream_stall_fails_within_total_timeout(
    openai_server: LocalOpenAIServer,
) -> None:
    tokens: list[str] = []
    async with make_llm(openai_server, model="stall", first_token_timeout_s=0.5,
                        total_timeout_s=1.5) as llm:
        began = time.monotonic()
        err = await failure(llm, tokens)
        elapsed = time.monotonic() - began
    assert tokens == ["Echo: ", "When "]  # what came before the stall still arrived
    # The client's read timeout (= first-token timeout) notices the silence first.
    assert elapsed < 1.5 and err.retryable
    assert openai_server.last.wait() == "disconnected"


async def test_endless_stream_hits_total_timeout(openai_server: LocalOpenAIServer) -> None:
    tokens: list[str] = []
    async with make_llm(openai_server, model="slow", total_timeout_s=1.0) as llm:
        began = time.monotonic()
        err = await failure(llm, tokens)
        elapsed = time.monotonic() - began
    assert 0.95 <= elapsed < 1.4
    assert len(tokens) > 5 and "total timeout of 1 s" in str(err)
    assert openai_server.last.wait() == "disconnected"


async def test_closing_the_generator_closes_the_stream(openai_server: LocalOpenAIServer) -> None:
    async with make_llm(openai_server, model="slow") as llm:
        stream = llm.stream(REQUEST)
        assert await anext(stream) == "Echo: "
        await stream.aclose()
        assert openai_server.last.wait(1.0) == "disconnected"
    assert len(openai_server.requests) == 1


# --- message building and the server's own format ------------------------------------------


def test_build_messages_without_system_prompt() -> None:
    msgs = (Message("tool", "ignored"), Message("user", "Where do I park?"))
    built = build_messages(msgs, PASSAGES[1:])
    assert built == [
        {"role": "system", "content": "Facts:\n1. Parking: Parking is free for members."},
        {"role": "user", "content": "Where do I park?"},
    ]


async def test_server_non_streaming_wire_format(openai_server: LocalOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key=openai_server.api_key)
    try:
        reply = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "ping"}]
        )
    finally:
        await client.close()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "Echo: ping"
    assert reply.choices[0].finish_reason == "stop" and reply.usage is not None
    assert re.fullmatch(r"chatcmpl-\w+", reply.id)
