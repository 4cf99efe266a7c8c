"""The inference pool's background threads: work done ahead of need (the final model's
decode at a pause) runs at a lower CPU priority, the rest at the process's own."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.pipeline.pool import InferencePool, in_nicer_thread
from gateway.pipeline.runtime import Runtime, _quick_stt
from gateway.providers import registry
from gateway.providers.base import ProviderError, Speech


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


def _task_nices() -> dict[int, int]:
    """Nice value of each thread of this process, by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
        except OSError:  # the thread ended meanwhile
            continue
    return out


def test_threads_made_in_a_nicer_thread_are_nicer_and_errors_come_back() -> None:
    base = _nice()
    made: list[int] = []
    stop = threading.Event()

    def work() -> None:
        made.append(threading.get_native_id())
        stop.wait(5)

    def load() -> str:
        worker = threading.Thread(target=work)
        worker.start()
        while not made:
            stop.wait(0.001)
        return "loaded"

    try:
        assert in_nicer_thread(5, load) == "loaded"
        assert _task_nices()[made[0]] == min(19, base + 5)
        assert _nice() == base
    finally:
        stop.set()

    def broken() -> None:
        raise ProviderError("no model here")

    with pytest.raises(ProviderError, match="no model here"):
        in_nicer_thread(5, broken)


def test_whispers_decodes_ahead_run_in_a_nicer_copy_of_the_final_model(tmp_path: Path) -> None:
    """CTranslate2 decodes in worker threads it makes at load; a nicer pool thread that
    waits for them changes nothing, so the decodes ahead get a copy loaded nicer."""
    cfg = Config().replace(stt={"provider": "whisper", "model": "tiny.en", "quick_model": ""},
                           llm={"provider": "null"}, tts={"provider": "null"},
                           turn={"detector": "silence"}, workers={"threads": 1},
                           server={"data_dir": str(tmp_path)})
    before = set(_task_nices())
    quick = registry.create("stt", "null", cfg)
    runtime = Runtime.load(cfg, overrides={"stt_quick": quick})
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        final, ahead = runtime.chains["stt"].primary, runtime.ahead_stt.primary if \
            runtime.ahead_stt is not None else None
        assert ahead is not None and ahead is not final and ahead.name == final.name
        assert (ahead.model_dir, ahead.beam_size) == (final.model_dir, final.beam_size)
        new = {tid: n for tid, n in _task_nices().items() if tid not in before}
        assert sorted(new.values()).count(min(19, base + 5)) >= 1  # the copy's worker
        assert base in new.values()  # the shared model's worker
    finally:
        runtime.close()
    # An injected model (tests share one everywhere) is used as given: no copy, and no
    # model prepared in the data directory (base is 142 MB).
    injected = Runtime.load(cfg.replace(stt={"model": "base"}),
                            overrides={"stt": final, "stt_quick": quick})
    try:
        assert injected.ahead_stt is not None and injected.ahead_stt.primary is final
        assert not (tmp_path / "models").exists()
    finally:
        injected.close()


def test_the_quick_model_has_its_own_beam(tmp_path: Path) -> None:
    """What turn-taking waits on is decoded with stt.quick_beam_size, the final
    transcript with stt.beam_size."""
    cfg = Config().replace(stt={"provider": "whisper", "model": "base", "quick_model": "tiny.en"},
                           workers={"threads": 1}, server={"data_dir": str(tmp_path)})
    quick = _quick_stt(cfg, {})
    assert quick is not None and quick.beam_size == cfg.stt.quick_beam_size == 5
    greedy = _quick_stt(cfg.replace(stt={"quick_beam_size": 1, "beam_size": 4}), {})
    assert greedy is not None and greedy.beam_size == 1


class NiceVoice:
    name = "nice-voice"

    def synthesize(self, text: str, *, voice: str | None = None) -> Speech:
        return Speech(_nice().to_bytes(2, "little"), 16000)


async def test_speech_made_ahead_runs_nicer_and_the_replys_does_not() -> None:
    """The speculative first sentence (made while a pause is judged) must not slow that
    pause's checks; the reply's own speech runs at the process's priority."""
    cfg = Config().replace(stt={"provider": "null"}, llm={"provider": "null"},
                           turn={"detector": "silence"})
    runtime = Runtime.load(cfg, overrides={"vad": registry.create_vad(cfg), "tts": NiceVoice()})
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        ahead = await runtime.synthesize("Hi.", None, 16000, ahead=True)
        now = await runtime.synthesize("Hi.", None, 16000)
        assert int.from_bytes(ahead.pcm, "little") == min(19, base + 5)
        assert int.from_bytes(now.pcm, "little") == base
    finally:
        runtime.close()
