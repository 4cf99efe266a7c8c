"""Endpointing: VAD decisions per frame in, turn events out. Pure; the clock is the audio.

The ``Endpointer`` is fed one fixed-size frame at a time with the VAD's verdict. It
decides when a user turn starts and stops (start/stop hangovers), collects the
utterance audio (with a pre-roll so the first syllable is kept), asks for interim
transcriptions at an interval, and decides when speech during a reply is long enough
to be a barge-in rather than a cough -- or, with ``barge_in_words``, long enough to be
worth a decode (``OverlapAudio``) whose words decide (``gateway.pipeline.interruptions``).

End of turn is either a silence timer (``stop_ms``) or semantic: with a ``TurnSettings``
whose detector is on, a pause of ``pause_ms`` emits ``TurnCheck`` (again every
``recheck_ms`` while the silence lasts); the session runs the model and hands back
``verdict()``. Complete ends the turn at once; incomplete keeps listening, up to
``max_wait_ms`` of silence. A verdict applies only to the pause it was asked for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import TurnConfig


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    turn_id: int
    at_ms: float  # audio time when speech began (start of the start run)
    during_reply: bool  # true: this may become a barge-in, not yet a turn


@dataclass(frozen=True, slots=True)
class InterimAudio:
    turn_id: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class PauseAudio:
    """The user paused for ``early_final_ms``: decode now, in case this is the end.

    If the turn does end with no further speech, the final transcript is this decode's
    result, which is ready up to ``stop_ms - early_final_ms`` sooner. ``words_only``:
    sent earlier, at ``pause_words_ms``, for the words the turn checks judge (the quick
    model's decode); the final decode's comes at ``early_final_ms``.
    """

    turn_id: int
    pcm: bytes
    pause: int = 0  # the pause it was taken at (as in TurnCheck)
    words_only: bool = False


@dataclass(frozen=True, slots=True)
class TurnCheck:
    """The user paused: is the turn complete? Answer with ``Endpointer.verdict(pause)``."""

    turn_id: int
    pause: int  # which pause of the session this is (a verdict for another is ignored)
    pcm: bytes  # the utterance so far, pause included
    silence_ms: float = 0.0  # how long the pause is so far


@dataclass(frozen=True, slots=True)
class OverlapAudio:
    """Speech over a reply long enough to matter (``barge_in_min_ms``), when barge-in is
    decided from words: decode it and answer with ``Endpointer.confirm`` if it was a
    real interruption. ``final``: the utterance is over (it ends as discarded unless this
    decode makes it a turn)."""

    turn_id: int
    pcm: bytes
    final: bool
    started_ms: float  # audio time the speech began
    speech_ms: float = 0.0  # how long it has gone on
    voiced_ms: float = 0.0  # how much of it was voiced (the VAD's speech frames)


@dataclass(frozen=True, slots=True)
class BargeIn:
    turn_id: int
    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    turn_id: int
    at_ms: float
    pcm: bytes
    # Speech during a reply that never reached the barge-in minimum: dropped.
    discarded: bool = False
    # No speech since the last PauseAudio: its decode is this turn's final transcript.
    pause_is_final: bool = False
    silence_ms: float = 0.0  # the pause at the end that ended it


TurnEvent = (SpeechStarted | InterimAudio | PauseAudio | TurnCheck | OverlapAudio | BargeIn
             | SpeechStopped)


DETECTORS = ("smart_turn", "silence")


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """How a turn ends. ``detector``: "smart_turn" (a model judges each pause) or
    "silence" (``stop_ms`` of silence). Small and frozen: an assistant may override it."""

    detector: str = "smart_turn"
    pause_ms: int = 200  # silence before the first check
    recheck_ms: int = 400  # later checks while the silence lasts
    max_wait_ms: int = 2500  # silence that ends the turn whatever the checks said
    threshold: float = 0.5  # probability of "complete" that ends the turn
    # The words at the pause (see turn_checks.combine): a sentence-end probability
    # under words_hold holds a "complete" while the pause is under hold_ms; one from
    # words_end ends an "incomplete" pause at a recheck, one from words_sure at once.
    words_hold: float = 0.01
    words_end: float = 0.2
    words_sure: float = 0.4
    hold_ms: int = 900
    # A last word the recogniser gave less than this probability holds a "complete" too.
    last_word_min: float = 0.35

    @classmethod
    def from_config(cls, t: TurnConfig) -> TurnSettings:
        """The config's ``[turn]`` (what an assistant's ``end_of_turn`` overrides)."""
        return cls(detector=t.detector, pause_ms=t.pause_ms, recheck_ms=t.recheck_ms,
                   max_wait_ms=t.max_wait_ms, threshold=t.threshold,
                   words_hold=t.words_hold, words_end=t.words_end,
                   words_sure=t.words_sure, hold_ms=t.hold_ms,
                   last_word_min=t.last_word_min)

    @property
    def semantic(self) -> bool:
        return self.detector != "silence"


@dataclass(frozen=True, slots=True)
class EndpointerSettings:
    frame_ms: int = 20
    start_ms: int = 60
    stop_ms: int = 400
    barge_in_min_ms: int = 250
    preroll_ms: int = 200
    interim_interval_ms: int = 1000
    max_utterance_ms: int = 30000
    early_final_ms: int = 200  # 0: no speculative decode at pauses
    # The words of a pause decoded sooner than its final decode (PauseAudio.words_only);
    # 0 (or not under early_final_ms): with the final decode.
    pause_words_ms: int = 0
    turn: TurnSettings = TurnSettings(detector="silence")
    # True: speech over a reply is a barge-in only once its words say so (OverlapAudio,
    # re-sent every overlap_check_ms while it goes on); False: at barge_in_min_ms.
    barge_in_words: bool = False
    overlap_check_ms: int = 500


def _frames(ms: int, frame_ms: int) -> int:
    """Whole frames covering ``ms`` (rounded up: 250 ms of 20 ms frames is 13, not 12)."""
    return max(1, -(-ms // frame_ms))


class Endpointer:
    """State machine: SILENT <-> SPEAKING, one utterance buffer, turn ids from a counter."""

    def __init__(self, settings: EndpointerSettings, first_turn_id: int = 1) -> None:
        s = settings
        self.settings = s
        self._start_frames = _frames(s.start_ms, s.frame_ms)
        self._stop_frames = _frames(s.stop_ms, s.frame_ms)  # the silence timer
        semantic = s.turn.semantic
        self._check_frames = _frames(s.turn.pause_ms, s.frame_ms) if semantic else 0
        self._recheck_frames = _frames(s.turn.recheck_ms, s.frame_ms)
        # Silence that ends the turn: the timer, or with a detector the longest wait.
        self._end_frames = _frames(s.turn.max_wait_ms, s.frame_ms) if semantic else \
            self._stop_frames
        self._limit = self._end_frames  # for this pause (a failed check: the timer)
        self._pause = 0
        self._barge_frames = _frames(s.barge_in_min_ms, s.frame_ms)
        self._overlap_frames = _frames(s.overlap_check_ms, s.frame_ms)
        self._overlap_at = 0  # frame count of the last OverlapAudio (0: none yet)
        self._started_ms = 0.0
        self._interim_frames = _frames(s.interim_interval_ms, s.frame_ms)
        self._max_frames = _frames(s.max_utterance_ms, s.frame_ms)
        self._pause_frames = _frames(s.early_final_ms, s.frame_ms) if s.early_final_ms else 0
        if self._pause_frames >= self._end_frames:
            self._pause_frames = 0  # the pause would come after the stop: pointless
        words = _frames(s.pause_words_ms, s.frame_ms) if s.pause_words_ms else 0
        self._words_frames = words if 0 < words < self._pause_frames else 0
        self._pause_sent = False  # this pause is being decoded (no interim decode)
        self._final_sent = False  # ...by its final decode (the turn's, if it ends here)
        # Holds the start run itself plus preroll_ms before it.
        self._preroll: deque[bytes] = deque(
            maxlen=self._start_frames + s.preroll_ms // s.frame_ms
        )
        self._next_turn = first_turn_id
        self.now_ms = 0.0
        self.speaking = False
        self.turn_id = 0
        self._during_reply = False
        self._confirmed = False
        self._speech_run = 0
        self._silence_run = 0
        self._voiced = 0
        self._frames = 0
        self._since_interim = 0
        self._utterance = bytearray()

    def new_turn_id(self) -> int:
        """Allocate a turn id (also used for typed turns that bypass the VAD)."""
        tid = self._next_turn
        self._next_turn += 1
        return tid

    def push(self, frame: bytes, is_speech: bool, replying: bool) -> list[TurnEvent]:
        """Feed one frame; ``replying`` says whether the assistant is answering now."""
        self.now_ms += self.settings.frame_ms
        if self.speaking:
            return self._push_speaking(frame, is_speech)
        return self._push_silent(frame, is_speech, replying)

    def verdict(self, check: TurnCheck, complete: bool | None) -> list[TurnEvent]:
        """The answer to ``check``: complete ends the turn now, incomplete keeps listening,
        None (no check could run) falls back to the silence timer. A verdict for an older
        pause (speech resumed since, or another turn) is ignored."""
        if not self.speaking or (check.turn_id, check.pause) != (self.turn_id, self._pause):
            return []
        if complete is None:
            self._limit = min(self._limit, self._stop_frames)
            if self._silence_run >= self._limit:
                return [self._stop()]
            return []
        return [self._stop()] if complete else []

    def confirm(self, turn_id: int) -> bool:
        """The words of overlapping speech made it a real interruption: from now on the
        utterance is a user turn like any other. False if it is already over."""
        if not self.speaking or turn_id != self.turn_id:
            return False
        self._confirmed = True
        return True

    def force_stop(self) -> list[TurnEvent]:
        """Client-side endpointing (``end_of_speech``): close the open utterance now."""
        if not self.speaking:
            return []
        return [self._stop()]

    def _push_silent(self, frame: bytes, is_speech: bool, replying: bool) -> list[TurnEvent]:
        self._preroll.append(frame)
        self._speech_run = self._speech_run + 1 if is_speech else 0
        if self._speech_run < self._start_frames:
            return []
        self.speaking = True
        self.turn_id = self.new_turn_id()
        self._during_reply = replying
        self._confirmed = not replying
        self._overlap_at = 0
        self._utterance = bytearray(b"".join(self._preroll))
        self._preroll.clear()
        self._voiced = self._frames = self._speech_run
        self._silence_run = 0
        self._since_interim = 0
        at = self.now_ms - self._speech_run * self.settings.frame_ms
        self._started_ms = at
        return [SpeechStarted(self.turn_id, at, replying)]

    def _push_speaking(self, frame: bytes, is_speech: bool) -> list[TurnEvent]:
        self._utterance += frame
        self._frames += 1
        self._since_interim += 1
        events: list[TurnEvent] = []
        if is_speech:
            self._voiced += 1
            if self._silence_run:
                self._pause += 1  # speech resumed: verdicts on the last pause are stale
            self._silence_run = 0
            self._limit = self._end_frames
            self._pause_sent = self._final_sent = False
        else:
            self._silence_run += 1
        if not self._confirmed and is_speech and self._voiced >= self._barge_frames:
            events.extend(self._barge_in())
        # Unconfirmed speech during a reply (a cough?) ends on the plain timer.
        limit = self._limit if self._confirmed else self._stop_frames
        if self._silence_run >= limit or self._frames >= self._max_frames:
            if not self._confirmed and self._overlap_at:
                events.append(OverlapAudio(self.turn_id, bytes(self._utterance), True,
                                           self._started_ms,
                                           self._frames * self.settings.frame_ms,
                                           self._voiced * self.settings.frame_ms))
            events.append(self._stop())
            return events
        if not self._confirmed:
            return events
        if self._words_frames and self._silence_run == self._words_frames:
            self._pause_sent = True
            events.append(PauseAudio(self.turn_id, bytes(self._utterance), self._pause,
                                     words_only=True))
        if self._pause_frames and self._silence_run == self._pause_frames:
            self._pause_sent = self._final_sent = True
            events.append(PauseAudio(self.turn_id, bytes(self._utterance), self._pause))
        if self._check_due():
            events.append(TurnCheck(self.turn_id, self._pause, bytes(self._utterance),
                                    self._silence_run * self.settings.frame_ms))
        elif not self._pause_sent and self._since_interim >= self._interim_frames:
            # (Not in a pause already decoded: that decode is the newer text, and the
            # CPU is the pause's checks' and final decode's.)
            self._since_interim = 0
            events.append(InterimAudio(self.turn_id, bytes(self._utterance)))
        return events

    def _barge_in(self) -> list[TurnEvent]:
        if not self.settings.barge_in_words:
            self._confirmed = True
            return [BargeIn(self.turn_id, self.now_ms)]
        if self._overlap_at and self._frames - self._overlap_at < self._overlap_frames:
            return []
        self._overlap_at = self._frames
        return [OverlapAudio(self.turn_id, bytes(self._utterance), False, self._started_ms,
                             self._frames * self.settings.frame_ms,
                             self._voiced * self.settings.frame_ms)]

    def _check_due(self) -> bool:
        run, first = self._silence_run, self._check_frames
        return bool(first) and run >= first and (run - first) % self._recheck_frames == 0

    def _stop(self) -> SpeechStopped:
        self.speaking = False
        self._pause += 1
        silence_ms = self._silence_run * self.settings.frame_ms
        self._silence_run = 0
        self._limit = self._end_frames
        self._speech_run = 0
        pcm_data = bytes(self._utterance)
        self._utterance = bytearray()
        pause_is_final = self._final_sent
        self._pause_sent = self._final_sent = False
        return SpeechStopped(self.turn_id, self.now_ms, pcm_data, discarded=not self._confirmed,
                             pause_is_final=pause_is_final, silence_ms=silence_ms)
