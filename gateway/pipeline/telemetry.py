"""What the pipeline tells observers about each finished turn (metrics, traces). Pure.

A session hands one ``TurnTimes`` per turn to every observer in ``Runtime.observers``
when the turn ends (completed or interrupted); observers must be quick and must not
raise (a failing observer is logged, never the turn's problem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TurnTimes:
    """One turn's stage times, on the monotonic clock in milliseconds (None: the stage
    never happened, e.g. a text turn has no VAD decision, an interrupted reply may have
    no audio)."""

    turn_id: int
    response_id: str
    stopped_ms: float | None  # the VAD's end-of-speech decision
    final_ms: float | None  # the final transcript
    first_token_ms: float | None
    first_audio_ms: float | None
    end_ms: float  # the reply finished or was cut
    interrupted: bool
    underruns: int  # reply audio chunks sent after the listener's buffer ran dry

    def since_stop(self) -> dict[str, float]:
        """Seconds from the VAD decision to each later stage that happened."""
        if self.stopped_ms is None:
            return {}
        marks = {"stt_final": self.final_ms, "first_token": self.first_token_ms,
                 "first_audio": self.first_audio_ms}
        return {k: (v - self.stopped_ms) / 1000.0 for k, v in marks.items()
                if v is not None and v >= self.stopped_ms}


    def latency_ms(self) -> dict[str, float]:
        """The ``metrics`` event's figures: milliseconds from the VAD decision (a stage
        that has not happened yet counts 0); {} for a turn with no VAD decision."""
        if self.stopped_ms is None:
            return {}
        base = self.stopped_ms
        return {"stt_ms": round((self.final_ms or base) - base, 1),
                "first_token_ms": round((self.first_token_ms or base) - base, 1),
                "first_audio_ms": round((self.first_audio_ms or base) - base, 1)}


class TurnObserver(Protocol):
    def turn(self, times: TurnTimes) -> None: ...
