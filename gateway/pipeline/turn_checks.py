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
from .turns import TurnCheck, TurnSettings

Verdict = Callable[[TurnCheck, bool | None], None]


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
    """One per session; at most a few checks in flight (one per pause, pauses are short)."""

    def __init__(self, runtime: Runtime, on_verdict: Verdict, log: Any) -> None:
        self.runtime = runtime
        self.on_verdict = on_verdict
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, check: TurnCheck, threshold: float) -> None:
        task = asyncio.create_task(self._run(check, threshold))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, check: TurnCheck, threshold: float) -> None:
        started = time.perf_counter()
        p = await self.runtime.turn_probability(check.pcm)
        complete = None if p is None else p >= threshold
        self.log.debug("turn_check", turn_id=check.turn_id, pause=check.pause,
                       probability=None if p is None else round(p, 3), complete=complete,
                       ms=round((time.perf_counter() - started) * 1000, 1))
        self.on_verdict(check, complete)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
