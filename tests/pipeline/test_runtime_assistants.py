"""Per-assistant providers: an assistant naming its own STT / LLM / TTS gets a chain with
that provider first and the configured ones behind it; a provider that cannot load
falls back to the configured chain (logged once), never a failed turn."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from gateway.config import Config
from gateway.pipeline.runtime import Runtime
from gateway.providers import registry
from gateway.providers.base import ChatRequest, Message

CHOICES: dict[str, dict[str, str | None]] = {
    "fixed": {"llm": "null"},
    "broken": {"llm": "hybrid"},  # no hybrid.url configured: it cannot load
    "plain": {"llm": None, "stt": None, "tts": None},
    "grounded": {"llm": "grounded"},
}


@pytest.fixture
def runtime() -> Runtime:
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "extractive"},
                           tts={"provider": "null"})
    rt = Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg)})
    calls: list[str] = []

    async def providers(assistant_id: str) -> Mapping[str, str | None]:
        calls.append(assistant_id)
        await asyncio.sleep(0.01)
        return CHOICES.get(assistant_id, {})

    rt.assistant_providers = providers
    return rt


async def reply(rt: Runtime, assistant_id: str) -> str:
    request = ChatRequest(messages=(Message("user", "Hello?"),))
    chain = await rt.chain("llm", assistant_id)
    return "".join([t async for t in rt.reply_tokens(request, chain) if isinstance(t, str)])


async def test_the_assistants_provider_comes_first(runtime: Runtime) -> None:
    chain = await runtime.chain("llm", "fixed")
    assert [p.name for p in chain.providers] == ["null", "extractive"]
    assert await reply(runtime, "fixed") == "Hello! This is a benchmark reply."
    # The configured provider object and its breaker are shared, not loaded again.
    assert chain.providers[1] is runtime.chains["llm"].primary
    assert chain.breakers[1] is runtime.chains["llm"].breakers[0]
    assert await runtime.chain("llm", "fixed") is chain  # made once


async def test_no_choice_or_the_configured_one_is_the_default_chain(runtime: Runtime) -> None:
    default = runtime.chains["llm"]
    assert await runtime.chain("llm", "plain") is default
    assert await runtime.chain("llm", "nobody") is default
    assert await runtime.chain("llm", None) is default
    assert await runtime.chain("tts", "fixed") is runtime.chains["tts"]


async def test_a_provider_that_cannot_load_falls_back(runtime: Runtime) -> None:
    chains = await asyncio.gather(*(runtime.chain("llm", "broken") for _ in range(5)))
    assert all(c is runtime.chains["llm"] for c in chains)
    assert runtime._extra == {("llm", "hybrid", None): None}  # tried once, remembered
    assert "benchmark" not in await reply(runtime, "broken")


async def test_retrieval_follows_the_assistants_llm(runtime: Runtime) -> None:
    class Retriever:
        async def search(self, assistant_id: str, question: str, k: int) -> list[object]:
            return ["passage"]

    runtime.retriever = Retriever()
    assert await runtime.retrieve("plain", "q") == ["passage"]  # extractive reads passages
    assert await runtime.retrieve("fixed", "q") == []  # the null LLM does not


async def test_an_engine_may_read_more_passages_than_top_k(runtime: Runtime) -> None:
    asked: list[int] = []

    class Retriever:
        async def search(self, assistant_id: str, question: str, k: int) -> list[object]:
            asked.append(k)
            return []

    runtime.retriever = Retriever()
    await runtime.retrieve("plain", "q")  # extractive: the configured top_k
    await runtime.retrieve("grounded", "q")  # grounded speaks one sentence of 5 passages
    assert asked == [runtime.cfg.knowledge.top_k, max(runtime.cfg.knowledge.top_k, 5)] == [3, 5]


@pytest.fixture
def model_runtime() -> Runtime:
    # The openai LLM is made without a request: its model is what the chain shows.
    cfg = Config().replace(stt={"provider": "null"}, tts={"provider": "null"},
                           llm={"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                "model": "configured-model", "api_key": "sk-test"})
    rt = Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg)})
    models: dict[str, dict[str, str | None]] = {
        "own_model": {"llm_model": "assistant-model"},
        "same_model": {"llm_model": "configured-model"},
        "extractive_model": {"llm": "extractive", "llm_model": "ignored"},
    }

    async def providers(assistant_id: str) -> Mapping[str, str | None]:
        return models.get(assistant_id, {})

    rt.assistant_providers = providers
    return rt


async def test_an_assistants_model_gets_its_own_provider(model_runtime: Runtime) -> None:
    rt = model_runtime
    default = rt.chains["llm"]
    chain = await rt.chain("llm", "own_model")
    assert chain is not default and chain.primary.model == "assistant-model"
    assert [p.name for p in chain.providers] == ["openai", "openai"]
    assert chain.providers[1] is default.primary  # the configured model stays the fallback
    assert await rt.chain("llm", "own_model") is chain
    # The configured model, or a model for a provider that runs one, changes nothing.
    assert await rt.chain("llm", "same_model") is default
    extractive = await rt.chain("llm", "extractive_model")
    assert extractive.primary.name == "extractive"
    assert ("llm", "extractive", None) in rt._extra
