"""The WebRTC data channel: protocol v1's JSON events, with the audio on the Opus tracks.

Reply audio never travels on the channel (it is on the peer connection's track), so
``tts_start`` names the track's format instead of the session's PCM one; every other
event is v1's own.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.pipeline import events as ev
from gateway.protocol import v1

OPUS: Final = {"encoding": "opus", "sample_rate": 48000}  # what travels on the tracks


def render(event: ev.Event) -> dict[str, Any] | None:
    """A pipeline event as a data channel message (None: not shown on the channel)."""
    message = v1.render(event)
    if message is not None and isinstance(event, ev.TtsStart):
        return {**message, **OPUS}
    return message
