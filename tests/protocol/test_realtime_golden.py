"""Golden wire output of the Realtime renderer: the whole turn of
tests/protocol/test_render_golden.py (with one 20 ms chunk of reply audio) as the
OpenAI Realtime events a client reads, exactly, in order. Random ids (``event_…``,
``item_…``) are numbered in order of appearance; everything else is as sent.

To regenerate after an intended change: ``GOLDEN_WRITE=1 pytest`` this file, then read
the diff of tests/data/golden/realtime_turn.jsonl before committing it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from test_render_golden import RID, TURN

from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, OutItem
from gateway.protocol.realtime import RealtimeConfig, RealtimeParser
from gateway.protocol.realtime_events import ServerEvents, VadDefaults
from gateway.protocol.realtime_render import Renderer

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "realtime_turn.jsonl"
RANDOM_ID = re.compile(r"\b(event|item)_[0-9a-f]{20}\b")


class Wire(Renderer):
    """The renderer alone: no session, no socket."""

    def __init__(self) -> None:
        self.vad_start_ms = 60
        self.parser = RealtimeParser(RealtimeConfig(transcription={"model": "whisper-1"}))
        self.events = ServerEvents(beta=False, vad=VadDefaults(0.5, 300, 500))
        self.conversation_id = "conv_golden"
        self.rate_limits = [{"name": "requests", "limit": 30, "remaining": 29,
                             "reset_seconds": 2.0}]
        self.input_ms = 0.0
        self._init_conversation()


def turn_items() -> list[tuple[float, OutItem]]:
    """The turn, each item with the client audio received so far (ms)."""
    audio_at = TURN.index(ev.TtsStart(RID, "pcm_s16le", 24000)) + 1
    clock = {ev.SpeechStarted: 1500.0, ev.SpeechStopped: 3200.0}
    items: list[tuple[float, OutItem]] = []
    now = 0.0
    for i, event in enumerate(TURN):
        now = clock.get(type(event), now)
        if i == audio_at:
            items.append((now, AudioOut(RID, b"\x10\x00" * 480, 20.0)))  # 20 ms at 24 kHz
        items.append((now, event))
    return items


def normalised(events: list[Any]) -> list[str]:
    """Each event as sorted JSON (audio deltas come already serialised, from a template)."""
    seen: dict[str, str] = {}

    def number(m: re.Match[str]) -> str:
        return seen.setdefault(m.group(0), f"{m.group(1)}_{len(seen) + 1}")

    return [RANDOM_ID.sub(number, json.dumps(json.loads(e) if isinstance(e, str) else e,
                                             sort_keys=True)) for e in events]


def test_realtime_renders_a_whole_turn() -> None:
    wire = Wire()
    out: list[Any] = []
    for at, item in turn_items():
        wire.input_ms = at
        out += wire.render(item)
    lines = normalised(out)
    if os.environ.get("GOLDEN_WRITE"):
        GOLDEN.write_text("\n".join(lines) + "\n", "utf-8")
    assert lines == GOLDEN.read_text("utf-8").splitlines()


def test_a_failure_fails_the_live_response_with_a_fixed_text() -> None:
    wire = Wire()
    wire.render(ev.StreamStart(1, RID))
    error = wire.render(ev.ProviderFailed("llm"))
    done = wire.render(ev.StreamEnd(RID))
    assert [e["type"] for e in error] == ["error"]
    assert error[0]["error"]["message"] == "the language model is unavailable, please try again"
    response = next(e for e in done if e["type"] == "response.done")["response"]
    assert response["status"] == "failed"
