"""Regenerate the test utterances: real speech from the piper "joe" voice.

Run from the repository root: ``PYTHONPATH=. python tests/data/make_wavs.py [file.wav ...]``.
Output is 16 kHz mono s16le with 300 ms of silence before and 700 ms after each utterance.
Piper's VITS model samples noise, so each run produces slightly different (equally valid)
audio.
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf

from gateway.audio.pcm import resample
from gateway.providers.piper_tts import PiperTTS
from gateway.providers.visemes import word_timings

RATE = 16000
LEAD_MS, TAIL_MS = 300, 700
# file -> (text, speaking speed); the counting is slowed to last over 3 s of speech.
UTTERANCES = {
    "what_is_the_gateway.wav": ("What is the gateway?", 1.0),
    "hello_weather.wav": ("Hello, what is the weather like today?", 1.0),
    "tell_me_about_barge_in.wav": ("Tell me about barge in.", 1.0),
    "count_numbers.wav": ("One two three four five six seven eight nine ten.", 0.85),
}

# file -> (text, the word after which the speaker pauses, pause): one sentence spoken
# whole, then cut at that word's end (piper's phoneme timings) and the pause inserted,
# so both halves keep the sentence's intonation (a person pausing mid-sentence).
PAUSED = {
    "pool_holidays_pause.wav": ("Is the swimming pool open during the holidays?", 5, 600),
}


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


def main() -> None:
    out_dir = Path(__file__).resolve().parent
    voices = {speed: PiperTTS("joe", speed) for _, speed in UTTERANCES.values()}
    only = set(sys.argv[1:])  # file names: regenerate just these
    for filename, (text, speed) in UTTERANCES.items():
        if only and filename not in only:
            continue
        speech = voices[speed].synthesize(text)
        pcm = silence(LEAD_MS) + resample(speech.pcm, speech.sample_rate, RATE) + silence(TAIL_MS)
        path = out_dir / filename
        with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16", format="WAV") as fh:
            fh.buffer_write(pcm, dtype="int16")
        print(f"{path.name}: {len(pcm) / 2 / RATE:.2f} s, {path.stat().st_size} bytes")
    for filename, (text, after, pause_ms) in PAUSED.items():
        if only and filename not in only:
            continue
        speech = voices[1.0].synthesize(text)
        cut_ms = word_timings(text, speech.phonemes)[after].end_ms
        audio = resample(speech.pcm, speech.sample_rate, RATE)
        cut = RATE * cut_ms // 1000 * 2
        pcm = silence(LEAD_MS) + audio[:cut] + silence(pause_ms) + audio[cut:] + silence(TAIL_MS)
        path = out_dir / filename
        with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16", format="WAV") as fh:
            fh.buffer_write(pcm, dtype="int16")
        print(f"{path.name}: pause of {pause_ms} ms after {text.split()[after]!r}")


if __name__ == "__main__":
    main()
