"""Process-wide resources shared by every session: models, knowledge base, worker pools.

Loaded once in the application lifespan. Sessions call the stage helpers here, which
run blocking providers in the stage's bounded pool and apply the stage's timeouts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import STT, TTS, VAD, ChatRequest, Passage, ProviderError, Speech

from .pool import InferencePool

log = structlog.get_logger("gateway.runtime")


@dataclass
class Runtime:
    cfg: Config
    vad: VAD
    stt: STT
    llm: Any
    tts: TTS
    pools: dict[str, InferencePool] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    # Set by the app once the database is up: async search(assistant_id, question, k).
    retriever: Any = None

    @classmethod
    def load(cls, cfg: Config, *, overrides: dict[str, Any] | None = None) -> Runtime:
        """Load every provider (blocking: call from a thread). ``overrides`` injects
        ready-made provider objects by stage name (tests)."""
        overrides = overrides or {}
        status: dict[str, str] = {}

        def make(stage: str, factory: Callable[[Config], Any]) -> Any:
            if stage in overrides:
                status[stage] = "ok"
                return overrides[stage]
            started = time.perf_counter()
            try:
                obj = factory(cfg)
            except ProviderError as exc:
                if stage == "llm" and cfg.llm.provider == "llama":
                    # The small local model is optional; answer from the knowledge base.
                    log.warning("llm_fallback", provider="extractive", reason=str(exc))
                    obj = registry.create("llm", "extractive", cfg)
                else:
                    raise
            status[stage] = "ok"
            log.info("provider_loaded", stage=stage, provider=obj.name,
                     ms=round((time.perf_counter() - started) * 1000))
            return obj

        w = cfg.workers
        pools = {
            stage: InferencePool(stage, threads, w.max_waiting, w.wait_timeout_s)
            for stage, threads in (("stt", w.threads), ("llm", 1), ("tts", w.threads))
        }
        return cls(
            cfg=cfg,
            vad=make("vad", registry.create_vad),
            stt=make("stt", registry.create_stt),
            llm=make("llm", registry.create_llm),
            tts=make("tts", registry.create_tts),
            pools=pools,
            status=status,
        )

    def health(self) -> dict[str, str]:
        return {stage: self.status.get(stage, "error: not loaded")
                for stage in ("vad", "stt", "llm", "tts")}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()
        for provider in (self.stt, self.llm, self.tts):
            closer = getattr(provider, "close", None)
            if callable(closer) and not inspect.iscoroutinefunction(closer):
                closer()

    async def aclose(self) -> None:
        closer = getattr(self.llm, "aclose", None)
        if closer is not None:
            await closer()
        self.close()

    # --- stage helpers -------------------------------------------------------------

    async def transcribe(self, pcm16k: bytes, language: str | None) -> str:
        job = functools.partial(self.stt.transcribe, pcm16k, language=language)
        return await self.pools["stt"].run(job, timeout=self.cfg.stt.timeout_s)

    async def synthesize(self, text: str, voice: str | None, out_rate: int) -> Speech:
        def job() -> Speech:
            speech = self.tts.synthesize(text, voice=voice)
            if speech.sample_rate == out_rate:
                return speech
            resampled = pcm.resample(speech.pcm, speech.sample_rate, out_rate)
            return Speech(resampled, out_rate, speech.phonemes)

        return await self.pools["tts"].run(job, timeout=self.cfg.tts.timeout_s)

    async def retrieve(self, assistant_id: str, question: str) -> list[Passage]:
        """Knowledge-base passages for a question; none (not a failed turn) on trouble."""
        if self.retriever is None:
            return []
        try:
            async with asyncio.timeout(2.0):
                passages: list[Passage] = await self.retriever.search(
                    assistant_id, question, self.cfg.knowledge.top_k
                )
                return passages
        except Exception as exc:  # retrieval trouble must not kill the turn
            log.warning("retrieval_failed", error=str(exc))
            return []

    def reply_tokens(self, request: ChatRequest) -> AsyncIterator[str]:
        """Token stream from the configured LLM, blocking or async, with the LLM timeouts."""
        llm_cfg = self.cfg.llm
        if hasattr(self.llm, "generate"):
            return self.pools["llm"].iterate(
                lambda: self.llm.generate(request),
                first_timeout=llm_cfg.first_token_timeout_s,
                total_timeout=llm_cfg.total_timeout_s,
            )
        stream: AsyncIterator[str] = self.llm.stream(request)
        return stream
