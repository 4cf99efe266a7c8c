"""Whisper on short utterances: time and word error rate, full 30 s window vs a window
cut to the audio (CTranslate2's encoder takes fewer than 3000 mel frames: whisper.cpp's
``audio_ctx`` trick, here faster-whisper's ``chunk_length``).

Speech: tests/data/*.wav plus questions spoken by piper (joe) and espeak-ng voices.
Run from the repository root: ``PYTHONPATH=. python scripts/measure_stt.py``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import soundfile as sf

from gateway.audio.pcm import resample
from gateway.config import Config
from gateway.providers.whisper_stt import WhisperSTT

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = (
    "What time do you open on Saturday?",
    "How much does a day pass cost for children?",
    "Can I bring my dog into the museum?",
    "I would like to book a table for four people tonight.",
    "Do you have parking near the main entrance?",
    "Is the swimming pool open during the holidays?",
    "What is the gateway?",
    "Where can I leave my bicycle?",
    "We are four adults and two children, and we would like to come on Sunday morning. "
    "Do we need to book in advance, and is there a family ticket?",
    "My daughter lost her blue backpack near the cafeteria yesterday afternoon; "
    "has anybody handed it in at the reception desk?",
)
WAV_TEXT = {
    "what_is_the_gateway.wav": "What is the gateway?",
    "hello_weather.wav": "Hello, what is the weather like today?",
    "count_numbers.wav": "one two three four five six seven eight nine ten",
    "pool_holidays_pause.wav": "Is the swimming pool open during the holidays?",
}
_NUM = dict(zip("1 2 3 4 5 6 7 8 9 10".split(),
                "one two three four five six seven eight nine ten".split(), strict=True))


def words(text: str) -> list[str]:
    return [_NUM.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())]


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    r, h = words(ref), words(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1], len(r)


def corpus() -> list[tuple[str, str, bytes]]:
    """(source, reference text, 16 kHz s16le) utterances."""
    from gateway.providers.espeak_tts import EspeakTTS
    from gateway.providers.piper_tts import PiperTTS

    out = []
    for name, text in WAV_TEXT.items():
        data, _rate = sf.read(ROOT / "tests" / "data" / name, dtype="int16")
        out.append((name, text, data.tobytes()))
    voices = [("piper-joe", PiperTTS("joe", 1.0))]
    voices += [(f"espeak-{v}", EspeakTTS(v, speed)) for v, speed in
               (("en-us", 1.0), ("en-gb", 1.2), ("en-us+f3", 0.9))]
    for label, tts in voices:
        for q in QUESTIONS:
            s = tts.synthesize(q)
            pad = bytes(16000 // 5 * 2)
            out.append((label, q, pad + resample(s.pcm, s.sample_rate, 16000) + pad))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    stt = WhisperSTT.from_config(Config())
    utts = corpus()
    print(f"{len(utts)} utterances, {sum(len(p) for *_, p in utts) / 32000:.1f} s of audio")
    for mode in ("full", "fit"):
        stt.fit_window_s = 15.0 if mode == "fit" else 0.0
        errors = total = 0
        times = []
        for _src, text, pcm in utts:
            for _k in range(args.repeat):
                t0 = time.perf_counter()
                hyp = stt.transcribe(pcm)
                times.append(time.perf_counter() - t0)
            e, n = wer(text, hyp)
            errors, total = errors + e, total + n
            if e:
                print(f"  [{mode}] {_src}: {text!r} -> {hyp!r}")
        times.sort()
        print(f"{mode}: WER {errors / total:.1%} ({errors}/{total} words); per utterance "
              f"p50 {statistics.median(times) * 1000:.0f} ms, "
              f"p90 {times[int(len(times) * 0.9)] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
