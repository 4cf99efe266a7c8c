"""The session's VAD stage runs inline in ``feed_audio`` (no task, no queue hop), and the
STT queue's overflow policy: interim and pause jobs make room; finals are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gateway.audio import pcm
from gateway.config import Config
from gateway.pipeline import events as ev
from gateway.pipeline.outbox import AudioOut, Outbox
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.session import Session, SessionSettings, SttJob
from gateway.providers import registry

WAV = Path(__file__).parents[1] / "data" / "what_is_the_gateway.wav"
FRAME = 640  # 20 ms at 16 kHz, 16-bit


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    # The silence timer: these tests see what feed_audio does with no task running (a
    # turn check is a task; tests/transports/test_semantic_turn.py covers it).
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "null"},
                           tts={"provider": "null"}, turn={"detector": "silence"})
    return Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg)})


def make_session(runtime: Runtime) -> tuple[Session, Outbox]:
    fmt = pcm.AudioFormat("pcm16", 16000)
    outbox = Outbox(512)
    session = Session(runtime, SessionSettings(fmt, fmt), outbox, session_id="sess_t",
                      conversation_id="conv_t")
    return session, outbox  # not started: only what feed_audio does itself is seen


def speech() -> bytes:
    data, rate = sf.read(str(WAV), dtype="int16")
    return pcm.resample(data.tobytes(), rate, 16000)


def events(outbox: Outbox) -> list[type]:
    return [type(item) for item in list(outbox._items) if not isinstance(item, AudioOut)]


async def test_feed_audio_detects_a_turn_without_any_stage_task(runtime: Runtime) -> None:
    session, outbox = make_session(runtime)
    audio = speech() + bytes(FRAME * 50)  # then a second of silence
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        session.feed_audio(audio[i : i + FRAME])
    assert events(outbox)[:2] == [ev.SpeechStarted, ev.SpeechStopped]
    jobs = [session.stt_q.get_nowait() for _ in range(session.stt_q.qsize())]
    finals = [j for j in jobs if j.final]
    assert len(finals) == 1 and len(finals[0].pcm) > 16000  # the utterance, > 0.5 s


async def test_end_of_speech_closes_the_open_utterance(runtime: Runtime) -> None:
    session, outbox = make_session(runtime)
    audio = speech()[: 16000 * 2]  # a second of speech, no trailing silence
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        session.feed_audio(audio[i : i + FRAME])
    assert ev.SpeechStopped not in events(outbox)
    session.end_of_speech()
    assert events(outbox)[-1] is ev.SpeechStopped


async def test_a_full_stt_queue_drops_interim_work_before_a_final(runtime: Runtime) -> None:
    session, outbox = make_session(runtime)
    size = session.stt_q.maxsize
    session.stt.put(SttJob(1, b"", final=True))
    for _ in range(size - 1):
        session.stt.put(SttJob(2, b"", final=False, early=True))
    session.stt.put(SttJob(2, b"", final=True))
    jobs = [session.stt_q.get_nowait() for _ in range(session.stt_q.qsize())]
    assert [(j.turn_id, j.final) for j in jobs if j.final] == [(1, True), (2, True)]
    assert len(jobs) == size and ev.SttBehind not in events(outbox)


async def test_finals_only_are_dropped_oldest_first_with_an_error(runtime: Runtime) -> None:
    session, outbox = make_session(runtime)
    size = session.stt_q.maxsize
    for turn in range(1, size + 2):
        session.stt.put(SttJob(turn, b"", final=True))
    jobs = [session.stt_q.get_nowait() for _ in range(session.stt_q.qsize())]
    assert [j.turn_id for j in jobs] == list(range(2, size + 2))
    assert [i for i in outbox._items if isinstance(i, ev.SttBehind)] == [ev.SttBehind(1)]


async def test_a_vad_bug_ends_the_session_with_an_internal_error(runtime: Runtime) -> None:
    # A bug in turn tracking (not bad input) must not escape into the transport's reader.
    for call in ("feed_audio", "end_of_speech"):
        session, outbox = make_session(runtime)
        session.feed_audio(speech()[: 16000 * 2])  # an open utterance

        def broken(*_args: object) -> list[object]:
            raise RuntimeError("turn tracker bug")

        session.endpointer.push = broken  # type: ignore[method-assign]
        session.endpointer.force_stop = broken  # type: ignore[method-assign]
        if call == "feed_audio":
            session.feed_audio(bytes(FRAME))
        else:
            session.end_of_speech()
        assert events(outbox)[-1] is ev.SessionCrashed and outbox.closed


async def test_unsure_words_soon_after_the_turn_ended_are_the_users_continuation(
        runtime: Runtime) -> None:
    """A mid-sentence pause misjudged as the end: the rest of the sentence, spoken over the
    reply's start, is the user going on; an unsure transcript of it still counts as words
    (it used to be taken for noise, and the caller's words were lost). Later over the
    reply, the same unsure words are still doubted."""
    from gateway.pipeline.interruptions import Overlap, classify
    from gateway.pipeline.turns import OverlapAudio, SpeechStopped
    from gateway.providers.base import Transcript

    session, _outbox = make_session(runtime)
    s = session.interruptions
    session._turn_events([SpeechStopped(1, 10_000.0, b"\0\0" * 160)])
    unsure = Transcript("the cafe open", 0.23)
    soon = OverlapAudio(2, b"", final=True, started_ms=10_000.0 + s.continuation_ms - 100)
    late = OverlapAudio(3, b"", final=True, started_ms=10_000.0 + s.continuation_ms + 900)
    assert classify(unsure, session._overlap_settings(soon), 0.23) is Overlap.WORDS
    assert classify(unsure, session._overlap_settings(late), 0.23) is Overlap.NO_WORDS


async def test_telephony_audio_is_judged_at_8khz_and_decoded_at_16khz(runtime: Runtime) -> None:
    """An 8 kHz session's VAD takes its frames as they come (no per-frame resampling)
    and still finds the same turn; the STT gets that utterance at 16 kHz."""
    wide, _ = make_session(runtime)
    fmt8 = pcm.AudioFormat("pcm16", 8000)
    narrow = Session(runtime, SessionSettings(fmt8, fmt8), Outbox(512), session_id="sess_8",
                     conversation_id="conv_8")
    audio16 = speech() + bytes(FRAME * 50)
    audio8 = pcm.resample(audio16, 16000, 8000)
    for session, audio, frame in ((wide, audio16, FRAME), (narrow, audio8, FRAME // 2)):
        for i in range(0, len(audio) - frame + 1, frame):
            session.feed_audio(audio[i : i + frame])
    assert narrow._input is not None and narrow._input.rate == 8000
    finals = []
    for session in (wide, narrow):
        jobs = [session.stt_q.get_nowait() for _ in range(session.stt_q.qsize())]
        finals.append([j.pcm for j in jobs if j.final])
    assert len(finals[0]) == len(finals[1]) == 1
    a, b = (np.frombuffer(f[0], "<i2").astype(np.float64) for f in finals)
    assert abs(len(a) - len(b)) <= 2 * FRAME // 2  # the same utterance, +-2 frames
    n = min(len(a), len(b))
    lag = int(np.argmax(np.correlate(a[: n // 2], b[: n // 2 - 64], "valid")))
    x, y = a[lag : lag + n // 2 - 64], b[: n // 2 - 64]
    assert np.corrcoef(x, y)[0, 1] > 0.9  # 16 kHz audio of the same speech (band-limited)
