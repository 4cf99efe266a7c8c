"""Endpointer: synthetic frames with scripted VAD verdicts in, turn events out."""

from __future__ import annotations

import pytest

from gateway.pipeline.turns import (
    BargeIn,
    Endpointer,
    EndpointerSettings,
    InterimAudio,
    PauseAudio,
    SpeechStarted,
    SpeechStopped,
    TurnCheck,
    TurnEvent,
    TurnSettings,
)

FRAME_MS = 20
FRAME_BYTES = 16000 * FRAME_MS // 1000 * 2  # 640: 20 ms of 16 kHz s16le
T, F = True, False


def frame(i: int) -> bytes:
    """Frame number ``i``: its index repeated, so frames can be told apart in the pcm."""
    return i.to_bytes(2, "little") * (FRAME_BYTES // 2)


def frame_ids(pcm: bytes) -> list[int]:
    assert len(pcm) % FRAME_BYTES == 0
    return [int.from_bytes(pcm[k : k + 2], "little") for k in range(0, len(pcm), FRAME_BYTES)]


class Feeder:
    """Feeds numbered frames and records (frame index, event)."""

    def __init__(self, settings: EndpointerSettings | None = None, first_turn_id: int = 1):
        self.ep = Endpointer(settings or EndpointerSettings(), first_turn_id=first_turn_id)
        self.i = 0
        self.events: list[tuple[int, TurnEvent]] = []

    def feed(self, verdicts: list[bool], replying: bool = False) -> list[tuple[int, TurnEvent]]:
        new: list[tuple[int, TurnEvent]] = []
        for v in verdicts:
            for ev in self.ep.push(frame(self.i), v, replying):
                new.append((self.i, ev))
            self.i += 1
        self.events += new
        return new

    def of(self, cls: type) -> list[tuple[int, TurnEvent]]:
        return [(i, ev) for i, ev in self.events if isinstance(ev, cls)]


def test_defaults() -> None:
    s = EndpointerSettings()
    assert (s.frame_ms, s.start_ms, s.stop_ms, s.barge_in_min_ms, s.preroll_ms) == (
        20,
        60,
        400,
        250,
        200,
    )
    assert (s.interim_interval_ms, s.max_utterance_ms, s.early_final_ms) == (1000, 30000, 200)


def test_clock_is_the_audio() -> None:
    f = Feeder()
    f.feed([F] * 7)
    assert f.ep.now_ms == 7 * FRAME_MS
    f2 = Feeder(EndpointerSettings(frame_ms=30))
    f2.feed([F] * 3)
    assert f2.ep.now_ms == 90


def test_silence_only_gives_nothing() -> None:
    f = Feeder()
    assert f.feed([F] * 500) == []
    assert not f.ep.speaking and f.ep.turn_id == 0


def test_start_after_start_ms_of_speech() -> None:
    f = Feeder()
    assert f.feed([F] * 10 + [T, T]) == []  # 40 ms of speech: not yet
    assert not f.ep.speaking
    ((i, ev),) = f.feed([T])  # the 3rd speech frame: 60 ms
    assert i == 12
    assert ev == SpeechStarted(turn_id=1, at_ms=10 * FRAME_MS, during_reply=False)
    assert f.ep.speaking and f.ep.turn_id == 1


def test_interrupted_speech_runs_do_not_start_a_turn() -> None:
    f = Feeder()
    assert f.feed([T, T, F] * 50 + [T, F] * 50) == []
    assert not f.ep.speaking


def test_stop_after_stop_ms_of_silence() -> None:
    f = Feeder()
    f.feed([F] * 5 + [T] * 10)  # starts at frame 7 (speech began at frame 5 = 100 ms)
    f.feed([F] * 19)  # 380 ms of silence: still speaking
    assert f.of(SpeechStopped) == []
    assert f.ep.speaking
    ((i, ev),) = f.feed([F])
    assert i == 5 + 10 + 19
    assert isinstance(ev, SpeechStopped)
    assert ev.turn_id == 1 and not ev.discarded
    assert ev.at_ms == (i + 1) * FRAME_MS  # end of the 400 ms of silence
    assert not f.ep.speaking


def test_short_pauses_do_not_end_the_turn() -> None:
    f = Feeder()
    f.feed([T] * 5 + ([F] * 19 + [T] * 3) * 5)
    assert f.of(SpeechStopped) == []
    f.feed([F] * 20)
    assert len(f.of(SpeechStopped)) == 1
    assert len(f.of(SpeechStarted)) == 1


def test_utterance_audio_is_contiguous_with_preroll_and_trailing_silence() -> None:
    f = Feeder()
    f.feed([F] * 30 + [T] * 25 + [F] * 20)
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped)
    ids = frame_ids(stopped.pcm)
    assert ids == list(range(ids[0], 75))  # contiguous, up to the last silent frame
    assert ids[0] < 30  # some audio from before the speech began (the pre-roll)
    assert ids[0] >= 30 - 200 // FRAME_MS  # but no more than preroll_ms of it


def test_preroll_is_preroll_ms_before_the_speech_start() -> None:
    f = Feeder()
    f.feed([F] * 30 + [T] * 25 + [F] * 20)
    ((_, started),) = f.of(SpeechStarted)
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    first = frame_ids(stopped.pcm)[0]
    assert first * FRAME_MS == started.at_ms - 200  # frames 20..29 are the pre-roll


@pytest.mark.parametrize("preroll_ms", [0, 20, 40])
def test_utterance_keeps_the_whole_start_run(preroll_ms: int) -> None:
    f = Feeder(EndpointerSettings(preroll_ms=preroll_ms))
    f.feed([F] * 10 + [T] * 10 + [F] * 20)
    ((_, started),) = f.of(SpeechStarted)
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert started.at_ms == 200
    assert frame_ids(stopped.pcm)[0] <= 10  # speech began with frame 10


def test_interim_requests_every_interval_while_speaking() -> None:
    f = Feeder()
    f.feed([F] * 5 + [T] * 140)  # start declared at frame 7
    interims = f.of(InterimAudio)
    assert [i for i, _ in interims] == [7 + 50, 7 + 100]  # every 1000 ms after the start
    for i, ev in interims:
        assert isinstance(ev, InterimAudio) and ev.turn_id == 1
        ids = frame_ids(ev.pcm)
        assert ids[-1] == i  # all audio so far
        assert ids == list(range(ids[0], i + 1))


def test_interim_interval_setting_and_reset_per_turn() -> None:
    f = Feeder(EndpointerSettings(interim_interval_ms=100, early_final_ms=0))  # 5 frames
    f.feed([T] * 13)  # start at frame 2
    assert [i for i, _ in f.of(InterimAudio)] == [7, 12]
    f.feed([F] * 20)  # the trailing pause is still part of the turn; stop at frame 32
    ((stop_i, _),) = f.of(SpeechStopped)
    assert stop_i == 32
    assert [i for i, _ in f.of(InterimAudio)] == [7, 12, 17, 22, 27]  # none with the stop
    f.feed([F] * 50)  # nothing while silent
    assert len(f.of(InterimAudio)) == 5
    f.feed([T] * 8)  # second turn starts at frame 85; the interval restarts there
    assert [(i, ev.turn_id) for i, ev in f.of(InterimAudio)][5:] == [(90, 2)]


def test_no_interim_when_the_turn_is_shorter_than_the_interval() -> None:
    f = Feeder()
    f.feed([T] * 20 + [F] * 20)  # start at frame 2, stop at frame 39: 38 frames < 50
    assert len(f.of(SpeechStopped)) == 1
    assert f.of(InterimAudio) == []


def test_barge_in_after_barge_in_min_ms_of_voiced_speech() -> None:
    settings = EndpointerSettings(barge_in_min_ms=200)  # 10 frames
    f = Feeder(settings)
    f.feed([F] * 5, replying=True)
    ((i, started),) = f.feed([T] * 3, replying=True)
    assert started == SpeechStarted(turn_id=1, at_ms=100, during_reply=True)
    assert f.feed([T] * 6, replying=True) == []  # 9 voiced frames = 180 ms
    ((i, ev),) = f.feed([T], replying=True)
    assert ev == BargeIn(turn_id=1, at_ms=(i + 1) * FRAME_MS)
    assert ev.at_ms - started.at_ms == 200
    f.feed([T] * 10 + [F] * 20, replying=True)
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and not stopped.discarded
    assert len(f.of(BargeIn)) == 1


def test_barge_in_counts_voiced_frames_only() -> None:
    f = Feeder(EndpointerSettings(barge_in_min_ms=200))
    f.feed([T] * 3 + [F] * 10 + [T] * 3 + [F] * 5 + [T] * 3, replying=True)  # 9 voiced
    assert f.of(BargeIn) == []
    f.feed([T], replying=True)
    assert len(f.of(BargeIn)) == 1


def test_no_barge_in_before_barge_in_min_ms_with_defaults() -> None:
    f = Feeder()  # barge_in_min_ms=250, frame_ms=20
    f.feed([T] * 12, replying=True)  # 240 ms of voiced speech
    assert f.of(BargeIn) == []


def test_short_speech_during_reply_is_discarded() -> None:
    f = Feeder(EndpointerSettings(barge_in_min_ms=200, interim_interval_ms=100))
    f.feed([T] * 9 + [F] * 20, replying=True)
    assert f.of(BargeIn) == []
    assert f.of(InterimAudio) == []  # no interim transcription of a cough
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped)
    assert stopped.discarded and stopped.turn_id == 1
    # the next turn is a normal one with a new id
    f.feed([T] * 3 + [F] * 20, replying=False)
    ((_, second),) = f.of(SpeechStopped)[1:]
    assert isinstance(second, SpeechStopped)
    assert second.turn_id == 2 and not second.discarded


def test_interim_only_after_barge_in_during_reply() -> None:
    f = Feeder(EndpointerSettings(barge_in_min_ms=200, interim_interval_ms=100))
    f.feed([T] * 20, replying=True)
    ((barge_i, _),) = f.of(BargeIn)
    assert barge_i == 9
    assert all(i >= barge_i for i, _ in f.of(InterimAudio))
    assert f.of(InterimAudio)


def test_speech_that_started_outside_a_reply_never_barges_in() -> None:
    f = Feeder()
    f.feed([T] * 3, replying=False)
    f.feed([T] * 30 + [F] * 20, replying=True)  # a reply began meanwhile
    assert f.of(BargeIn) == []
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and not stopped.discarded


def test_max_utterance_forces_a_stop() -> None:
    f = Feeder(EndpointerSettings(max_utterance_ms=400))  # 20 frames
    f.feed([F] * 2 + [T] * 60)
    stops = f.of(SpeechStopped)
    starts = f.of(SpeechStarted)
    assert len(stops) >= 2
    (_, first_start), (_, first_stop) = starts[0], stops[0]
    assert isinstance(first_start, SpeechStarted) and isinstance(first_stop, SpeechStopped)
    assert first_stop.at_ms - first_start.at_ms == 400
    assert not first_stop.discarded
    # speech goes on: a new turn starts after start_ms more speech
    ((i, second),) = [(i, ev) for i, ev in starts if ev.turn_id == 2]
    assert i == stops[0][0] + 3
    assert isinstance(second, SpeechStarted) and second.at_ms == first_stop.at_ms


def test_force_stop() -> None:
    f = Feeder()
    assert f.ep.force_stop() == []
    f.feed([T] * 10)
    (ev,) = f.ep.force_stop()
    assert isinstance(ev, SpeechStopped)
    assert ev.turn_id == 1 and ev.at_ms == 10 * FRAME_MS and not ev.discarded
    assert frame_ids(ev.pcm) == list(range(10))
    assert not f.ep.speaking
    assert f.ep.force_stop() == []
    # and it behaves normally afterwards
    f.feed([T] * 3)
    assert [ev.turn_id for _, ev in f.of(SpeechStarted)] == [1, 2]


def test_force_stop_during_unconfirmed_reply_speech_is_discarded() -> None:
    f = Feeder()
    f.feed([T] * 5, replying=True)
    (ev,) = f.ep.force_stop()
    assert isinstance(ev, SpeechStopped) and ev.discarded


def test_turn_ids_increase_and_are_shared_with_typed_turns() -> None:
    f = Feeder(first_turn_id=7)
    f.feed([T] * 3 + [F] * 20)
    assert f.ep.new_turn_id() == 8  # e.g. a typed text turn
    f.feed([T] * 3 + [F] * 20)
    f.feed([T] * 3 + [F] * 20, replying=True)  # discarded, but still a turn id
    f.feed([T] * 3 + [F] * 20)
    assert [ev.turn_id for _, ev in f.of(SpeechStarted)] == [7, 9, 10, 11]
    assert [ev.turn_id for _, ev in f.of(SpeechStopped)] == [7, 9, 10, 11]


def test_at_ms_with_30_ms_frames() -> None:
    s = EndpointerSettings(frame_ms=30, start_ms=90, stop_ms=300)
    f = Feeder(s)
    f.feed([F] * 4 + [T] * 3 + [F] * 10)
    ((_, started),) = f.of(SpeechStarted)
    ((i, stopped),) = f.of(SpeechStopped)
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert started.at_ms == 120
    assert i == 16 and stopped.at_ms == 17 * 30


# --- early final: PauseAudio after early_final_ms of silence ---------------------------------


def test_pause_audio_after_early_final_ms_of_silence() -> None:
    f = Feeder()  # early_final_ms=200: 10 frames
    f.feed([T] * 10)
    assert f.feed([F] * 9) == []
    ((i, pause),) = f.feed([F])
    assert i == 19
    assert isinstance(pause, PauseAudio) and pause.turn_id == 1
    assert frame_ids(pause.pcm) == list(range(20))  # all audio so far
    assert f.feed([F] * 9) == []  # one pause per silence run
    ((i, stopped),) = f.feed([F])
    assert isinstance(stopped, SpeechStopped) and i == 29
    assert stopped.pause_is_final  # no speech since the pause: its decode is final
    assert stopped.pcm.startswith(pause.pcm)


def test_speech_after_the_pause_makes_it_not_final() -> None:
    f = Feeder()
    f.feed([T] * 10 + [F] * 12 + [T] * 5 + [F] * 5)  # pause at frame 19, then more speech
    assert [i for i, _ in f.of(PauseAudio)] == [19]
    (ev,) = f.ep.force_stop()
    assert isinstance(ev, SpeechStopped) and not ev.pause_is_final


def test_a_second_pause_after_more_speech_is_final_again() -> None:
    f = Feeder()
    f.feed([T] * 10 + [F] * 12 + [T] * 5 + [F] * 20)
    pauses = f.of(PauseAudio)
    assert [i for i, _ in pauses] == [19, 36]
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and stopped.pause_is_final
    ((_, second),) = pauses[1:]
    assert isinstance(second, PauseAudio)
    assert frame_ids(second.pcm)[-1] == 36


def test_force_stop_after_a_pause_is_final() -> None:
    f = Feeder()
    f.feed([T] * 10 + [F] * 15)
    (ev,) = f.ep.force_stop()
    assert isinstance(ev, SpeechStopped) and ev.pause_is_final
    f.feed([T] * 10)
    (ev,) = f.ep.force_stop()  # a new turn does not inherit the last turn's pause
    assert isinstance(ev, SpeechStopped) and not ev.pause_is_final


def test_no_pause_audio_when_disabled_or_not_before_the_stop() -> None:
    for settings in (
        EndpointerSettings(early_final_ms=0),
        EndpointerSettings(early_final_ms=400),  # == stop_ms: would come with the stop
        EndpointerSettings(early_final_ms=1000),
    ):
        f = Feeder(settings)
        f.feed([T] * 10 + [F] * 20)
        assert f.of(PauseAudio) == []
        ((_, stopped),) = f.of(SpeechStopped)
        assert isinstance(stopped, SpeechStopped) and not stopped.pause_is_final


def test_no_pause_audio_for_unconfirmed_speech_during_a_reply() -> None:
    f = Feeder(EndpointerSettings(barge_in_min_ms=200))
    f.feed([T] * 5 + [F] * 20, replying=True)
    assert f.of(PauseAudio) == []
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and stopped.discarded
    assert not stopped.pause_is_final


def test_pause_audio_after_a_barge_in() -> None:
    f = Feeder(EndpointerSettings(barge_in_min_ms=200))
    f.feed([T] * 12 + [F] * 20, replying=True)
    assert len(f.of(BargeIn)) == 1 and len(f.of(PauseAudio)) == 1
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and stopped.pause_is_final


def test_no_interim_in_a_pause_already_decoded_until_speech_resumes() -> None:
    """The pause's own decode is newer text than an interim could give, and the CPU
    is its turn checks' and final decode's (an interim there slowed both)."""
    f = Feeder(EndpointerSettings(interim_interval_ms=100))  # interim every 5 frames
    f.feed([T] * 13 + [F] * 15)  # start at frame 2; silence from frame 13; pause at frame 22
    assert [i for i, _ in f.of(PauseAudio)] == [22]
    assert [i for i, _ in f.of(InterimAudio)] == [7, 12, 17]
    f.feed([T] * 6)  # speech resumes at frame 28: the interim that was due comes with it
    assert [i for i, _ in f.of(InterimAudio)] == [7, 12, 17, 28, 33]


# --- semantic end of turn: TurnCheck out, a fake verdict back in --------------------

SEMANTIC = EndpointerSettings(turn=TurnSettings(detector="smart_turn", pause_ms=200,
                                                recheck_ms=400, max_wait_ms=2500))


def checks(f: Feeder) -> list[TurnCheck]:
    return [ev for _, ev in f.of(TurnCheck)]  # type: ignore[misc]


def test_complete_at_a_pause_ends_the_turn_early() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30 + [F] * 10)  # 200 ms pause: the check is asked for
    (check,) = checks(f)
    assert check.turn_id == 1 and frame_ids(check.pcm)[-1] == 39
    f.feed([F] * 3)  # the model answers ~60 ms later
    (stop,) = f.ep.verdict(check, True)
    assert isinstance(stop, SpeechStopped) and not stop.discarded
    assert stop.pause_is_final  # the decode started at the pause is the transcript
    assert stop.at_ms == 43 * FRAME_MS  # 260 ms of silence, not the 400 ms timer
    assert stop.silence_ms == 13 * FRAME_MS
    assert not f.ep.speaking


def test_incomplete_keeps_listening_through_a_600_ms_pause() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30 + [F] * 10)
    assert f.ep.verdict(checks(f)[0], False) == []
    f.feed([F] * 20)  # 600 ms of silence in all: the old timer would have cut here
    assert f.ep.speaking and not f.of(SpeechStopped)
    assert len(checks(f)) == 2  # re-checked at 600 ms
    assert f.ep.verdict(checks(f)[1], False) == []
    f.feed([T] * 25 + [F] * 10)  # the sentence goes on, then a pause again
    assert f.ep.speaking
    third = checks(f)[2]
    assert third.pause != checks(f)[0].pause
    (stop,) = f.ep.verdict(third, True)
    assert isinstance(stop, SpeechStopped) and stop.turn_id == 1
    assert frame_ids(stop.pcm)[-1] == f.i - 1  # one utterance, both halves


def test_a_verdict_for_an_old_pause_is_ignored() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30 + [F] * 10)
    old = checks(f)[0]
    f.feed([T] * 5)  # speech resumed before the model answered
    assert f.ep.verdict(old, True) == []
    assert f.ep.speaking
    f.feed([F] * 5)  # silent again, but this is another pause
    assert f.ep.verdict(old, True) == []
    assert f.ep.speaking


def test_a_verdict_after_the_turn_ended_is_ignored() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30 + [F] * 10)
    old = checks(f)[0]
    f.ep.force_stop()
    f.feed([F] * 5 + [T] * 10 + [F] * 2)  # the next turn
    assert f.ep.speaking and f.ep.turn_id == 2
    assert f.ep.verdict(old, True) == []
    assert f.ep.speaking


def test_max_wait_ends_the_turn_whatever_the_checks_said() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30)
    for _ in range(124):
        f.feed([F])
        for ev in f.events[-1:]:
            if isinstance(ev[1], TurnCheck) and ev[0] == f.i - 1:
                f.ep.verdict(ev[1], False)
    assert f.ep.speaking
    (stop,) = [ev for _, ev in f.feed([F])]
    assert isinstance(stop, SpeechStopped) and stop.at_ms == (30 + 125) * FRAME_MS
    # Checks at 200 ms, then every 400 ms up to the limit: bounded.
    assert [i - 29 for i, _ in f.of(TurnCheck)] == [10, 30, 50, 70, 90, 110]


def test_no_check_possible_falls_back_to_the_silence_timer() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 30 + [F] * 10)
    assert f.ep.verdict(checks(f)[0], None) == []  # pool busy: the timer decides
    f.feed([F] * 9)
    assert f.ep.speaking
    (stop,) = [ev for _, ev in f.feed([F])]
    assert isinstance(stop, SpeechStopped) and stop.at_ms == 50 * FRAME_MS  # 400 ms
    # A late "no check" after the timer would have fired ends it at once.
    g = Feeder(SEMANTIC)
    g.feed([T] * 30 + [F] * 25)
    (late,) = g.ep.verdict(checks(g)[0], None)
    assert isinstance(late, SpeechStopped)


def test_silence_detector_never_asks() -> None:
    f = Feeder(EndpointerSettings(turn=TurnSettings(detector="silence")))
    f.feed([T] * 30 + [F] * 20)
    assert not checks(f) and len(f.of(SpeechStopped)) == 1


def test_speech_during_a_reply_is_not_checked_until_it_is_a_barge_in() -> None:
    f = Feeder(SEMANTIC)
    f.feed([T] * 5 + [F] * 20, replying=True)  # a cough: dropped on the plain timer
    assert not checks(f)
    ((_, stop),) = f.of(SpeechStopped)
    assert isinstance(stop, SpeechStopped) and stop.discarded


def test_the_words_of_a_pause_are_decoded_before_its_final_decode() -> None:
    """pause_words_ms (60) under early_final_ms (100): the quick model's words first, the
    final model's decode later; a gap between words shorter than early_final_ms costs
    only the words' decode."""
    f = Feeder(EndpointerSettings(early_final_ms=100, pause_words_ms=60))  # 5 and 3 frames
    f.feed([T] * 10 + [F] * 4 + [T] * 5)  # a gap of 80 ms inside the sentence
    ((i, gap),) = f.of(PauseAudio)
    assert i == 12 and isinstance(gap, PauseAudio) and gap.words_only
    (ev,) = f.ep.force_stop()  # the gap's words were never a final decode
    assert isinstance(ev, SpeechStopped) and not ev.pause_is_final

    f = Feeder(EndpointerSettings(early_final_ms=100, pause_words_ms=60,
                                  interim_interval_ms=60))
    f.feed([T] * 10 + [F] * 20)
    words, final = (e for _, e in f.of(PauseAudio))
    assert isinstance(words, PauseAudio) and isinstance(final, PauseAudio)
    assert [i for i, _ in f.of(PauseAudio)] == [12, 14]
    assert words.words_only and not final.words_only and words.pause == final.pause
    # Interim decodes while the caller speaks, none once the pause is being decoded.
    assert f.of(InterimAudio) and all(i < 12 for i, _ in f.of(InterimAudio))
    ((_, stopped),) = f.of(SpeechStopped)
    assert isinstance(stopped, SpeechStopped) and stopped.pause_is_final


def test_no_separate_words_decode_unless_it_comes_first() -> None:
    for words_ms in (0, 100, 200):
        f = Feeder(EndpointerSettings(early_final_ms=100, pause_words_ms=words_ms))
        f.feed([T] * 10 + [F] * 20)
        ((_, pause),) = f.of(PauseAudio)
        assert isinstance(pause, PauseAudio) and not pause.words_only
