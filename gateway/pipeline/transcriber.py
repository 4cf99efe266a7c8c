"""The STT stage of a voice session: transcription jobs in, transcripts out.

Jobs wait in one bounded queue (policy: ``session_items.push_stt`` drops interim work
before a final, and says which final it dropped). A pause's job starts a speculative
decode at once (turn checks read its words; if the turn ends at that pause, it is the
final transcript; with two models, the quick one's words may start sooner, alone, from
a ``words_only`` job); one interim decode runs at a time, beside finals, never ahead of
them; finals are decoded in order. Knows nothing of replies: a final goes to
``on_final``, a failed one to ``on_error``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.providers.base import ProviderError

from . import events as ev
from .session_items import SttJob, push_stt
from .turn_checks import TurnChecks

# (pcm 16 kHz, turn id, partial-text callback or None, quick, last word, ahead) ->
# transcript. ``quick``: a decode turn-taking waits on (words at a pause, interim text),
# on the quick model; ``last word``: with the last word's probability, for the turn
# checks; ``ahead``: the final model's decode of a pause beside the quick one (made
# ahead of need: nicer threads).
Decode = Callable[[bytes, int, Callable[[str], None] | None, bool, bool, bool],
                  Awaitable[str]]


@dataclass(slots=True)
class _Early:
    """A pause's decodes: the final model's (None until it starts) and the words'."""

    turn_id: int
    pause: int
    full: asyncio.Task[str] | None
    words: asyncio.Task[str]

    def cancel(self, keep: asyncio.Task[str] | None = None) -> None:
        for task in (self.full, self.words):
            if task is not None and task is not keep:
                task.cancel()


class Transcriber:
    def __init__(self, size: int, decode: Decode, emit: Callable[[ev.Event], None],
                 on_final: Callable[[int, str, float], None],
                 on_error: Callable[[str, ProviderError], None],
                 turn_checks: TurnChecks, log: Any,
                 on_pause_words: Callable[[int, int, str], None] | None = None,
                 two_models: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.q: asyncio.Queue[SttJob] = asyncio.Queue(size)
        # Whether quick decodes run on a model of their own (asked once, at the first
        # pause): then a pause is decoded twice, quick for its words, fully for the final.
        self._two_models = two_models
        self._two: bool | None = None if two_models is not None else False
        self._on_pause_words = on_pause_words  # (turn id, pause, words) of a pause's decode
        self._decode_fn = decode
        self._emit = emit
        self._on_final = on_final
        self._on_error = on_error
        self._turn_checks = turn_checks
        self._log = log
        self._interim_task: asyncio.Task[None] | None = None
        self._finalized_turn = 0

    def put(self, job: SttJob) -> None:
        victim = push_stt(self.q, job)
        if victim is not None:
            self._log.warning("stt_behind_turn_dropped", turn_id=victim.turn_id)
            self._emit(ev.SttBehind(victim.turn_id))

    def put_interim(self, job: SttJob) -> None:
        """Best effort: an interim job that finds the queue full is skipped."""
        if not self.q.full():
            self.q.put_nowait(job)

    @property
    def interim(self) -> asyncio.Task[None] | None:
        return self._interim_task

    def finalized(self, turn_id: int) -> None:
        """The turn's final transcript is out: no interim text of it may follow."""
        if self._interim_task is not None:
            self._interim_task.cancel()
        self._finalized_turn = turn_id

    async def run(self) -> None:
        early: _Early | None = None
        while True:
            job = await self.q.get()
            if job.early:
                early = await self._pause(job, early)
                continue
            if not job.final:
                if self._interim_task is None or self._interim_task.done():
                    self._interim_task = asyncio.create_task(self._interim(job))
                continue
            reuse = None
            if early is not None:
                if early.turn_id == job.turn_id and job.use_early:
                    reuse = early.full
                early.cancel(keep=reuse)  # the words were for the turn checks, now over
            early = None
            await self._final(job, reuse)

    async def _pause(self, job: SttJob, early: _Early | None) -> _Early:
        """A pause: decode now; if the turn ends here, the final decode is its transcript.
        Both decodes carry the last word's probability (the turn checks judge them). A
        ``words_only`` job (two models) starts the quick decode alone; the final one
        starts with the pause's next job, unless speech resumes first."""
        two = await self._quick_too()
        if early is not None and (early.turn_id, early.pause) == (job.turn_id, job.pause):
            if early.full is None and not job.words_only:
                early.full = asyncio.create_task(self._decode(job, pause=True))
                self._turn_checks.decoding(job.turn_id, job.pause, early.words, early.full)
            return early
        if early is not None:
            early.cancel()
        full = None if job.words_only and two else \
            asyncio.create_task(self._decode(job, pause=True))
        words = asyncio.create_task(self._decode(job, quick=True, pause=True)) \
            if two or full is None else full
        self._turn_checks.decoding(job.turn_id, job.pause, words, full)
        if self._on_pause_words is not None:
            words.add_done_callback(functools.partial(self._pause_done, job))
        return _Early(job.turn_id, job.pause, full, words)

    async def _quick_too(self) -> bool:
        if self._two is None:
            try:
                self._two = await self._two_models()  # type: ignore[misc]
            except Exception:  # one model then: never a lost pause
                self._two = False
        return self._two

    def _pause_done(self, job: SttJob, task: asyncio.Task[str]) -> None:
        if self._on_pause_words is None or task.cancelled() or task.exception() is not None:
            return
        self._on_pause_words(job.turn_id, job.pause, task.result())

    async def _decode(self, job: SttJob, *, quick: bool = False, pause: bool = False) -> str:
        turn_id = job.turn_id
        ahead = pause and not quick and bool(self._two)
        return await self._decode_fn(job.pcm, turn_id,
                                     lambda text: self._partial(turn_id, text), quick, pause,
                                     ahead)

    def _partial(self, turn_id: int, text: str) -> None:
        if text.strip() and turn_id > self._finalized_turn:
            self._emit(ev.Transcription(turn_id, text.strip(), final=False))

    async def _final(self, job: SttJob, early: asyncio.Task[str] | None) -> None:
        try:
            text = await (early if early is not None else self._decode(job))
        except ProviderError as exc:
            if early is None:
                self._on_error("stt", exc)
                return
            await self._final(job, None)  # the early decode failed: decode afresh
            return
        self._on_final(job.turn_id, text, job.stopped_at)

    async def _interim(self, job: SttJob) -> None:
        try:
            text = await self._decode_fn(job.pcm, job.turn_id, None, True, False, False)
        except ProviderError:
            return  # an interim result is best effort; the final one reports errors
        # Shown until the final transcript of its turn is out (even after speech_stopped).
        if text and job.turn_id > self._finalized_turn:
            self._emit(ev.Transcription(job.turn_id, text, final=False))
