"""What flows between a session's stages: its settings, the queued items (each with
its turn id) and the reply being produced."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.audio.pcm import AudioFormat
from gateway.providers.base import Message, PhonemeTiming, ToolCall, ToolSpec

from . import events as ev
from .events import Handoff
from .interruptions import InterruptionSettings
from .pacing import Pacer
from .prompt import PromptSource
from .telemetry import TurnTimes
from .text import SpokenSegment
from .tools import ToolEvent
from .turns import TurnSettings


@dataclass(frozen=True, slots=True)
class VadOverrides:
    """Per-session turn detection (OpenAI Realtime ``server_vad``); None: the config's."""

    stop_ms: int | None = None  # silence that ends a turn
    preroll_ms: int | None = None  # audio kept from before the speech start
    threshold: float | None = None  # 0..1, higher needs louder speech


@dataclass(frozen=True, slots=True)
class SessionSettings:
    input: AudioFormat
    output: AudioFormat
    language: str | None = None
    voice: str | None = None
    system_prompt: str | None = None  # the client's own (start, token claims)
    prompt: PromptSource | None = None  # the assistant's prompt, template and variables
    assistant_id: str = "default"
    vad: VadOverrides | None = None
    # False: a finished spoken turn goes into the history and waits for the client
    # to ask for a reply (a typed turn); no reply starts on its own.
    auto_respond: bool = True
    # False: speech during a reply neither interrupts it nor becomes a turn.
    barge_in: bool = True
    # False: replies are text only (no TTS, no audio).
    speak: bool = True
    # A phone call: the end_call / transfer_call tools are offered.
    telephony: bool = False
    # End of turn (model or timer); None: the config's [turn].
    turn: TurnSettings | None = None
    # Speech over a reply (backchannels, noise, barge-in); None: the config's.
    interruptions: InterruptionSettings | None = None
    # The client's own function tools (OpenAI Realtime ``tools``): a call of one ends the
    # reply with it; the client's result continues the conversation.
    client_tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # see ChatRequest.tool_choice


@dataclass(slots=True)
class SttJob:
    turn_id: int
    pcm: bytes
    final: bool
    stopped_at: float = 0.0
    early: bool = False  # a speculative decode at a pause (see turns.PauseAudio)
    pause: int = 0  # which pause (turns.TurnCheck.pause)
    use_early: bool = False  # a final whose audio the early decode already covers
    words_only: bool = False  # an early job for the pause's words only (PauseAudio)


@dataclass(slots=True)
class UserTurn:
    turn_id: int
    text: str
    stopped_at: float | None = None  # loop time of the VAD end-of-speech decision
    final_at: float | None = None


@dataclass(slots=True)
class Sentence:
    turn_id: int
    response_id: str
    text: str


@dataclass(slots=True)
class Segment:
    turn_id: int
    response_id: str
    text: str
    pcm: bytes
    phonemes: tuple[PhonemeTiming, ...] = ()


@dataclass(slots=True)
class EndOfReply:
    turn_id: int
    response_id: str


def _playing() -> asyncio.Event:
    playing = asyncio.Event()
    playing.set()
    return playing


@dataclass
class Response:
    """The assistant's reply to one user turn, from stream_start to stream_end."""

    response_id: str
    turn: UserTurn
    pacer: Pacer
    segments: list[SpokenSegment] = field(default_factory=list)
    text: str = ""
    tts_started: bool = False
    cancelled: bool = False
    # Cleared while the reply is paused (on_overlap = "pause"); playout waits on it.
    playing: asyncio.Event = field(default_factory=_playing)
    paused_at: float | None = None  # clock (ms) of the pause; None: not paused
    first_token_at: float | None = None
    first_audio_at: float | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # the calls made (stored)
    signals: list[Handoff] = field(default_factory=list)  # for the transport, at end
    # The reply ended in calls of the client's tools: the assistant message asking for
    # them (all of that round's calls) and the gateway's own calls' results.
    calls: tuple[ToolCall, ...] = ()
    call_results: tuple[Message, ...] = ()


def turn_times(r: Response, end_ms: float, interrupted: bool) -> TurnTimes:
    return TurnTimes(r.turn.turn_id, r.response_id, r.turn.stopped_at, r.turn.final_at,
                     r.first_token_at, r.first_audio_at, end_ms, interrupted,
                     r.pacer.underruns)


def turn_record(r: Response, heard: str, times: TurnTimes, played_ms: float) -> dict[str, Any]:
    """A finished turn as the transport's recorder stores it."""
    return {
        "turn_id": r.turn.turn_id, "response_id": r.response_id,
        "user_text": r.turn.text, "reply_text": r.text.strip(), "heard_text": heard,
        "interrupted": times.interrupted, "played_ms": round(played_ms),
        "latency_ms": times.latency_ms(), "sources": r.sources, "tools": r.tools,
    }


def tool_event(r: Response, item: ToolEvent) -> ev.ToolStarted | ev.ToolEnded:
    d = item.data
    if item.type == "tool_start":
        return ev.ToolStarted(r.turn.turn_id, r.response_id, d["tool_call_id"], d["name"],
                              d["arguments"])
    return ev.ToolEnded(r.turn.turn_id, r.response_id, d["tool_call_id"], d["name"],
                        d["result_summary"], d["duration_ms"], d["ok"])


def push_stt(q: asyncio.Queue[SttJob], job: SttJob) -> SttJob | None:
    """Queue ``job``; when the queue is full, drop an interim job first, else the oldest
    final one, which is returned (its turn gets no transcript: the caller says so)."""
    dropped = None
    if q.full():
        jobs = [q.get_nowait() for _ in range(q.qsize())]
        victim = next((j for j in jobs if not j.final), jobs[0])
        jobs.remove(victim)
        dropped = victim if victim.final else None
        for kept in jobs:
            q.put_nowait(kept)
    q.put_nowait(job)
    return dropped
