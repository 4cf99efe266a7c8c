"""One small interface per pipeline stage.

Providers know nothing of frames, turns, queues or sessions: they turn audio into
text, text into tokens, and text into audio. The runtime (``gateway.pipeline``)
owns queues, timeouts, cancellation and the worker pool.

Blocking providers (the embedded models) expose plain synchronous methods; the
runtime runs them in the shared inference pool. Network providers expose ``async``
methods and are awaited directly with timeouts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from gateway.errors import ProviderError as ProviderError  # where providers find it

# --- VAD ---------------------------------------------------------------------------


@runtime_checkable
class VADStream(Protocol):
    """Per-session VAD state, fed mono s16le frames of ``frame_ms`` at its rate."""

    def is_speech(self, frame: bytes) -> bool: ...


@runtime_checkable
class VAD(Protocol):
    name: str
    sample_rate: int  # streams' default rate: always 16000 here
    # A VAD may also have ``rates``: every rate ``stream(frame_ms, rate=...)`` takes
    # (telephony audio is then judged at 8 kHz as it comes, not resampled per frame).

    def stream(self, frame_ms: int) -> VADStream: ...


# --- end of turn -------------------------------------------------------------------


@runtime_checkable
class TurnDetector(Protocol):
    """Blocking: runs in the turn pool, only at pauses. Audio is 16 kHz mono s16le, the
    utterance so far ending now (its pause included)."""

    name: str

    def end_probability(self, pcm: bytes) -> float: ...


@runtime_checkable
class TextTurnDetector(Protocol):
    """Blocking, like TurnDetector: how likely a transcript so far ends the sentence."""

    name: str

    def end_probability(self, text: str) -> float: ...


# --- STT ---------------------------------------------------------------------------


class Transcript(str):
    """A transcription that knows how sure the recogniser was (0..1), when it can say.

    A ``str``, so every caller that only wants the text is unaffected. ``last_word``:
    the recogniser's probability of the last word alone, where asked for and known (a
    word it guessed at the end of a fragment: "how much is a" heard as "how much is
    that?", the last word ~0.2; a word it heard, 0.4-1.0)."""

    confidence: float | None
    last_word: float | None

    def __new__(cls, text: str, confidence: float | None = None,
                last_word: float | None = None) -> Transcript:
        obj = super().__new__(cls, text)
        obj.confidence = confidence
        obj.last_word = last_word
        return obj


def confidence_of(text: str) -> float | None:
    return getattr(text, "confidence", None)


def last_word_of(text: str) -> float | None:
    return getattr(text, "last_word", None)


@runtime_checkable
class STT(Protocol):
    """Blocking: runs in the inference pool. Audio is 16 kHz mono s16le. ``transcribe``
    may return a ``Transcript`` carrying a confidence."""

    name: str

    def transcribe(self, pcm: bytes, *, language: str | None = None) -> str: ...


# --- LLM ---------------------------------------------------------------------------


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: its name, what it does, its arguments' JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for. ``raw_arguments`` is the model's JSON text as sent (it
    goes back verbatim in the follow-up request); ``arguments`` is it decoded ({} if not)."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""

    @property
    def arguments_invalid(self) -> bool:
        """The model sent arguments that are not a JSON object."""
        if not self.raw_arguments.strip():
            return False
        try:
            return not isinstance(json.loads(self.raw_arguments), dict)
        except ValueError:
            return True


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message. An assistant message may carry ``tool_calls``; a ``tool`` message
    is one call's result (``content``), naming the call by ``tool_call_id``."""

    role: Role
    content: str
    tool_call_id: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved knowledge-base passage that grounds a reply.

    ``score`` is 0..1. With an embedder it is the question's cosine similarity to the
    passage or to its best sentence, whichever is higher (unrelated text ~0.0-0.2, a
    paraphrase of the answer ~0.35+; usable as an abstention threshold); without one,
    the full-text engine's relevance. ``similarity`` is the cosine to the whole passage
    (None without an embedder), ``sentences`` the passage cut into sentences and
    ``sentence_scores`` the cosine of each (empty without an embedder)."""

    title: str
    text: str
    source: str
    score: float = 0.0
    document_id: str = ""
    document_title: str = ""
    similarity: float | None = None
    sentences: tuple[str, ...] = ()
    sentence_scores: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the LLM stage asks a provider: the conversation and its grounding."""

    messages: Sequence[Message]  # system prompt first, the new user message last
    passages: Sequence[Passage] = ()
    max_tokens: int = 120
    temperature: float = 0.2
    tools: Sequence[ToolSpec] = ()  # functions the model may call (providers may ignore them)
    # None or "auto": the model decides; "required": it must call one; else the name of
    # the one tool it must call.
    tool_choice: str | None = None
    session_id: str = ""  # the conversation it belongs to (a hybrid backend keys on it)

    @property
    def question(self) -> str:
        for msg in reversed(self.messages):
            if msg.role == "user":
                return msg.content
        return ""


@runtime_checkable
class BlockingLLM(Protocol):
    """Local models: a synchronous token generator, driven by the runtime in the pool.

    The runtime stops pulling (and closes the generator) when the turn is cancelled,
    so a generator must stop promptly after a ``close()``.
    """

    name: str

    def generate(self, request: ChatRequest) -> Iterator[str]: ...


@runtime_checkable
class StreamingLLM(Protocol):
    """Network models: an async token stream. A model offered ``request.tools`` may also
    yield ``ToolCall`` items (after its text, if any); the runtime runs them and asks again."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[str | ToolCall]: ...


LLM = BlockingLLM | StreamingLLM


# --- TTS ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """One phoneme (IPA) and where it sits in the synthesised audio."""

    phoneme: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class Speech:
    """Synthesised audio for one piece of text: mono s16le at ``sample_rate``."""

    pcm: bytes
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...] = field(default=())

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate * 1000.0


@runtime_checkable
class TTS(Protocol):
    """Blocking: runs in the inference pool. One call per sentence."""

    name: str
    sample_rate: int

    def synthesize(self, text: str, *, voice: str | None = None) -> Speech: ...


# --- Embeddings --------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """Blocking: runs in the runtime's embedding pool. Texts in, one L2-normalised
    float32 row of ``dim`` per text out (so a dot product is the cosine similarity)."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...
