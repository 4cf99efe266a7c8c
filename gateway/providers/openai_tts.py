"""``openai`` TTS: OpenAI's speech endpoint through the official ``openai`` client.

Models ``gpt-4o-mini-tts`` (voice instructions) and ``tts-1`` / ``tts-1-hd``. The reply
is raw PCM (``response_format="pcm"``: 24 kHz mono s16le, no header) read as it streams
(``with_streaming_response``); ``stream_pcm`` hands the chunks on as they arrive and
``synthesize`` collects a sentence. OpenAI reports no phoneme or word timings, so
``Speech.phonemes`` stays empty and avatars fall back to the audio's amplitude.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai

from gateway.config import Config

from .base import ProviderError, Speech
from .openai_audio import ErrorMapper, make_client, safe_url

RATE = 24000  # what response_format="pcm" always is
CHUNK_BYTES = RATE * 2 // 50  # 20 ms reads
MAX_INPUT_CHARS = 4096  # the API's limit per request
# Voices per model family (tts-1 has only the older ones).
GPT_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
              "shimmer", "verse", "marin", "cedar")
TTS1_VOICES = ("alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")


def voices_for(model: str) -> tuple[str, ...]:
    return TTS1_VOICES if model.startswith("tts-1") else GPT_VOICES


class OpenAITTS:
    name = "openai"
    sample_rate = RATE

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        voice: str = "alloy",
        api_key: str = "",
        instructions: str = "",
        speed: float = 1.0,
        timeout_s: float = 15.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 1,
    ) -> None:
        if not base_url or not model:
            raise ProviderError("openai.base_url and openai.tts_model must be set",
                                retryable=False)
        self.model = model
        # Ordered (the default first) for /api/websocket/config; a set for checks.
        self.voice_list = voices_for(model)
        if voice not in self.voice_list:
            raise ProviderError(f"unknown OpenAI voice {voice!r} for {model}; choose one of "
                                f"{', '.join(self.voice_list)}", retryable=False)
        self.voice = voice
        self.voices = frozenset(self.voice_list)
        self.instructions = instructions if not model.startswith("tts-1") else ""
        self.speed = min(max(speed, 0.25), 4.0)  # the API's range
        self._where = safe_url(base_url)
        self._errors = ErrorMapper("speech", base_url, api_key, "openai.api_key")
        self._client = make_client(base_url, api_key, timeout_s=timeout_s,
                                   connect_timeout_s=connect_timeout_s, max_retries=max_retries)

    @classmethod
    def from_config(cls, cfg: Config) -> OpenAITTS:
        o = cfg.openai
        return cls(base_url=o.base_url, model=o.tts_model, voice=o.tts_voice,
                   api_key=o.api_key, instructions=o.tts_instructions, speed=cfg.tts.speed,
                   timeout_s=cfg.tts.timeout_s, connect_timeout_s=o.connect_timeout_s,
                   max_retries=o.max_retries)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAITTS(model={self.model!r}, voice={self.voice!r}, base_url={self._where!r})"

    async def aclose(self) -> None:
        await self._client.close()

    def pick_voice(self, voice: str | None) -> str:
        """The session's voice if OpenAI has it, else the configured one (a session may
        carry another engine's voice when this TTS is a fallback)."""
        return voice.lower() if voice and voice.lower() in self.voices else self.voice

    async def synthesize(self, text: str, *, voice: str | None = None) -> Speech:
        audio = bytearray()
        async for chunk in self.stream_pcm(text, voice=voice):
            audio += chunk
        return Speech(bytes(audio[: len(audio) // 2 * 2]), RATE)

    async def stream_pcm(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """24 kHz s16le chunks as the server sends them (an odd byte may end a chunk)."""
        text = text.strip()[:MAX_INPUT_CHARS]
        if not text:
            return
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=self.pick_voice(voice), input=text,
                response_format="pcm", speed=self.speed,
                instructions=self.instructions or openai.omit,
            ) as response:
                async for chunk in response.iter_bytes(CHUNK_BYTES):
                    yield chunk
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._errors.map(exc) from exc
