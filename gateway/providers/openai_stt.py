"""``openai`` STT: OpenAI's transcription endpoint through the official ``openai`` client.

Models: ``gpt-4o-transcribe`` / ``gpt-4o-mini-transcribe`` (streamed: the API sends
``transcript.text.delta`` events, handed to ``on_partial`` so the session shows them as
interim transcriptions while the final one runs) and ``whisper-1`` (one JSON answer; the
API ignores ``stream`` for it, so it is never asked to stream). The 16 kHz PCM goes up
as a WAV file upload (multipart), the form the API requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai

from gateway.audio import pcm
from gateway.config import Config

from .base import ProviderError
from .openai_audio import ErrorMapper, make_client, safe_url

RATE = 16000
# The API refuses audio shorter than 0.1 s (400 audio_too_short): nothing to hear anyway.
MIN_AUDIO_BYTES = RATE * 2 // 10
_NO_STREAMING = frozenset({"whisper-1"})


class OpenAISTT:
    name = "openai"
    multilingual = True  # every listed language (platform API /api/websocket/config)

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        stream: bool = True,
        prompt: str = "",
        timeout_s: float = 15.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 1,
    ) -> None:
        if not base_url or not model:
            raise ProviderError("openai.base_url and openai.stt_model must be set",
                                retryable=False)
        if timeout_s <= 0:
            raise ProviderError("stt.timeout_s must be positive", retryable=False)
        self.model = model
        self.streams = stream and model not in _NO_STREAMING
        self.prompt = prompt
        self._where = safe_url(base_url)
        self._errors = ErrorMapper("transcription", base_url, api_key, "openai.api_key")
        self._client = make_client(base_url, api_key, timeout_s=timeout_s,
                                   connect_timeout_s=connect_timeout_s, max_retries=max_retries)

    @classmethod
    def from_config(cls, cfg: Config) -> OpenAISTT:
        o = cfg.openai
        return cls(base_url=o.base_url, model=o.stt_model, api_key=o.api_key,
                   stream=o.stt_stream, prompt=o.stt_prompt, timeout_s=cfg.stt.timeout_s,
                   connect_timeout_s=o.connect_timeout_s, max_retries=o.max_retries)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAISTT(model={self.model!r}, base_url={self._where!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def transcribe(self, pcm16k: bytes, *, language: str | None = None,
                         on_partial: Callable[[str], None] | None = None) -> str:
        """The transcript of 16 kHz mono s16le audio; ``on_partial(text so far)`` is
        called as streamed deltas arrive (gpt-4o-* models only)."""
        if len(pcm16k) < MIN_AUDIO_BYTES:
            return ""
        params = self._params(pcm16k, language)
        try:
            if on_partial is not None and self.streams:
                return await self._streamed(params, on_partial)
            result = await self._client.audio.transcriptions.create(**params)
            return str(result.text).strip()
        except (openai.OpenAIError, httpx2.HTTPError, ValueError) as exc:
            raise self._errors.map(exc) from exc

    def _params(self, pcm16k: bytes, language: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "file": ("speech.wav", pcm.wav_bytes(pcm16k, RATE), "audio/wav"),
            "response_format": "json",
        }
        if language:
            params["language"] = language.split("-")[0].lower()  # ISO-639-1: "en-US" -> "en"
        if self.prompt:
            params["prompt"] = self.prompt
        return params

    async def _streamed(self, params: dict[str, Any], on_partial: Callable[[str], None]) -> str:
        stream = await self._client.audio.transcriptions.create(**params, stream=True)
        text = ""
        try:
            async for event in stream:
                if event.type == "transcript.text.delta":
                    text += event.delta
                    on_partial(text)
                elif event.type == "transcript.text.done":
                    return str(event.text).strip()
        finally:
            await stream.close()
        raise ProviderError(f"transcription stream from {self._where} ended before its "
                            "transcript.text.done event")
