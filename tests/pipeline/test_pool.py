"""The inference pool's background threads: work done ahead of need (the final model's
decode at a pause) runs at a lower CPU priority, the rest at the process's own."""

from __future__ import annotations

import os
import threading

from gateway.config import Config
from gateway.pipeline.pool import InferencePool
from gateway.pipeline.runtime import Runtime
from gateway.providers import registry


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_a_nicer_pool_runs_its_work_at_a_lower_priority() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    plain = InferencePool("plain", 1, 4, 1.0)
    ahead = InferencePool("ahead", 1, 4, 1.0, nice=5)
    try:
        assert await plain.run(_nice, timeout=5) == base
        assert await ahead.run(_nice, timeout=5) == min(19, base + 5)
        assert _nice() == base  # the event loop's own thread is untouched
    finally:
        plain.shutdown()
        ahead.shutdown()


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def transcribe(self, pcm: bytes, *, language: str | None = None) -> str:
        return f"{self.name} nice={_nice()}"


async def test_only_the_final_models_decode_ahead_runs_nicer() -> None:
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "null"},
                           tts={"provider": "null"}, turn={"detector": "silence"})
    runtime = Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg),
                                           "stt": Named("final"), "stt_quick": Named("quick")})
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        if runtime.quick_stt is None:
            raise AssertionError("no quick model loaded")
        heard = [await runtime.transcribe(b"\0\0", None, quick=q, ahead=a)
                 for q, a in ((True, False), (False, True), (False, False))]
        assert heard == [f"quick nice={base}", f"final nice={min(19, base + 5)}",
                         f"final nice={base}"]
    finally:
        runtime.close()
