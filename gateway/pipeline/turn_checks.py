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

from .runtime import Runtime
from .text import ends_mid_sentence
from .turns import TurnCheck, TurnSettings

Verdict = Callable[[TurnCheck, bool | None], None]
_WORDS_WAIT_S = 2.0


def turn_settings(cfg: Config, runtime: Runtime, override: TurnSettings | None,
                  stop_ms_override: int | None) -> TurnSettings:
    """The session's end-of-turn settings: the config's, or an assistant's own; silence
    when no model is loaded or the client set its own ``stop_ms`` (it asked for a timer)."""
    t = cfg.turn
    settings = override or TurnSettings(detector=t.detector, pause_ms=t.pause_ms,
                                        recheck_ms=t.recheck_ms, max_wait_ms=t.max_wait_ms,
                                        threshold=t.threshold)
    if runtime.turn_detector is None or stop_ms_override is not None:
        return TurnSettings(detector="silence")
    return settings


class TurnChecks:
    """One per session; at most a few checks in flight (one per pause, pauses are short).

    Early in a pause a "complete" from the model is also held against the words: the
    decode the STT stage started at this pause (its final transcript if the turn ends
    here, so waiting for it costs the reply nothing) must not end on "the", "a", "if"...
    Later checks of the same pause trust the model alone, so a question that does end
    on such a word ("what are you working on") waits one more check, not the max wait.
    """

    def __init__(self, runtime: Runtime, on_verdict: Verdict, log: Any) -> None:
        self.runtime = runtime
        self.on_verdict = on_verdict
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()
        # (turn id, pause, decode) of the STT stage's latest decode at a pause.
        self.pause_decode: tuple[int, int, asyncio.Task[str]] | None = None
        self.english = True  # the words rule is English

    def submit(self, check: TurnCheck, settings: TurnSettings) -> None:
        task = asyncio.create_task(self._run(check, settings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, check: TurnCheck, settings: TurnSettings) -> None:
        started = time.perf_counter()
        p = await self.runtime.turn_probability(check.pcm)
        complete = None if p is None else p >= settings.threshold
        words = ""
        if complete and self.english and check.silence_ms < settings.pause_ms + \
                settings.recheck_ms:
            words = await self._pause_words(check)
            complete = not ends_mid_sentence(words)
        self.log.debug("turn_check", turn_id=check.turn_id, pause=check.pause,
                       probability=None if p is None else round(p, 3), complete=complete,
                       words_checked=bool(words),
                       ms=round((time.perf_counter() - started) * 1000, 1))
        self.on_verdict(check, complete)

    async def _pause_words(self, check: TurnCheck) -> str:
        """The transcript decoded at this very pause; "" when there is none (yet)."""
        found = self.pause_decode
        if found is None or found[:2] != (check.turn_id, check.pause):
            return ""
        decode = found[2]  # the STT stage owns it: waited for, never cancelled here
        done, _ = await asyncio.wait({decode}, timeout=_WORDS_WAIT_S)
        if not done or decode.cancelled() or decode.exception() is not None:
            return ""  # late, dropped or failed: the model's verdict stands
        return decode.result()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
