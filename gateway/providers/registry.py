"""Providers chosen by name in the config, imported lazily (heavy models load only if used).

Every provider class has ``from_config(cfg: Config) -> instance``. Models load once per
process, in the lifespan, and are shared by every session.
"""

from __future__ import annotations

import importlib
from typing import Any

from gateway.config import Config

from .base import STT, TTS, VAD, ProviderError

_PROVIDERS: dict[str, dict[str, str]] = {
    "vad": {
        "webrtcvad": "gateway.providers.webrtc_vad:WebRTCVAD",
        "silero": "gateway.providers.silero_vad:SileroVAD",
        "null": "gateway.providers.null:NullVAD",
    },
    "stt": {
        "whisper": "gateway.providers.whisper_stt:WhisperSTT",
        "openai": "gateway.providers.openai_stt:OpenAISTT",
        "null": "gateway.providers.null:NullSTT",
    },
    "llm": {
        "grounded": "gateway.providers.grounded_llm:GroundedLLM",
        "llama": "gateway.providers.llama_llm:LlamaLLM",
        "extractive": "gateway.providers.extractive_llm:ExtractiveLLM",
        "openai": "gateway.providers.openai_llm:OpenAILLM",
        "hybrid": "gateway.providers.hybrid_llm:HybridLLM",
        "null": "gateway.providers.null:NullLLM",
    },
    "embedder": {
        "minilm": "gateway.providers.minilm_embedder:MiniLMEmbedder",
    },
    "tts": {
        "piper": "gateway.providers.piper_tts:PiperTTS",
        "espeak": "gateway.providers.espeak_tts:EspeakTTS",
        "openai": "gateway.providers.openai_tts:OpenAITTS",
        "elevenlabs": "gateway.providers.elevenlabs_tts:ElevenLabsTTS",
        "null": "gateway.providers.null:NullTTS",
    },
}


# Where a provider reads the name of its model; the providers not listed run one model
# (their weights ship in a package, or the backend chooses), so a model named for them
# has no effect.
MODEL_SETTINGS: dict[tuple[str, str], tuple[str, str]] = {
    ("stt", "whisper"): ("stt", "model"),
    ("stt", "openai"): ("openai", "stt_model"),
    ("llm", "openai"): ("llm", "model"),
}
WHISPER_MODELS = ("tiny.en", "base")


def configured_model(cfg: Config, stage: str, name: str) -> str | None:
    """The model provider ``name`` runs by the config (None: it has no choice)."""
    setting = MODEL_SETTINGS.get((stage, name))
    if setting is None:
        return None
    section, field = setting
    return str(getattr(getattr(cfg, section), field))


def with_model(cfg: Config, stage: str, name: str, model: str) -> Config:
    """``cfg`` with ``model`` as the model of provider ``name`` (which must have one)."""
    section, field = MODEL_SETTINGS[(stage, name)]
    return cfg.replace(**{section: {field: model}})


def names(stage: str) -> list[str]:
    return sorted(_PROVIDERS[stage])


def create(stage: str, name: str, cfg: Config) -> Any:
    try:
        target = _PROVIDERS[stage][name]
    except KeyError:
        raise ProviderError(
            f"unknown {stage} provider {name!r}; choose one of {names(stage)}", retryable=False
        ) from None
    module_name, _, cls_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls.from_config(cfg)
    except ProviderError:
        raise
    except Exception as exc:  # import errors, missing weights, bad model files
        raise ProviderError(f"{stage} provider {name!r} failed to load: {exc}") from exc


def create_vad(cfg: Config) -> VAD:
    return create("vad", cfg.vad.provider, cfg)  # type: ignore[no-any-return]


def create_stt(cfg: Config) -> STT:
    return create("stt", cfg.stt.provider, cfg)  # type: ignore[no-any-return]


def create_tts(cfg: Config) -> TTS:
    return create("tts", cfg.tts.provider, cfg)  # type: ignore[no-any-return]


def create_llm(cfg: Config) -> Any:
    return create("llm", cfg.llm.provider, cfg)
