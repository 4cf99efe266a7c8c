"""Measure the embedded providers on this machine.

Prints, per provider: load time, time per utterance / sentence and real-time factor
(RTF = processing time / audio duration; below 1 is faster than real time), LLM time to
first token and tokens per second, and VAD cost per 20 ms frame.

Run from the repository root: ``PYTHONPATH=. python scripts/measure_providers.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import soundfile as sf

from gateway.config import Config
from gateway.providers.base import TTS, VAD, ChatRequest, Message, Passage

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
WAVS = sorted((ROOT / "tests" / "data").glob("*.wav"))
SENTENCES = (
    "The gateway listens, thinks and answers in real time.",
    "Barge-in stops the reply as soon as you speak.",
    "Hello!",
    "One two three four five six seven eight nine ten.",
)
QUESTIONS = ("What is the gateway?", "What is barge-in?", "How fast does it answer?")
PASSAGE = Passage(
    "Barge-in",
    "When the caller speaks while the assistant is talking, the gateway stops the reply "
    "within 200 ms and listens.",
    "kb/barge-in.md",
)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def load(label: str, factory: Callable[[], T]) -> T:
    seconds, obj = timed(factory)
    print(f"\n{label}: loaded in {seconds:.2f} s")
    return obj


def read_pcm(path: Path) -> bytes:
    data, rate = sf.read(path, dtype="int16")
    assert rate == 16000, path
    return bytes(data.tobytes())


def measure_stt(label: str, cfg: Config, repeat: int) -> None:
    from gateway.providers.whisper_stt import WhisperSTT

    stt = load(label, lambda: WhisperSTT.from_config(cfg))
    stt.transcribe(read_pcm(WAVS[0]))  # warm-up: first call allocates buffers
    rtfs = []
    for path in WAVS:
        pcm = read_pcm(path)
        audio_s = len(pcm) / 32000
        times = [timed(partial(stt.transcribe, pcm))[0] for _ in range(repeat)]
        text = stt.transcribe(pcm)
        best = min(times)
        rtfs.append(best / audio_s)
        print(f"  {path.name:28s} {audio_s:4.2f} s audio  {best * 1000:6.0f} ms  "
              f"RTF {best / audio_s:.3f}  {text!r}")
    print(f"  mean RTF {statistics.mean(rtfs):.3f}")


def measure_turn(repeat: int) -> None:
    """Smart Turn v3.2 per check (features + model): wall and CPU time, best of repeats."""
    from gateway.providers.smart_turn import SmartTurn

    model = load("smart turn v3.2", SmartTurn)
    for path in WAVS:
        pcm = read_pcm(path)
        model.end_probability(pcm)  # warm-up
        walls, cpus = [], []
        for _ in range(repeat):
            cpu0 = time.process_time()
            wall, p = timed(partial(model.end_probability, pcm))
            walls.append(wall)
            cpus.append(time.process_time() - cpu0)
        print(f"  {path.name:28s} {min(walls) * 1000:5.0f} ms wall  {min(cpus) * 1000:5.0f} ms "
              f"CPU  p(complete) {p:.2f}")


def measure_tts(tts: TTS, repeat: int) -> None:
    tts.synthesize("Warm up.")
    rtfs = []
    for text in SENTENCES:
        best, speech = min(
            (timed(partial(tts.synthesize, text)) for _ in range(repeat)), key=lambda r: r[0]
        )
        audio_s = speech.duration_ms / 1000
        rtfs.append(best / audio_s)
        print(f"  {audio_s:4.2f} s audio  {best * 1000:6.0f} ms  RTF {best / audio_s:.3f}  "
              f"{text!r}")
    print(f"  mean RTF {statistics.mean(rtfs):.3f}")


def measure_llm(cfg: Config) -> None:
    from gateway.providers.llama_llm import LlamaLLM

    llm = load("llama (SmolLM2-135M Q4_1)", lambda: LlamaLLM.from_config(cfg))
    system = cfg.llm.system_prompt.format(assistant_name=cfg.llm.assistant_name)
    for question in QUESTIONS:
        req = ChatRequest([Message("system", system), Message("user", question)], [PASSAGE])
        start = time.perf_counter()
        first, count = 0.0, 0
        for _token in llm.generate(req):
            count += 1
            if count == 1:
                first = time.perf_counter() - start
        total = time.perf_counter() - start
        rate = (count - 1) / (total - first) if count > 1 else 0.0
        print(f"  TTFT {first * 1000:5.0f} ms  {count:3d} tokens  {rate:5.1f} tok/s  "
              f"{question!r}")


def measure_vad(label: str, vad: VAD, frames: int = 20000) -> None:
    pcm = b"".join(read_pcm(p) for p in WAVS)
    chunks = [pcm[i : i + 640] for i in range(0, len(pcm) - 640 + 1, 640)]
    stream = vad.stream(20)
    start = time.perf_counter()
    for i in range(frames):
        stream.is_speech(chunks[i % len(chunks)])
    per_frame = (time.perf_counter() - start) / frames
    # 300 sessions at 50 frames/s: the share of one core the VAD would take.
    print(f"{label:10s} {per_frame * 1e6:7.1f} µs per 20 ms frame  "
          f"(300 sessions: {per_frame * 300 * 50 * 100:.0f}% of a core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=Config().server.data_dir)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-base", action="store_true", help="skip Whisper base")
    parser.add_argument("--only", choices=["vad", "stt", "turn", "tts", "llm"], action="append",
                        help="measure only these stages (repeatable)")
    args = parser.parse_args()
    cfg = Config().replace(server={"data_dir": args.data_dir})

    from gateway.providers.espeak_tts import EspeakTTS
    from gateway.providers.null import NullVAD
    from gateway.providers.piper_tts import PiperTTS
    from gateway.providers.silero_vad import SileroVAD
    from gateway.providers.webrtc_vad import WebRTCVAD

    only = set(args.only or ["vad", "stt", "turn", "tts", "llm"])
    if "vad" in only:
        print("== VAD")
        measure_vad("webrtcvad", WebRTCVAD.from_config(cfg))
        measure_vad("silero", SileroVAD.from_config(cfg))
        measure_vad("null", NullVAD.from_config(cfg))
    if "stt" in only:
        print("\n== STT")
        measure_stt("whisper tiny.en", cfg, args.repeat)
        measure_stt("whisper tiny.en, full 30 s window", cfg.replace(stt={"fit_window_s": 0}),
                    args.repeat)
        if not args.skip_base:
            measure_stt("whisper base", cfg.replace(stt={"model": "base"}), args.repeat)
    if "turn" in only:
        print("\n== end of turn")
        measure_turn(args.repeat)
    if "tts" in only:
        print("\n== TTS")
        measure_tts(load("piper joe", lambda: PiperTTS.from_config(cfg)), args.repeat)
        measure_tts(load("espeak-ng", lambda: EspeakTTS.from_config(cfg)), args.repeat)
    if "llm" in only:
        print("\n== LLM")
        measure_llm(cfg)


if __name__ == "__main__":
    main()
