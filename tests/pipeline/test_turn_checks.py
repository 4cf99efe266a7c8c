"""The session's turn checks: the real Smart Turn model in the runtime's turn pool, its
"complete" held against the words decoded at the same pause."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile as sf
import structlog

from gateway.config import Config
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.text import ends_mid_sentence
from gateway.pipeline.turn_checks import TurnChecks
from gateway.pipeline.turns import TurnCheck, TurnSettings
from gateway.providers import registry
from gateway.providers.smart_turn import SmartTurn

WAV = Path(__file__).parents[1] / "data" / "pool_holidays_pause.wav"
SETTINGS = TurnSettings(pause_ms=200, recheck_ms=400)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "null"},
                           tts={"provider": "null"})
    return Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg), "turn": SmartTurn()})


def finished_question() -> bytes:
    data, _ = sf.read(str(WAV), dtype="int16")
    return bytes(data.tobytes())[: -16000 // 2 * 2]  # 200 ms of its trailing silence


async def verdict(runtime: Runtime, words: str | None, silence_ms: float) -> bool | None:
    got: list[bool | None] = []
    checks = TurnChecks(runtime, lambda _c, v: got.append(v), structlog.get_logger())
    check = TurnCheck(turn_id=3, pause=2, pcm=finished_question(), silence_ms=silence_ms)
    if words is not None:
        async def decode() -> str:
            await asyncio.sleep(0.05)  # the decode finishes after the model
            return words
        checks.pause_decode = (3, 2, asyncio.create_task(decode()))
    checks.submit(check, SETTINGS)
    for _ in range(500):
        if got:
            return got[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no verdict")


async def test_complete_stands_when_the_words_end_a_sentence(runtime: Runtime) -> None:
    assert await verdict(runtime, "Is the swimming pool open during the holidays?", 200)
    assert await verdict(runtime, None, 200)  # no decode at this pause: the model alone


async def test_complete_is_held_when_the_words_stop_on_the(runtime: Runtime) -> None:
    assert await verdict(runtime, "Until what time is the?", 200) is False
    # Later in the same pause the model alone decides: no wait to the 2.5 s limit.
    assert await verdict(runtime, "Until what time is the?", 600)


async def test_a_decode_of_another_pause_is_not_used(runtime: Runtime) -> None:
    got: list[bool | None] = []
    checks = TurnChecks(runtime, lambda _c, v: got.append(v), structlog.get_logger())

    async def old_words() -> str:
        return "and the"

    checks.pause_decode = (3, 1, asyncio.create_task(old_words()))  # pause 1, not 2
    checks.submit(TurnCheck(3, 2, finished_question(), 200), SETTINGS)
    while not got:
        await asyncio.sleep(0.01)
    assert got == [True]


def test_ends_mid_sentence() -> None:
    for text in ("until what time is the", "How many children can come to a?",
                 "I'd like to know if", "And when are you open on", "Bread and", "um"):
        assert ends_mid_sentence(text), text
    for text in ("What time do you open on Sundays?", "", "Where are you from?",
                 "Can I bring my dog along?", "The one."):
        assert not ends_mid_sentence(text), text
