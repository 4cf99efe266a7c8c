"""The STT stage's pause decodes: with two models both at once (the quick one's words for
the turn checks, the final one's reused as the turn's transcript); with one, one decode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from gateway.pipeline.session_items import SttJob
from gateway.pipeline.transcriber import Transcriber
from gateway.pipeline.turn_checks import TurnChecks


class Decodes:
    """A stand-in for the session's decode: records when each decode starts and ends."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def __call__(self, pcm: bytes, turn_id: int, on_partial: Callable[[str], None] | None,
                       quick: bool, last_word: bool, ahead: bool) -> str:
        name = "quick" if quick else "full"
        self.log.append(f"{name} start last_word={last_word}" + (" ahead" if ahead else ""))
        await asyncio.sleep(0.05)
        self.log.append(f"{name} end")
        return f"{name} words"


async def feed(jobs: list[tuple[SttJob, float]], two_models: bool = True
               ) -> tuple[Decodes, list[str], TurnChecks]:
    """Each job put after the time beside it; waits for a final transcript."""
    decodes = Decodes()
    finals: list[str] = []
    checks = TurnChecks(None, lambda _c, _v: None, structlog.get_logger())  # type: ignore[arg-type]
    checks.semantic = False  # no words scored: no runtime here

    async def two() -> bool:
        return two_models

    stt = Transcriber(4, decodes, lambda _e: None,
                      lambda _t, text, _at: finals.append(text),
                      lambda _s, _e: None, checks, structlog.get_logger(), two_models=two)
    runner = asyncio.create_task(stt.run())
    try:
        for job, after in jobs:
            await asyncio.sleep(after)
            stt.put(job)
        for _ in range(100):
            if finals:
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    return decodes, finals, checks


PCM = b"\0\0" * 1600


async def run_pause_then_final(two_models: bool, gap: float = 0.08
                               ) -> tuple[Decodes, list[str], Any]:
    """A pause's job, then (``gap`` later) the turn ends there."""
    return await feed([(SttJob(1, PCM, final=False, early=True, pause=0), 0),
                       (SttJob(1, PCM, final=True, use_early=True), gap)], two_models)


async def test_two_models_decode_a_pause_at_once_and_the_final_one_is_the_transcript(
        ) -> None:
    decodes, finals, checks = await run_pause_then_final(two_models=True)
    assert sorted(decodes.log[:2]) == ["full start last_word=True ahead",
                                       "quick start last_word=True"]
    assert len(decodes.log) == 4  # no second final decode: the pause's is reused
    assert finals == ["full words"]
    assert checks.pause_decode is not None and checks.pause_final is not None
    assert checks.pause_decode[2] is not checks.pause_final[2]


async def test_a_turn_ending_while_the_pause_is_decoded_reuses_that_decode() -> None:
    decodes, finals, _ = await run_pause_then_final(two_models=True, gap=0.01)
    assert [e for e in decodes.log if "start" in e and "full" in e] == \
        ["full start last_word=True ahead"]
    assert finals == ["full words"]


async def test_one_model_decodes_a_pause_once() -> None:
    decodes, finals, checks = await run_pause_then_final(two_models=False)
    assert decodes.log == ["full start last_word=True", "full end"]
    assert finals == ["full words"]
    assert checks.pause_decode is not None and checks.pause_final is not None
    assert checks.pause_decode[2] is checks.pause_final[2]


async def test_the_words_of_a_pause_first_then_its_final_decode() -> None:
    """stt.pause_words_ms: the quick decode starts alone; the final model's starts with
    the pause's next job and is the turn's transcript."""
    decodes, finals, checks = await feed([
        (SttJob(1, PCM, final=False, early=True, pause=0, words_only=True), 0),
        (SttJob(1, PCM, final=False, early=True, pause=0), 0.02),
        (SttJob(1, PCM, final=True, use_early=True), 0.08)])
    assert decodes.log[0] == "quick start last_word=True"
    assert decodes.log.index("full start last_word=True ahead") > 0
    assert decodes.log.count("full start last_word=True ahead") == 1  # reused as final
    assert finals == ["full words"]
    assert checks.pause_final is not None and checks.pause_decode is not None
    assert checks.pause_final[2] is not checks.pause_decode[2]


async def test_a_gap_between_words_costs_only_the_quick_decode() -> None:
    decodes, finals, _ = await feed([
        (SttJob(1, PCM, final=False, early=True, pause=0, words_only=True), 0),
        (SttJob(1, PCM, final=True), 0.08)])  # speech went on, then the timer ended it
    assert [e for e in decodes.log if "start" in e] == \
        ["quick start last_word=True", "full start last_word=False"]
    assert finals == ["full words"]


async def test_one_model_decodes_the_words_of_a_pause_as_its_final() -> None:
    decodes, finals, _ = await feed([
        (SttJob(1, PCM, final=False, early=True, pause=0, words_only=True), 0),
        (SttJob(1, PCM, final=False, early=True, pause=0), 0.02),
        (SttJob(1, PCM, final=True, use_early=True), 0.08)], two_models=False)
    assert decodes.log == ["full start last_word=True", "full end"]
    assert finals == ["full words"]
