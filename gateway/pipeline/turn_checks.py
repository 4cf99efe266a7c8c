"""Semantic end of turn, the asyncio side: runs the Endpointer's ``TurnCheck`` requests
on the process's turn pool and hands each verdict back to the session.

The Endpointer stays pure (clocked by the audio); this adapter only carries requests
out and verdicts in. A check is best effort: one that cannot run in time (the pool is
busy, the model failed) comes back as ``None`` and that pause ends on the silence timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.providers.base import Transcript, confidence_of, last_word_of

from .interruptions import words as split_words
from .runtime import Runtime
from .text import ends_mid_sentence
from .turns import TurnCheck, TurnSettings

Verdict = Callable[[TurnCheck, bool | None], None]
_WORDS_WAIT_S = 2.0


def turn_settings(cfg: Config, runtime: Runtime, override: TurnSettings | None,
                  stop_ms_override: int | None) -> TurnSettings:
    """The session's end-of-turn settings: the config's, or an assistant's own; silence
    when no model is loaded or the client set its own ``stop_ms`` (it asked for a timer)."""
    settings = override or TurnSettings.from_config(cfg.turn)
    if runtime.turn_detector is None or stop_ms_override is not None:
        return TurnSettings(detector="silence")
    return settings


def with_doubt(words: str, other: str) -> str:
    """``words`` with the lower of the two last-word probabilities when ``other`` (another
    recogniser's words of the same audio) has as many words, so their last words stand
    in the same place (the same word, or two guesses at it: "is that?" and "is there?");
    else ``words``."""
    mine, theirs = last_word_of(words), last_word_of(other)
    if mine is None or theirs is None or theirs >= mine \
            or len(split_words(words)) != len(split_words(other)):
        return words
    return Transcript(words, confidence_of(words), theirs)


def combine(audio: float | None, words: str, text: float | None, silence_ms: float,
            s: TurnSettings) -> bool | None:
    """The verdict on a pause from the sound (Smart Turn's probability) and the words
    decoded at it (``text``: the language model's probability that the sentence ends
    there; None when there is no model, no words or no time). None: no verdict (the
    sound could not be judged), the silence timer decides.

    Early in a pause (under ``hold_ms``) a "complete" is held when the words cannot end a
    sentence ("what time do you", "... is the") or their last word was the recogniser's
    guess (``last_word_min``: Whisper ends "how much is a" as "how much is that?"):
    Smart Turn scores a mid-sentence pause complete once it lasts ~600 ms. Later the
    sound alone decides, so a question that does end oddly waits ``hold_ms``, not
    ``max_wait_ms``. An "incomplete" is overruled by words that clearly end a sentence
    (``words_end``, and not with a guessed word) from the first recheck on, and by words
    that surely do (``words_sure``) at the first check already: Smart Turn calls some
    finished questions incomplete at every check on some voices ("Can we have a picnic
    next to the pool?" p 0.06), and they waited the recheck. From ``hold_ms`` on, words
    that can end a sentence at all (as a "complete" needs early in a pause) end an
    "incomplete" pause too: a question Smart Turn never calls complete (p 0.01 at every
    check on some voices) waits ``hold_ms``, not ``max_wait_ms``, while a sentence
    broken off ("I'd like to book a") still waits.
    """
    if audio is None:
        return None
    last = last_word_of(words)
    guessed = last is not None and last < s.last_word_min  # the words' end is unsure
    held = ends_mid_sentence(words) or (text is not None and text < s.words_hold)
    if audio >= s.threshold:
        if silence_ms >= s.hold_ms:
            return True
        return not (held or guessed)
    if silence_ms >= s.hold_ms and text is not None and not held:
        return True
    if text is None or guessed or held:
        return False
    return text >= (s.words_end if silence_ms > s.pause_ms else s.words_sure)


class TurnChecks:
    """One per session; at most a few checks in flight (one per pause, pauses are short).

    The words are the decode the STT stage started at this pause (its final transcript if
    the turn ends here, so waiting for it costs the reply little), scored by the runtime's
    text model (``combine`` says how the two verdicts make one).
    """

    def __init__(self, runtime: Runtime, on_verdict: Verdict, log: Any) -> None:
        self.runtime = runtime
        self.on_verdict = on_verdict
        self.log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        # (turn id, pause, decode) of the STT stage's latest decode at a pause: the quick
        # model's, and (two models) the final model's, whose words rechecks use once done.
        self.pause_decode: tuple[int, int, asyncio.Task[str]] | None = None
        self.pause_final: tuple[int, int, asyncio.Task[str]] | None = None
        self.english = True  # the words rules (and the language model) are English
        self._score: tuple[asyncio.Task[str], asyncio.Task[tuple[str, float | None]]] | None = None
        self.semantic = True  # the session's pauses are judged (not the silence timer)

    def decoding(self, turn_id: int, pause: int, words: asyncio.Task[str],
                 final: asyncio.Task[str] | None) -> None:
        """The STT stage's decodes of a pause (before its first check): the quick
        model's words (from ``stt.pause_words_ms``) and the final model's (from
        ``stt.early_final_ms``: None until it starts, told by a second call; the same
        task with one model). The words are scored as soon as they are decoded, so the
        first check waits only for the sound's model. (Judging the sound at this point too was
        measured and not kept: with 100 ms less trailing silence Smart Turn scores
        finished questions lower, and more of them waited for a recheck:
        scripts/bench_turns.py.)"""
        self.pause_decode = (turn_id, pause, words)
        self.pause_final = None if final is None else (turn_id, pause, final)
        if self.english and self.semantic:
            self._scored((turn_id, pause))

    def submit(self, check: TurnCheck, settings: TurnSettings) -> None:
        self._track(asyncio.create_task(self._run(check, settings)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, check: TurnCheck, settings: TurnSettings) -> None:
        started = time.perf_counter()
        # The words are scored once per pause (kept for its rechecks), starting now: the
        # scoring waits for the pause's decode, then runs beside the sound's check.
        key = (check.turn_id, check.pause)
        scored = self._scored(key) if self.english else None
        p = await self.runtime.turn_probability(check.pcm)
        if scored is None and self.english:  # the decode was not taken yet at the pause
            scored = self._scored(key)
        words, text = "", None
        if p is not None and scored is not None and self._words_matter(p, check, settings):
            done, _ = await asyncio.wait({scored}, timeout=_WORDS_WAIT_S)
            if done:
                words, text = scored.result()  # never raises: failures are ("", None)
        complete = combine(p, words, text, check.silence_ms, settings)
        self.log.debug("turn_check", turn_id=check.turn_id, pause=check.pause,
                       probability=None if p is None else round(p, 3), complete=complete,
                       text_probability=None if text is None else round(text, 4),
                       last_word=last_word_of(words),
                       ms=round((time.perf_counter() - started) * 1000, 1))
        self.on_verdict(check, complete)

    @staticmethod
    def _words_matter(p: float, check: TurnCheck, s: TurnSettings) -> bool:
        """Whether ``combine`` can decide otherwise with the words than without."""
        if p >= s.threshold:
            return check.silence_ms < s.hold_ms
        return check.silence_ms > s.pause_ms or s.words_sure < 1.0

    def _scored(self, key: tuple[int, int]) -> asyncio.Task[tuple[str, float | None]] | None:
        """The words decoded at this pause and their score, once per decode."""
        decode = self._words_of(key)
        if decode is None:
            return None  # no decode at this pause (yet): the sound alone decides
        if self._score is not None and self._score[0] is decode:
            return self._score[1]
        task = asyncio.create_task(self._score_words(decode))
        self._track(task)
        self._score = (decode, task)
        return task

    def _words_of(self, key: tuple[int, int]) -> asyncio.Task[str] | None:
        """The pause's best decode so far: the final model's once it is done (a recheck
        then judges what the reply will answer: "does my two year old need a ticket?",
        not the quick model's "that's my two year old needed ticket"), else the quick
        model's."""
        final = self.pause_final
        if final is not None and final[:2] == key and final[2].done() \
                and not final[2].cancelled() and final[2].exception() is None:
            return final[2]
        found = self.pause_decode
        return found[2] if found is not None and found[:2] == key else None

    def _both_heard(self, decode: asyncio.Task[str], words: str) -> str:
        """The final model's words at a pause, with the quick model's doubt about their
        last word kept: "until what time is the" heard by tiny.en as "... is that?" at
        p 0.26 and by base as "... is there?" at 0.42 (a recheck then cut the caller off
        mid-sentence). A word one recogniser guessed and the other heard otherwise or
        barely was not heard."""
        final, quick = self.pause_final, self.pause_decode
        if final is None or quick is None or final[2] is not decode or quick[2] is decode \
                or final[:2] != quick[:2] or not quick[2].done() or quick[2].cancelled() \
                or quick[2].exception() is not None:
            return words
        return with_doubt(words, quick[2].result())

    async def _score_words(self, decode: asyncio.Task[str]) -> tuple[str, float | None]:
        # The STT stage owns the decode: waited for, never cancelled here.
        started = time.perf_counter()
        done, _ = await asyncio.wait({decode}, timeout=_WORDS_WAIT_S)
        if not done or decode.cancelled() or decode.exception() is not None:
            return "", None  # late, dropped or failed: the sound's verdict stands
        words = self._both_heard(decode, decode.result())
        decoded = time.perf_counter()
        p = await self.runtime.text_end_probability(words)
        self.log.debug("turn_words", decode_wait_ms=round((decoded - started) * 1000, 1),
                       score_ms=round((time.perf_counter() - decoded) * 1000, 1))
        return words, p

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
