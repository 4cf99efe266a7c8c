"""The session's turn checks: the real Smart Turn model in the runtime's turn pool, its
"complete" held against the words decoded at the same pause (the rule on the last word
and the real SmolLM2 end-of-sentence score), and how the two verdicts combine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile as sf
import structlog

from gateway.config import Config
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.text import ends_mid_sentence
from gateway.pipeline.turn_checks import TurnChecks, combine, with_doubt
from gateway.pipeline.turns import TurnCheck, TurnSettings
from gateway.providers import registry
from gateway.providers.base import Transcript
from gateway.providers.smart_turn import SmartTurn
from gateway.providers.text_turn import TextTurn, normalise

WAV = Path(__file__).parents[1] / "data" / "pool_holidays_pause.wav"
SETTINGS = TurnSettings(pause_ms=200, recheck_ms=400)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    # A check may wait for the one thread (the busy machine is not what is tested).
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "null"},
                           tts={"provider": "null"}, turn={"wait_ms": 10000})
    return Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg), "turn": SmartTurn(),
                                        "text_turn": TextTurn()})


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
    for _ in range(1000):
        if got and not checks._tasks:  # a scoring left running would outlive the loop
            return got[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no verdict")


async def test_complete_stands_when_the_words_end_a_sentence(runtime: Runtime) -> None:
    assert await verdict(runtime, "Is the swimming pool open during the holidays?", 200)
    assert await verdict(runtime, None, 200)  # no decode at this pause: the model alone


async def test_complete_is_held_when_the_words_stop_on_the(runtime: Runtime) -> None:
    assert await verdict(runtime, "Until what time is the?", 200) is False
    assert await verdict(runtime, "Until what time is the?", 600) is False
    # Later in the same pause the sound alone decides: no wait to the 2.5 s limit.
    assert await verdict(runtime, "Until what time is the?", 1000)


async def test_complete_is_held_when_the_language_model_says_the_sentence_goes_on(
        runtime: Runtime) -> None:
    # No dangling word for the rule; the language model knows "what time do you" goes on.
    assert not ends_mid_sentence("What time do you?")
    assert await verdict(runtime, "What time do you?", 200) is False
    assert await verdict(runtime, "What time do you open on Sundays?", 200)


def test_the_language_model_scores_where_a_sentence_can_end(runtime: Runtime) -> None:
    model = runtime.text_turn
    assert model is not None
    s = SETTINGS
    for head, whole in (("How many children can come to a", "birthday party?"),
                        ("What's the price of the", "monthly membership?"),
                        ("How long do you keep", "things people leave behind?"),
                        ("And when are you open on", "public holidays?")):
        assert model.end_probability(head) < s.words_hold, head
        assert model.end_probability(f"{head} {whole}") > s.words_hold, whole
    assert model.end_probability("If I can't make it, can I get my money back?") > s.words_end
    assert model.end_probability("") == 0.0
    assert normalise("Hi, what's ON?!  At the Café...") == "hi what's on at the café"


def test_the_language_model_reuses_the_words_it_has_scored() -> None:
    """Scoring reuses the cache of the prefix shared with the last words scored (the
    pauses of one utterance): the same probabilities as scored afresh."""
    model = TextTurn()
    texts = ["what time do you", "what time do you open", "what time do you open on sundays",
             "how much is a", "how much is a ten swim card", "can i bring my dog along",
             "can i bring my dog", "can i bring my dog"]
    reused = [model.end_probability(t) for t in texts]
    fresh = []
    for t in texts:
        model._llm.n_tokens = 0  # nothing cached
        fresh.append(model.end_probability(t))
    assert reused == pytest.approx(fresh, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("audio, words, text, silence_ms, expected", [
    (None, "what time", 0.5, 200, None),  # the sound could not be judged: the timer
    (0.9, "what time do you open", 0.3, 200, True),  # both say complete
    (0.9, "what time do you", 0.001, 200, False),  # the words go on: held
    (0.9, "what time do you", 0.001, 600, False),  # still within hold_ms
    (0.9, "what time do you", 0.001, 1000, True),  # past it: the sound decides
    (0.9, "until what time is the", None, 200, False),  # no model: the last-word rule
    (0.9, "what time do you", None, 200, True),  # no model, no rule: the sound
    (0.2, "can i get my money back", 0.3, 200, False),  # the sound has the first say
    # ...unless the words surely end a sentence (words_sure) and were heard, not guessed
    (0.06, "can we have a picnic next to the pool", 0.56, 200, True),
    (0.06, Transcript("until what time is that", None, 0.23), 0.49, 200, False),
    (0.06, "i'd like to book the", 0.5, 200, False),
    (0.2, "can i get my money back", 0.4, 600, True),  # clearly complete: at the recheck
    (0.2, "can i get my money", 0.1, 600, False),  # not clearly: wait on
    (0.2, "can i get my money back", None, 600, False),  # no score: wait on
    # Whisper's guess at a fragment's end ("how much is a" -> "how much is that?"):
    (0.9, Transcript("how much is that", None, 0.26), 0.23, 200, False),  # held
    (0.9, Transcript("how much is that", None, 0.26), 0.23, 1000, True),  # not past hold_ms
    (0.9, Transcript("how much is a ten swim card", None, 0.97), 0.3, 200, True),
    (0.2, Transcript("how much is that", None, 0.26), 0.4, 600, False),  # no overruling
    (0.2, Transcript("can i get my money back", None, 0.99), 0.4, 600, True),
    # From hold_ms on, words that can end a sentence end a pause the sound never calls
    # complete (towel: p 0.01 at every check, "can I get one pair?" with a guessed "pair")
    (0.01, Transcript("can i get one pair", None, 0.25), 0.054, 600, False),
    (0.01, Transcript("can i get one pair", None, 0.25), 0.054, 1000, True),
    (0.01, "i'd like to book a", 0.3, 1000, False),  # broken off: waits on
    (0.01, "i'd like to book", 0.001, 1000, False),  # the model says it goes on
    (0.01, "can i get one", None, 1000, False),  # no score: waits on
])
def test_combine(audio: float | None, words: str, text: float | None, silence_ms: float,
                 expected: bool | None) -> None:
    s = TurnSettings(pause_ms=200, recheck_ms=400, hold_ms=1000, words_hold=0.02,
                     words_end=0.2, words_sure=0.4, last_word_min=0.35)
    assert combine(audio, words, text, silence_ms, s) is expected


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
                 "I'd like to know if", "Bread and", "um"):
        assert ends_mid_sentence(text), text
    for text in ("What time do you open on Sundays?", "", "Where are you from?",
                 "Can I bring my dog along?", "The one.", "What number can I ring you on?"):
        assert not ends_mid_sentence(text), text


async def test_a_recheck_judges_the_final_models_words_once_they_are_done(
        runtime: Runtime) -> None:
    """Two models: the first check has only the quick model's words (here misheard into
    an unfinished sentence, so "complete" is held); a recheck of the same pause, once the
    final model's decode is done, judges those words instead and ends the turn."""
    got: list[bool | None] = []
    checks = TurnChecks(runtime, lambda _c, v: got.append(v), structlog.get_logger())

    async def words(text: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return text

    checks.pause_decode = (3, 2, asyncio.create_task(words("Until what time is the?", 0.0)))
    final = asyncio.create_task(words("Until what time is the cafe open?", 0.3))
    checks.pause_final = (3, 2, final)
    for silence_ms in (200, 600):
        if silence_ms == 600:
            await final  # by the recheck, the final model has finished
        checks.submit(TurnCheck(turn_id=3, pause=2, pcm=finished_question(),
                                silence_ms=silence_ms), SETTINGS)
        for _ in range(1000):
            if len(got) == (1 if silence_ms == 200 else 2) and not checks._tasks:
                break
            await asyncio.sleep(0.01)
    assert got == [False, True]



class Judged:
    """A runtime that records what each model was asked (the sound by its length)."""

    def __init__(self) -> None:
        self.sounds: list[int] = []
        self.texts: list[str] = []

    async def turn_probability(self, pcm: bytes) -> float | None:
        self.sounds.append(len(pcm))
        await asyncio.sleep(0.02)
        return 0.9

    async def text_end_probability(self, text: str) -> float | None:
        self.texts.append(text)
        return 0.5


async def settle(checks: TurnChecks, got: list[bool | None], n: int) -> None:
    for _ in range(500):
        if len(got) >= n and not checks._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no verdict")


async def test_the_words_of_a_pause_are_scored_before_its_check_is_asked() -> None:
    """The words of a pause are scored once their decode is done: the pause's first
    check finds the score ready and runs only the sound's model; its rechecks reuse the
    score."""
    judged, got = Judged(), []
    checks = TurnChecks(judged, lambda _c, v: got.append(v),  # type: ignore[arg-type]
                        structlog.get_logger())

    async def words() -> str:
        return "What time do you open?"

    decode = asyncio.create_task(words())
    checks.decoding(3, 2, decode, decode)
    await asyncio.sleep(0.05)
    assert judged.texts == ["What time do you open?"] and judged.sounds == []
    for silence_ms in (200, 600):
        checks.submit(TurnCheck(3, 2, b"\0" * 1200, silence_ms), SETTINGS)
        await settle(checks, got, 1 if silence_ms == 200 else 2)
    assert got == [True, True] and judged.sounds == [1200, 1200]
    assert judged.texts == ["What time do you open?"]  # scored once for the pause


async def test_words_are_not_scored_ahead_when_the_silence_timer_decides() -> None:
    """A session on the silence timer (a client's own ``stop_ms``) has no checks to
    score words for."""
    judged = Judged()
    checks = TurnChecks(judged, lambda _c, _v: None,  # type: ignore[arg-type]
                        structlog.get_logger())

    async def words() -> str:
        return "What time do you open?"

    checks.semantic = False
    decode = asyncio.create_task(words())
    checks.decoding(3, 2, decode, decode)
    await asyncio.sleep(0.05)
    assert judged.texts == []


def test_a_last_word_one_recogniser_guessed_stays_doubtful() -> None:
    base = Transcript("Until what time is there?", 0.6, 0.42)
    assert with_doubt(base, Transcript("Until what time is there.", 0.5, 0.26)).last_word == 0.26
    assert with_doubt(base, Transcript("until what time is there", 0.5, 0.9)).last_word == 0.42
    assert with_doubt(base, Transcript("Until what time is that?", 0.5, 0.26)).last_word == 0.26
    assert with_doubt(base, Transcript("Until what time is", 0.5, 0.1)).last_word == 0.42
    assert with_doubt(base, "Until what time is there?") is base  # no probability: as is
    assert with_doubt("there", Transcript("there", None, 0.1)) == "there"


async def test_a_recheck_keeps_the_quick_models_doubt_about_the_same_last_word() -> None:
    """The first check held a "complete" on tiny.en's guessed "that"; the recheck judges
    base's words, which end on another guess at that word, surer (0.42): held."""
    judged, got = Judged(), []
    checks = TurnChecks(judged, lambda _c, v: got.append(v),  # type: ignore[arg-type]
                        structlog.get_logger())

    async def words(text: Transcript) -> str:
        return text

    quick = asyncio.create_task(words(Transcript("Until what time is that.", 0.5, 0.26)))
    final = asyncio.create_task(words(Transcript("Until what time is there?", 0.6, 0.42)))
    checks.decoding(3, 2, quick, final)
    await asyncio.sleep(0.05)
    for silence_ms in (200, 600):
        checks.submit(TurnCheck(3, 2, b"\0" * 1200, silence_ms), SETTINGS)
        await settle(checks, got, 1 if silence_ms == 200 else 2)
    assert got == [False, False]  # Judged: the sound says complete (0.9), text 0.5
