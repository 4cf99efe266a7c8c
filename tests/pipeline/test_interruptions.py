"""Interruptions decided by words: the transcript classifier, its settings, and the
Endpointer's overlap events (synthetic frames, scripted VAD verdicts)."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from gateway.config import Config, ConfigError
from gateway.pipeline import interruptions as itr
from gateway.pipeline.interruptions import InterruptionSettings, Overlap, classify
from gateway.pipeline.overlap import MAX_IN_FLIGHT, OverlapChecks
from gateway.pipeline.turns import (
    BargeIn,
    Endpointer,
    EndpointerSettings,
    OverlapAudio,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
)

S = InterruptionSettings()
FRAME = bytes(640)


@pytest.mark.parametrize("text", [
    "Mm-hmm.", "Mhm", "mm hmm", "Uh-huh.", "Okay.", "OK, okay.", "Right.", "Yeah, yeah.",
    "I see.", "Sure!", "Oh, I see.", "M-H-M.", "All right", "Got it.", "Yes.", "Thank you.",
    # Hums however the recogniser spells them (Whisper heard a synthetic "Mhm." so).
    "M. H. M. H.", "Mmm-hmm.", "Hmm.", "Hm, hm.", "Uh, huh.", "Mm-hm, okay.", "Um.",
])
def test_backchannels(text: str) -> None:
    assert classify(text, S) is Overlap.BACKCHANNEL


@pytest.mark.parametrize("text", [
    "Wait, what about the prices?", "Stop.", "No.", "Okay, but when do you open?",
    "Yeah, tell me more about the pool", "Hello, what is the weather like today?",
    "Hmm, what about the prices?", "Mm. No.", "Uh, how much?",
])
def test_real_interruptions(text: str) -> None:
    assert classify(text, S) is Overlap.WORDS


@pytest.mark.parametrize("text", ["", "  ", "...", "[Music]", "(coughing)", "*cough*"])
def test_no_words(text: str) -> None:
    assert classify(text, S) is Overlap.NO_WORDS


def test_min_words_and_confidence() -> None:
    two = InterruptionSettings(min_words=2)
    assert classify("Stop.", two) is Overlap.BACKCHANNEL  # one word is not enough
    assert classify("Okay stop now.", two) is Overlap.WORDS
    assert S.min_confidence == 0.45
    assert classify("Bye, see!", S, confidence=0.395) is Overlap.NO_WORDS  # whisper on "I see"
    assert classify("Okay", S, confidence=0.43) is Overlap.BACKCHANNEL  # unsure, harmless
    sure = InterruptionSettings(min_confidence=0.5)
    assert classify("and momentum", sure, confidence=0.36) is Overlap.NO_WORDS
    assert classify("and momentum", sure, confidence=0.8) is Overlap.WORDS
    assert classify("and momentum", sure, confidence=None) is Overlap.WORDS


def test_a_decode_of_speech_going_on_waits_for_more_speech_or_an_interrupting_word() -> None:
    """tiny.en hears the first 250 ms of a hummed "Mhm" as "and make chin." (confidence
    0.515, a real "Wait," 0.477): until the speech has lasted partial_min_ms, only words
    people interrupt with interrupt; the next decode (or the final one) decides."""
    for hum in ("and make.", "and make chin.", "Emma Chen"):
        assert classify(hum, S, confidence=0.515, partial=True, speech_ms=300) \
            is Overlap.UNSURE, hum
    assert classify("and make chin.", S, confidence=0.515) is Overlap.WORDS  # final decode
    for opening in ("Wait,", "Sorry,", "Actually,", "Stop.", "Hold on", "Excuse me,", "No."):
        assert classify(opening, S, confidence=0.48, partial=True, speech_ms=300) \
            is Overlap.WORDS, opening
    assert classify("How deep is the", S, partial=True, speech_ms=760) is Overlap.WORDS
    assert classify("Mhm.", S, partial=True, speech_ms=300) is Overlap.BACKCHANNEL
    assert classify("", S, partial=True) is Overlap.NO_WORDS
    at_once = itr.parse_settings(S, {"partial_min_ms": 0})
    assert classify("and make.", at_once, confidence=0.475, partial=True, speech_ms=300) \
        is Overlap.WORDS


def test_short_speech_decoded_whole_needs_a_surer_transcript() -> None:
    """Live, Whisper heard a whole hummed "Mhm" (~540 ms voiced) as "and make them." at
    0.486, above min_confidence; whole short questions score 0.53-0.71. Speech shorter
    than partial_min_ms, decoded when it ends, counts from short_min_confidence (or with
    a word people interrupt with); longer speech keeps min_confidence."""
    assert classify("and make them.", S, confidence=0.486, voiced_ms=540) is Overlap.NO_WORDS
    for short in ("What?", "How much?", "Which one?"):
        assert classify(short, S, confidence=0.53, voiced_ms=300) is Overlap.WORDS, short
    assert classify("Wait...", S, confidence=0.46, voiced_ms=240) is Overlap.WORDS
    assert classify("and make them.", S, confidence=0.486, voiced_ms=900) is Overlap.WORDS
    assert classify("and make them.", S, confidence=0.486) is Overlap.WORDS  # not known
    # A decode of speech still going on is UNSURE before partial_min_ms anyway.
    assert classify("and make them.", S, confidence=0.486, partial=True, speech_ms=400,
                    voiced_ms=400) is Overlap.UNSURE
    lax = itr.parse_settings(S, {"short_min_confidence": 0.45})
    assert classify("and make them.", lax, confidence=0.486, voiced_ms=540) is Overlap.WORDS


def test_own_backchannel_list() -> None:
    s = itr.parse_settings(S, {"backchannels": ["d'accord", "genau", "na ja"]})
    assert classify("Genau.", s) is Overlap.BACKCHANNEL
    assert classify("Na ja, d'accord", s) is Overlap.BACKCHANNEL
    assert classify("Okay.", s) is Overlap.WORDS  # the list replaces the built-in one
    assert classify("Mm-hmm, hm.", s) is Overlap.BACKCHANNEL  # hums are no words anywhere


@pytest.mark.parametrize("raw, message", [
    ({"mode": "loud"}, "mode must be words or speech"),
    ({"min_words": 0}, "min_words must be an integer from 1 to 20"),
    ({"min_words": True}, "min_words must be an integer"),
    ({"min_confidence": 2}, "min_confidence must be a number from 0 to 1"),
    ({"short_min_confidence": -1}, "short_min_confidence must be a number from 0 to 1"),
    ({"backchannels": "mhm"}, "must be a list"),
    ({"backchannels": ["!!"]}, "each entry is 1 to 6 words"),
    ({"check_interval_ms": 5}, "check_interval_ms must be an integer from 100"),
    ({"timeout": 3}, "unknown interruptions setting(s): timeout"),
    ({"on_overlap": "stop"}, "on_overlap must be play or pause"),
    ({"resume_ms": 50}, "resume_ms must be an integer from 100 to 10000"),
])
def test_bad_settings_are_clear_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        itr.parse_settings(S, raw)


def test_config_defaults_and_validation() -> None:
    assert itr.from_config(Config().interruptions) == S
    with pytest.raises(ConfigError, match="mode must be words or speech"):
        Config().replace(interruptions={"mode": "never"})
    own = Config().replace(interruptions={"backchannels": ["genau"], "min_words": 2})
    assert itr.from_config(own.interruptions).backchannels == ("genau",)


def run(ep: Endpointer, verdicts: list[bool], replying: bool = True) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for v in verdicts:
        events += ep.push(FRAME, v, replying)
    return events


def words_endpointer() -> Endpointer:
    return Endpointer(EndpointerSettings(barge_in_words=True, overlap_check_ms=200))


def test_overlap_is_decoded_not_a_barge_in() -> None:
    ep = words_endpointer()
    events = run(ep, [True] * 30 + [False] * 25)  # 600 ms of speech, then 500 ms silence
    assert not any(isinstance(e, BargeIn) for e in events)
    overlaps = [e for e in events if isinstance(e, OverlapAudio)]
    # At 250 ms of voice, every 200 ms while it lasts, and once more when it is over.
    assert [o.final for o in overlaps] == [False, False, True]
    assert len(overlaps[0].pcm) < len(overlaps[-1].pcm)
    # How long the speech has gone on (from its start; the last with its 400 ms of silence).
    assert [o.speech_ms for o in overlaps] == [260, 460, 1000]
    assert [o.voiced_ms for o in overlaps] == [260, 460, 600]  # voiced frames only
    start = next(e for e in events if isinstance(e, SpeechStarted))
    assert all(o.started_ms == start.at_ms for o in overlaps)
    stop = next(e for e in events if isinstance(e, SpeechStopped))
    assert stop.discarded  # unless the words made it a turn
    assert events.index(overlaps[-1]) < events.index(stop)


def test_confirmed_overlap_becomes_a_turn() -> None:
    ep = words_endpointer()
    run(ep, [True] * 15)
    assert ep.confirm(ep.turn_id)
    assert not ep.confirm(ep.turn_id + 1)
    events = run(ep, [True] * 10 + [False] * 25)
    assert not any(isinstance(e, OverlapAudio) for e in events)  # a turn like any other
    stop = next(e for e in events if isinstance(e, SpeechStopped))
    assert not stop.discarded
    assert not ep.confirm(stop.turn_id)  # over: too late to confirm


def test_short_sounds_are_not_even_decoded() -> None:
    ep = words_endpointer()
    events = run(ep, [True] * 10 + [False] * 25)  # 200 ms: under barge_in_min_ms
    assert not any(isinstance(e, OverlapAudio) for e in events)
    assert next(e for e in events if isinstance(e, SpeechStopped)).discarded


def test_speech_mode_keeps_the_old_rule() -> None:
    ep = Endpointer(EndpointerSettings(barge_in_words=False))
    events = run(ep, [True] * 15)
    assert any(isinstance(e, BargeIn) for e in events)
    assert not any(isinstance(e, OverlapAudio) for e in events)


def test_no_overlap_outside_a_reply() -> None:
    ep = words_endpointer()
    events = run(ep, [True] * 30 + [False] * 25, replying=False)
    assert not any(isinstance(e, OverlapAudio | BargeIn) for e in events)
    assert not next(e for e in events if isinstance(e, SpeechStopped)).discarded


class Decodes:
    """A recogniser whose answers the test releases one by one (the adapter's clock)."""

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.release: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, pcm: bytes) -> str:
        self.started.append(pcm)
        return await self.release.get()


async def test_overlap_checks_one_decode_per_utterance_final_always_runs() -> None:
    decodes = Decodes()
    decided: list[tuple[int, bool, Overlap]] = []
    checks = OverlapChecks(decodes, lambda job, text, kind: decided.append(
        (job.turn_id, job.final, kind)), structlog.get_logger())
    checks.submit(OverlapAudio(1, b"a", False, 0.0), S)
    checks.submit(OverlapAudio(1, b"ab", False, 0.0), S)  # one running: skipped
    checks.submit(OverlapAudio(1, b"abc", True, 0.0), S)  # waits for the running one
    await asyncio.sleep(0)
    assert decodes.started == [b"a"]
    await decodes.release.put("Hello")
    for _ in range(5):
        await asyncio.sleep(0)
    assert decided == [(1, False, Overlap.WORDS)]  # the early verdict is not held back
    assert decodes.started == [b"a", b"abc"]
    await decodes.release.put("Hello there.")
    for _ in range(5):
        await asyncio.sleep(0)
    assert decided[-1] == (1, True, Overlap.WORDS)
    checks.close()


async def test_overlap_checks_are_bounded_per_session() -> None:
    decodes = Decodes()
    checks = OverlapChecks(decodes, lambda *_: None, structlog.get_logger())
    for turn in range(1, 10):
        checks.submit(OverlapAudio(turn, bytes([turn]), True, 0.0), S)
    await asyncio.sleep(0)
    assert len(decodes.started) == MAX_IN_FLIGHT
    checks.close()
