"""What a voice session tells its transport: typed, frozen events.

The pipeline says what happened (a user turn's speech started, a reply's token, its audio
was cut); each wire format renders these in a pure function of its own
(``gateway.protocol.v1.render``, ``gateway.protocol.twilio``, the WebRTC data channel,
the Realtime renderer). The pipeline itself knows no wire format: no codes, no JSON.

User-turn events carry the ``turn_id``; reply events the ``response_id`` (and the turn
it answers where the session knows it). Reply audio is not an event: it travels as
``outbox.AudioOut`` (the per-frame path stays a plain object).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.providers.visemes import VisemeCue, WordTiming

# --- the user's turn --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    turn_id: int
    late_ms: int | None = None  # decided from its words: it began this long ago


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    turn_id: int


@dataclass(frozen=True, slots=True)
class SpeechIgnored:
    """Speech over a reply that did not interrupt it (a backchannel, a sound)."""

    turn_id: int
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyPaused:
    """The reply's audio stops while speech over it is decided (``on_overlap = pause``)."""

    response_id: str
    turn_id: int  # the overlapping speech's


@dataclass(frozen=True, slots=True)
class ReplyResumed:
    """The speech had no words: the reply goes on from where it stopped."""

    response_id: str
    paused_ms: int


@dataclass(frozen=True, slots=True)
class Transcription:
    turn_id: int
    text: str
    final: bool


# --- the reply --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStart:
    turn_id: int
    response_id: str


@dataclass(frozen=True, slots=True)
class Token:
    turn_id: int
    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Source:
    """A knowledge-base document a reply drew on (``reply.sources_of``: the one shape of
    every path, HTTP chat included)."""

    title: str
    url: str | None
    document_id: str | None
    relevance: float


@dataclass(frozen=True, slots=True)
class AgentResponse:
    """The whole reply text once generated, with the passages it was drawn from."""

    turn_id: int
    response_id: str
    text: str
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolStarted:
    turn_id: int
    response_id: str
    tool_call_id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The reply calls a function of the client's: the client runs it (Realtime
    ``function_call`` item); ``arguments`` is the model's JSON text as sent."""

    turn_id: int
    response_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolEnded:
    turn_id: int
    response_id: str
    tool_call_id: str
    name: str
    result_summary: str
    duration_ms: float
    ok: bool


@dataclass(frozen=True, slots=True)
class TtsStart:
    response_id: str
    encoding: str
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Visemes:
    response_id: str
    cues: tuple[VisemeCue, ...]


@dataclass(frozen=True, slots=True)
class WordTimings:
    response_id: str
    words: tuple[WordTiming, ...]


@dataclass(frozen=True, slots=True)
class SegmentPlayed:
    """All audio of the reply's segment ``index`` (one sentence) is out: telephony marks it."""

    response_id: str
    index: int


@dataclass(frozen=True, slots=True)
class Interrupted:
    response_id: str


@dataclass(frozen=True, slots=True)
class TtsComplete:
    response_id: str
    duration_ms: int
    interrupted: bool
    played_ms: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    response_id: str


@dataclass(frozen=True, slots=True)
class Handoff:
    """The ``end_call`` / ``transfer_call`` tools: after the reply has been heard, the
    telephony transport ends the call or hands it on. Made by the tool without the
    reply's id; the session fills it in."""

    action: str  # END_CALL or TRANSFER
    reason: str = ""
    destination: str = ""
    response_id: str = ""


END_CALL = "end_call"
TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Stage latencies of a reply, from the end-of-speech decision."""

    turn_id: int
    response_id: str
    latency_ms: Mapping[str, float]


# --- failures (each wire says them with its own fixed, safe text) -------------------------


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """Every provider of a stage (``stt``, ``llm``, ``tts``) failed for this request."""

    stage: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class SttBehind:
    """The recogniser fell behind: a finished user turn was dropped unheard."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class SessionCrashed:
    """A bug inside the session: it ends (the details are in the server log only)."""


@dataclass(frozen=True, slots=True)
class ReplyCrashed:
    """A bug inside one reply: that reply ends, the session goes on."""

    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TurnNotStored:
    """The database refused a finished turn; the session goes on."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The service ends the session from outside; the transport closes it next.
    ``reason``: one of ``ENDINGS`` (each wire says it with its own code and text)."""

    reason: str


KEY_REVOKED = "key_revoked"  # the API key it was opened with (or that minted its token)
ASSISTANT_DELETED = "assistant_deleted"
ENDED_BY_ADMIN = "ended"  # DELETE /api/v1/sessions/{id}
RESTARTING = "restarting"  # the drain's deadline: reconnect (retryable)
ENDINGS = (KEY_REVOKED, ASSISTANT_DELETED, ENDED_BY_ADMIN, RESTARTING)


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A message the transport built itself (``session_started``, ``pong``, a protocol
    error), queued in order with the pipeline's events; the pipeline never reads it."""

    message: Any


Event = (
    SpeechStarted | SpeechStopped | SpeechIgnored | ReplyPaused | ReplyResumed | Transcription
    | StreamStart | Token | AgentResponse | ToolStarted | ToolEnded | FunctionCall | TtsStart
    | Visemes | WordTimings
    | SegmentPlayed | Interrupted | TtsComplete | StreamEnd | Handoff | Metrics
    | ProviderFailed | SttBehind | SessionCrashed | ReplyCrashed | TurnNotStored | SessionEnded
    | Passthrough
)
