"""Process-wide resources shared by every session: models, knowledge base, worker pools.

Loaded once in the application lifespan. Sessions call the stage helpers here, which
run blocking providers in the stage's bounded pool and apply the stage's timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from gateway.audio import pcm
from gateway.config import Config
from gateway.providers import registry
from gateway.providers.base import (
    STT,
    TTS,
    VAD,
    ChatRequest,
    Embedder,
    Passage,
    ProviderError,
    Speech,
    TextTurnDetector,
    ToolCall,
    ToolSpec,
    TurnDetector,
)

from .breaker import Breaker
from .failover import Chain, Timeouts
from .pool import InferencePool, PoolBusy, in_nicer_thread
from .telemetry import TurnObserver
from .tools import Toolbox, ToolContext, ToolLoop, ToolRunner

log = structlog.get_logger("gateway.runtime")


ChainKey = tuple[str, str, str | None]
_TURN_CHECK_TIMEOUT_S = 2.0


@dataclass
class Runtime:
    cfg: Config
    vad: VAD
    chains: dict[str, Chain]
    pools: dict[str, InferencePool] = field(default_factory=dict)
    # Set by the app once the database is up: async search(assistant_id, question, k).
    retriever: Any = None
    tools: ToolRunner | None = None  # function tools (made in load())
    # The end-of-turn model (Smart Turn) when [turn] detector asks for one; None: silence.
    turn_detector: TurnDetector | None = None
    # The end-of-turn language model (the words at a pause; [turn] words); None: the
    # sound alone decides.
    text_turn: TextTurnDetector | None = None
    # The quick STT ([stt] quick_model): what turn-taking waits on is decoded with it, and
    # only finals with the configured model; None: one model for all.
    quick_stt: Chain | None = None
    ahead_stt: Chain | None = None  # the STT chain in nicer threads (decodes ahead of need)
    ahead_tts: Chain | None = None  # the TTS chain in nicer threads (speech made ahead)
    # Sentence embeddings (semantic search, hybrid retrieval); None: full-text search only.
    embedder: Embedder | None = None
    # Set by the app once the database is up: async (assistant_id) -> {stage: provider
    # name or None}, the assistant's own STT / LLM / TTS choice (None: the config's).
    assistant_providers: Callable[[str], Awaitable[Mapping[str, str | None]]] | None = None
    # Told of every finished turn (Prometheus metrics, OpenTelemetry traces).
    observers: list[TurnObserver] = field(default_factory=list)
    # (stage, provider name, model) -> the chain an assistant naming them gets; None:
    # unusable. (model None: the configured one.)
    _extra: dict[ChainKey, Chain | None] = field(default_factory=dict)
    _loading: dict[ChainKey, asyncio.Task[Chain | None]] = field(default_factory=dict)
    _preparing: set[asyncio.Future[Chain]] = field(default_factory=set)

    @property
    def stt(self) -> STT:
        return self.chains["stt"].primary  # type: ignore[no-any-return]

    @property
    def llm(self) -> Any:
        return self.chains["llm"].primary

    @property
    def tts(self) -> TTS:
        return self.chains["tts"].primary  # type: ignore[no-any-return]

    @classmethod
    def load(cls, cfg: Config, *, overrides: dict[str, Any] | None = None) -> Runtime:
        """Load every provider (blocking: call from a thread). ``overrides`` injects
        ready-made provider objects, or lists of them (a failover chain), by stage."""
        overrides = overrides or {}
        w = cfg.workers
        pools = {
            stage: InferencePool(stage, threads, w.max_waiting, w.wait_timeout_s)
            for stage, threads in (("stt", w.threads), ("llm", 1), ("tts", w.threads),
                                   ("embed", 1), ("embed_bulk", 1))
        }
        timeouts = {
            "stt": Timeouts(cfg.stt.timeout_s, cfg.stt.timeout_s),
            "llm": Timeouts(cfg.llm.first_token_timeout_s, cfg.llm.total_timeout_s),
            "tts": Timeouts(cfg.tts.timeout_s, cfg.tts.timeout_s),
        }
        chains: dict[str, Chain] = {}
        for stage in ("stt", "llm", "tts"):
            providers = _stage_providers(cfg, stage, overrides.get(stage))
            breakers = [_breaker(cfg) for _ in providers]
            chains[stage] = Chain(stage, providers, pools[stage], timeouts[stage], breakers)
        vad = overrides.get("vad") or _load(cfg, "vad", cfg.vad.provider)
        t = cfg.turn
        pools["turn"] = InferencePool("turn", t.threads, t.max_waiting, t.wait_ms / 1000)
        embedder = (overrides["embedder"] if "embedder" in overrides
                    else _load_embedder(cfg))
        quick = _quick_stt(cfg, overrides)
        quick_chain = None if quick is None else Chain(
            "stt", [quick], pools["stt"], timeouts["stt"],
            [_breaker(cfg)])
        ahead_chain = None
        if quick is not None and w.ahead_nice > 0:
            # The STT chain's providers and breakers in nicer threads; a provider that
            # computes in threads of its own gets a nicer copy of its own.
            pools["stt_ahead"] = InferencePool("stt_ahead", w.threads, w.max_waiting,
                                               w.wait_timeout_s, nice=w.ahead_nice)
            stt = chains["stt"]
            # (Injected providers are used as given: tests share one model everywhere.)
            ahead = stt.providers if "stt" in overrides \
                else _nicer_copies(stt.providers, w.ahead_nice)
            ahead_chain = Chain("stt", ahead, pools["stt_ahead"], stt.timeouts, stt.breakers)
        ahead_tts = None
        if w.ahead_nice > 0:
            pools["tts_ahead"] = InferencePool("tts_ahead", w.threads, w.max_waiting,
                                               w.wait_timeout_s, nice=w.ahead_nice)
            tts = chains["tts"]
            ahead_tts = Chain("tts", tts.providers, pools["tts_ahead"], tts.timeouts,
                              tts.breakers)  # Piper computes in the (nicer) pool thread
        return cls(cfg=cfg, vad=vad, chains=chains, pools=pools, tools=ToolRunner(cfg),
                   turn_detector=_turn_detector(cfg, overrides), embedder=embedder,
                   text_turn=_text_turn(cfg, overrides), quick_stt=quick_chain,
                   ahead_stt=ahead_chain, ahead_tts=ahead_tts)

    def health(self) -> dict[str, str]:
        """Per stage "ok" or "error: …" (the primary's state; every provider in details)."""
        out = {"vad": "ok"}
        for stage, chain in self.chains.items():
            states = list(chain.health().values())
            ok = [st for st in states if st.startswith("ok")]
            out[stage] = "ok" if ok and states[0].startswith("ok") else (
                f"degraded: {states[0]}" if ok else states[0])
        return out

    def provider_details(self) -> dict[str, Any]:
        return {stage: {"providers": chain.health(), "failovers": chain.failovers,
                        "all_failed": chain.exhausted}
                for stage, chain in self.chains.items()}

    def _all_chains(self) -> list[Chain]:
        own = [c for c in (self.quick_stt, self.ahead_stt, self.ahead_tts) if c is not None]
        return [*self.chains.values(), *own,
                *(c for c in self._extra.values() if c is not None)]

    def _all_providers(self) -> list[Any]:
        """Every provider of every chain, once (chains share providers)."""
        seen: dict[int, Any] = {}
        for chain in self._all_chains():
            for provider in chain.providers:
                seen.setdefault(id(provider), provider)
        return list(seen.values())

    async def chain(self, stage: str, assistant_id: str | None) -> Chain:
        """The failover chain of ``stage`` for an assistant: its own provider (with its
        own model, for providers that have a choice) first when it names one (loaded on
        first use, off the event loop), then the configured chain. A provider that cannot
        be loaded is logged once and the config's used."""
        default = self.chains[stage]
        if assistant_id is None or self.assistant_providers is None:
            return default
        try:
            prefs = await self.assistant_providers(assistant_id)
        except Exception as exc:  # the configured chain then, never a failed turn
            log.warning("assistant_providers_not_loaded", error=str(exc))
            return default
        primary = getattr(default.primary, "name", None)
        name = prefs.get(stage) or primary
        model = prefs.get(f"{stage}_model") or None
        if name is None:
            return default
        if model == registry.configured_model(self.cfg, stage, name) or (
                model is not None and (stage, name) not in registry.MODEL_SETTINGS):
            model = None  # what the config runs anyway, or a provider with one model
        if name == primary and model is None:
            return default
        key: ChainKey = (stage, name, model)
        if key in self._extra:
            return self._extra[key] or default
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._extra_chain(stage, name, model))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task) or default

    def prepare(self, assistant_id: str) -> None:
        """Start loading an assistant's own providers now (it was created or changed),
        so its first turn does not wait for a model to load."""
        for stage in ("stt", "llm", "tts"):
            task = asyncio.ensure_future(self.chain(stage, assistant_id))
            self._preparing.add(task)
            task.add_done_callback(self._preparing.discard)

    async def _extra_chain(self, stage: str, name: str, model: str | None) -> Chain | None:
        default = self.chains[stage]
        pairs = list(zip(default.providers, default.breakers, strict=True))
        mine = ([pair for pair in pairs if getattr(pair[0], "name", None) == name]
                if model is None else [])
        if not mine:
            cfg = self.cfg if model is None else registry.with_model(self.cfg, stage, name, model)
            try:
                provider = await asyncio.to_thread(_load, cfg, stage, name)
            except Exception as exc:  # ProviderError, or no thread at shutdown: never a turn's
                log.warning("assistant_provider_unavailable", stage=stage, provider=name,
                            model=model, error=str(exc),
                            note="the configured providers answer instead")
                self._extra[(stage, name, model)] = None
                return None
            mine = [(provider, _breaker(self.cfg))]
        rest = [pair for pair in pairs if pair[0] is not mine[0][0]]
        ordered = [mine[0], *rest]  # breakers of shared providers are shared too
        chain = Chain(stage, [p for p, _ in ordered], default.pool, default.timeouts,
                      [b for _, b in ordered])
        self._extra[(stage, name, model)] = chain
        return chain

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()
        for provider in self._all_providers():
            closer = getattr(provider, "close", None)
            if callable(closer) and not inspect.iscoroutinefunction(closer):
                closer()

    async def aclose(self) -> None:
        for provider in self._all_providers():
            closer = getattr(provider, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if self.tools is not None:
            await self.tools.aclose()
        self.close()

    # --- stage helpers -------------------------------------------------------------

    async def transcribe(self, pcm16k: bytes, language: str | None,
                         on_partial: Callable[[str], None] | None = None, *,
                         assistant_id: str | None = None, quick: bool = False,
                         last_word: bool = False, ahead: bool = False) -> str:
        """``on_partial(text so far)`` is called by STTs that stream (OpenAI gpt-4o-*).
        ``quick``: a decode turn-taking waits on (the quick model, where there is one).
        ``last_word``: asks STTs that can for the last word's probability (a hint).
        ``ahead``: a decode made ahead of need, beside a quick one (nicer threads)."""
        hints: dict[str, Any] = {"on_partial": on_partial} if on_partial is not None else {}
        if last_word:
            hints["last_word"] = True
        chain = await self.chain("stt", assistant_id)
        if chain is self.chains["stt"]:
            if quick and self.quick_stt is not None:
                chain = self.quick_stt
            elif ahead and self.ahead_stt is not None:
                chain = self.ahead_stt
        text: str = await chain.call("transcribe", pcm16k, language=language,
                                     hints=hints or None)
        return text

    async def turn_probability(self, pcm16k: bytes) -> float | None:
        """How likely the utterance so far is a finished turn; None when no detector is
        loaded or no check could run in time (the caller falls back to the timer)."""
        return await self._turn_check(self.turn_detector, pcm16k)

    async def text_end_probability(self, text: str) -> float | None:
        """How likely the sentence ends after ``text``; None without a text model, words
        or a thread in time (the sound alone decides)."""
        return await self._turn_check(self.text_turn, text) if text.strip() else None

    async def _turn_check(self, detector: TurnDetector | TextTurnDetector | None,
                          item: Any) -> float | None:
        """One check in the turn pool (both models share it: they run at the same pauses)."""
        if detector is None:
            return None
        try:
            return await self.pools["turn"].run(detector.end_probability, item,
                                                timeout=_TURN_CHECK_TIMEOUT_S)
        except PoolBusy:
            return None  # busy: routine under load, the silence timer decides
        except ProviderError as exc:
            log.warning("turn_check_failed", error=str(exc))
            return None

    async def synthesize(self, text: str, voice: str | None, out_rate: int, *,
                         assistant_id: str | None = None, ahead: bool = False) -> Speech:
        """``ahead``: speech made ahead of need (speculation.py), in nicer threads: it
        must not slow the turn checks of the pause it was made at."""
        # A TTS that can produce the session's rate itself (ElevenLabs) is asked to.
        chain = await self.chain("tts", assistant_id)
        if ahead and chain is self.chains["tts"] and self.ahead_tts is not None:
            chain = self.ahead_tts
        speech: Speech = await chain.call("synthesize", text, voice=voice,
                                          hints={"sample_rate": out_rate})
        if speech.sample_rate == out_rate:
            return speech
        # Resampling a sentence takes ~1 ms; not worth a pool hop.
        resampled = pcm.resample(speech.pcm, speech.sample_rate, out_rate)
        return Speech(resampled, out_rate, speech.phonemes)

    async def embed(self, texts: Sequence[str], *,
                    bulk: bool = False) -> npt.NDArray[np.float32] | None:
        """Embeddings of ``texts`` from an embedding pool (one thread each: questions in
        one, ``bulk`` indexing in the other, so a search never waits behind an import);
        None without an embedder. ProviderError (PoolBusy, timeout) on trouble."""
        if self.embedder is None:
            return None
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        pool = self.pools["embed_bulk" if bulk else "embed"]
        return await pool.run(self.embedder.embed, list(texts),
                              timeout=self.cfg.embedder.timeout_s)

    async def retrieve(self, assistant_id: str, question: str) -> list[Passage]:
        """Knowledge-base passages for a question; none (not a failed turn) on trouble."""
        if self.retriever is None:
            return []
        llm = (await self.chain("llm", assistant_id)).primary
        if not getattr(llm, "uses_passages", True):
            return []
        try:
            async with asyncio.timeout(2.0):
                # An engine may read more passages than an LLM's prompt should hold.
                k = max(self.cfg.knowledge.top_k, getattr(llm, "top_k", 0))
                passages: list[Passage] = await self.retriever.search(assistant_id, question, k)
                return passages
        except Exception as exc:  # retrieval trouble must not kill the turn
            log.warning("retrieval_failed", error=str(exc))
            return []

    def reply_tokens(self, request: ChatRequest,
                     chain: Chain | None = None) -> AsyncIterator[str | ToolCall]:
        """Token stream from the LLM chain (blocking or async providers), with failover
        (``chain``: an assistant's, from ``chain("llm", …)``; default the config's).
        A provider offered ``request.tools`` may yield ``ToolCall`` items too."""

        def make(provider: Any) -> Any:
            if hasattr(provider, "generate"):
                return provider.generate(request)
            return provider.stream(request)

        return (chain or self.chains["llm"]).stream(make)

    async def tool_loop(self, request: ChatRequest, assistant_id: str, *, session_id: str = "",
                        telephony: bool = False, declared: list[Any] | None = None,
                        client: tuple[ToolSpec, ...] = (),
                        tool_choice: str | None = None) -> ToolLoop:
        """The LLM stage of one turn: the reply's tokens, with the assistant's tools run
        and fed back (``declared``: its tool list when the caller has it already); a call
        of one of the ``client``'s tools ends the reply with it."""
        ctx = ToolContext(assistant_id, session_id, telephony, self.retrieve)
        toolbox = (await self.tools.toolbox(ctx, declared) if self.tools is not None
                   else Toolbox((), ctx, 0))
        chain = await self.chain("llm", assistant_id)
        return ToolLoop(functools.partial(self.reply_tokens, chain=chain), request, toolbox,
                        self.cfg.tools, client=client, tool_choice=tool_choice)

    async def quick_decodes(self, assistant_id: str | None) -> bool:
        """Whether the assistant's quick decodes run on a model of their own (else a
        pause needs one decode, not two)."""
        if self.quick_stt is None:
            return False
        return await self.chain("stt", assistant_id) is self.chains["stt"]

    async def speculative(self, assistant_id: str | None) -> bool:
        """Whether the assistant's LLM may be run ahead of a turn's end (it calls no
        tools and costs nothing: its provider says ``speculative``)."""
        chain = await self.chain("llm", assistant_id)
        return bool(getattr(chain.primary, "speculative", False))

    async def calls_tools(self, assistant_id: str | None) -> bool:
        """Whether the assistant's LLM (its chain's first provider) can call tools."""
        chain = await self.chain("llm", assistant_id)
        return bool(getattr(chain.primary, "calls_tools", False))


def _load(cfg: Config, stage: str, name: str) -> Any:
    started = time.perf_counter()
    obj = registry.create(stage, name, cfg)
    log.info("provider_loaded", stage=stage, provider=obj.name,
             ms=round((time.perf_counter() - started) * 1000))
    return obj


def _nicer_copies(providers: list[Any], nice: int) -> list[Any]:
    """``providers``, each one that computes in threads made at load (``own_threads``:
    Whisper's CTranslate2 workers) replaced by its own ``copy()`` (the same model and
    settings) made in a nicer thread, so its workers are nicer too (one more copy of
    the model in memory: ~75 MB for base). A copy that cannot be made leaves the
    shared provider (at normal priority)."""
    out = []
    for provider in providers:
        if getattr(provider, "own_threads", False) and hasattr(provider, "copy"):
            try:
                provider = in_nicer_thread(nice, provider.copy)
            except ProviderError as exc:
                log.warning("nicer_copy_unavailable", provider=getattr(provider, "name", "?"),
                            error=str(exc))
        out.append(provider)
    return out


def _breaker(cfg: Config) -> Breaker:
    return Breaker(cfg.failover.breaker_threshold, cfg.failover.breaker_cooldown_s)


def _quick_stt(cfg: Config, overrides: dict[str, Any]) -> Any:
    """The quick STT: injected, or Whisper's ``quick_model`` when it differs from the
    configured one (not when the STT itself was injected: tests pass their own)."""
    if "stt_quick" in overrides:
        return overrides["stt_quick"]
    s = cfg.stt
    if "stt" in overrides or s.provider != "whisper" or s.quick_model in ("", s.model):
        return None
    quick = registry.with_model(cfg, "stt", "whisper", s.quick_model)
    return _load(quick.replace(stt={"beam_size": s.quick_beam_size}), "stt", "whisper")


def _text_turn(cfg: Config, overrides: dict[str, Any]) -> TextTurnDetector | None:
    if cfg.turn.detector == "silence" or cfg.turn.words == "none":
        return None
    if "text_turn" in overrides:
        return overrides["text_turn"]  # type: ignore[no-any-return]
    try:
        from gateway.providers.text_turn import TextTurn

        started = time.perf_counter()
        model = TextTurn()
    except Exception as exc:  # the sound alone then decides; not a dead gateway
        log.error("turn_text_model_unavailable", error=str(exc))
        return None
    log.info("provider_loaded", stage="turn_words", provider=model.name,
             ms=round((time.perf_counter() - started) * 1000))
    return model


def _turn_detector(cfg: Config, overrides: dict[str, Any]) -> TurnDetector | None:
    if cfg.turn.detector == "silence":
        return None
    if "turn" in overrides:
        return overrides["turn"]  # type: ignore[no-any-return]
    try:
        from gateway.providers.smart_turn import SmartTurn

        started = time.perf_counter()
        detector = SmartTurn.from_config(cfg)
    except Exception as exc:  # turns then end on the silence timer; not a dead gateway
        log.error("turn_detector_unavailable", error=str(exc), note="vad.stop_ms decides")
        return None
    log.info("provider_loaded", stage="turn", provider=detector.name,
             ms=round((time.perf_counter() - started) * 1000))
    return detector


def _load_embedder(cfg: Config) -> Embedder | None:
    """The configured embedder, or None ("null", or it cannot load: full-text search only)."""
    if cfg.embedder.provider == "null":
        return None
    try:
        embedder: Embedder = _load(cfg, "embedder", cfg.embedder.provider)
    except ProviderError as exc:
        log.warning("embedder_unavailable", error=str(exc), note="full-text search only")
        return None
    return embedder


def _stage_providers(cfg: Config, stage: str, override: Any) -> list[Any]:
    if override is not None:
        return list(override) if isinstance(override, list | tuple) else [override]
    section = getattr(cfg, stage)
    providers: list[Any] = []
    for name in (section.provider, *section.fallbacks):
        try:
            providers.append(_load(cfg, stage, name))
        except ProviderError as exc:
            if stage == "llm" and name == "llama" and not section.fallbacks:
                # The small local model is optional: answer from the knowledge base.
                log.warning("llm_fallback", provider="extractive", reason=str(exc))
                providers.append(_load(cfg, stage, "extractive"))
            elif providers or len(section.fallbacks) > 0:
                log.error("provider_unavailable", stage=stage, provider=name, error=str(exc))
            else:
                raise
    if not providers:
        raise ProviderError(f"no {stage} provider could be loaded")
    return providers
