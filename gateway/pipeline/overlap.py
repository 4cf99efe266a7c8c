"""Speech over a reply, the asyncio side: decodes each ``OverlapAudio`` and hands the
verdict (``interruptions.classify``) back to the session.

Bounded: one decode in flight per utterance, a few per session. A periodic check that
finds one running is skipped (a newer one comes); the final check of an utterance waits
for the one running (whose verdict may come first) and then always runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.providers.base import ProviderError, confidence_of

from .interruptions import InterruptionSettings, Overlap, classify
from .turns import OverlapAudio

Decided = Callable[[OverlapAudio, str, Overlap], None]
Transcribe = Callable[[bytes], Any]  # an awaitable of the transcript
MAX_IN_FLIGHT = 3  # utterances decoded at once per session (each needs a speech start)


class OverlapChecks:
    def __init__(self, transcribe: Transcribe, on_decided: Decided, log: Any) -> None:
        self.transcribe = transcribe
        self.on_decided = on_decided
        self.log = log
        self._tasks: dict[int, tuple[OverlapAudio, asyncio.Task[None]]] = {}  # by turn
        self._pending: dict[int, tuple[OverlapAudio, InterruptionSettings]] = {}

    def submit(self, job: OverlapAudio, settings: InterruptionSettings) -> None:
        self._tasks = {t: jt for t, jt in self._tasks.items() if not jt[1].done()}
        running = self._tasks.get(job.turn_id)
        if running is not None:
            if job.final:  # after the running one: its verdict may come sooner
                self._pending[job.turn_id] = (job, settings)
            return  # one decode per utterance at a time
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.log.warning("overlap_checks_busy", turn_id=job.turn_id)
            return
        self._start(job, settings)

    def _start(self, job: OverlapAudio, settings: InterruptionSettings) -> None:
        self._tasks[job.turn_id] = (job, asyncio.create_task(self._run(job, settings)))

    async def _run(self, job: OverlapAudio, settings: InterruptionSettings) -> None:
        started = time.perf_counter()
        try:
            text = await self.transcribe(job.pcm)
        except ProviderError as exc:
            # No words known: like noise, the reply goes on; the final check tries again.
            self.log.warning("overlap_decode_failed", turn_id=job.turn_id, error=str(exc))
            text = ""
        kind = classify(text, settings, confidence_of(text), partial=not job.final,
                        speech_ms=job.speech_ms, voiced_ms=job.voiced_ms)
        self.log.info("overlap", turn_id=job.turn_id, final=job.final, kind=kind.value,
                      chars=len(text), confidence=confidence_of(text),
                      decode_ms=round((time.perf_counter() - started) * 1000))
        self.on_decided(job, str(text), kind)
        pending = self._pending.pop(job.turn_id, None)
        if pending is not None:
            self._start(*pending)

    def close(self) -> None:
        for _job, task in self._tasks.values():
            task.cancel()
