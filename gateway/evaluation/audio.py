"""Caller audio: speech from the embedded voices, WAV files and synthetic noises.

Everything is 16 kHz mono s16le, cut into 20 ms frames as the runner streams it. A
``Clip`` knows its first and last voiced frame (from the frame energy), so the runner
can time the caller's last voiced audio exactly, before any trailing silence.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from gateway.audio import pcm
from gateway.evaluation.scenario import PAUSE_MARK, Utterance, Voice
from gateway.providers import visemes

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = pcm.frame_bytes(RATE, FRAME_MS)
LEAD_MS = 200  # silence before each utterance, as a person takes a breath
# A frame is voiced above both an absolute floor and a level relative to the loudest
# frame (so a quiet voice or a WAV with a noise floor is still timed right).
FLOOR_DBFS = -50.0
BELOW_PEAK_DB = 35.0


@dataclass(frozen=True, slots=True)
class Clip:
    audio: bytes  # whole frames only
    first_voiced: int  # frame index
    last_voiced: int  # frame index
    label: str

    @property
    def frames(self) -> int:
        return len(self.audio) // FRAME_BYTES

    @property
    def duration_ms(self) -> int:
        return self.frames * FRAME_MS


def frame_levels(audio: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    """dBFS of each 20 ms frame."""
    n = len(audio) // FRAME_BYTES
    x = np.frombuffer(audio[: n * FRAME_BYTES], dtype="<i2").astype(np.float64)
    rms = np.sqrt((x.reshape(n, -1) ** 2).mean(axis=1)) if n else np.zeros(0)
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9) / 32768.0), dtype=np.float64)


def voiced_span(audio: bytes) -> tuple[int, int]:
    """First and last voiced frame index; (-1, -1) when nothing is voiced."""
    levels = frame_levels(audio)
    if not len(levels):
        return -1, -1
    threshold = max(FLOOR_DBFS, float(levels.max()) - BELOW_PEAK_DB)
    voiced = np.flatnonzero(levels > threshold)
    return (int(voiced[0]), int(voiced[-1])) if len(voiced) else (-1, -1)


def silence(ms: int) -> bytes:
    return bytes(pcm.frame_bytes(RATE, ms))


def trim(audio: bytes) -> bytes:
    """The voiced part, whole frames."""
    first, last = voiced_span(audio)
    return b"" if first < 0 else audio[first * FRAME_BYTES : (last + 1) * FRAME_BYTES]


def make_clip(audio: bytes, label: str) -> Clip:
    body = silence(LEAD_MS) + audio
    body = body[: len(body) // FRAME_BYTES * FRAME_BYTES]
    first, last = voiced_span(body)
    if first < 0:
        raise ValueError(f"{label!r}: no voiced audio")
    return Clip(body, first, last, label)


def quietest_point(audio: bytes, lo_ms: float, hi_ms: float) -> int:
    """The sample between ``lo_ms`` and ``hi_ms`` at the centre of the quietest 10 ms (a
    word boundary, or a stop's closure next to it), moved to the nearest zero crossing so
    that cutting there makes no click."""
    x = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.float64)
    win, hop = RATE // 100, RATE // 200
    lo = max(0, int(lo_ms * RATE / 1000) - win // 2)
    hi = min(x.size - win, int(hi_ms * RATE / 1000) - win // 2)
    if hi <= lo:
        return int(np.clip((lo_ms + hi_ms) / 2 * RATE / 1000, 0, x.size))
    starts = np.arange(lo, hi + 1, hop)
    energy = [float(np.square(x[s:s + win]).mean()) for s in starts]
    centre = int(starts[int(np.argmin(energy))]) + win // 2
    near = x[max(0, centre - hop):centre + hop]
    crossings = np.flatnonzero(np.signbit(near[:-1]) != np.signbit(near[1:]))
    if crossings.size:
        centre = max(0, centre - hop) + int(crossings[np.argmin(np.abs(
            crossings - min(hop, centre)))]) + 1
    return centre


def noise(kind: str, seed: int = 7) -> bytes:
    """A cough (noise burst with a short voiced tail) or a plain broadband burst."""
    rng = np.random.default_rng(seed)
    if kind == "burst":
        n = RATE * 400 // 1000
        x = rng.normal(0, 0.12, n) * np.minimum(1, np.arange(n) / 80)
        return pcm.from_float(x)
    n = RATE * 350 // 1000
    t = np.arange(n) / RATE
    env = np.minimum(1, t / 0.008) * np.exp(-t / 0.09)
    # Breathy burst low-passed by a short moving average, then a decaying 140 Hz buzz.
    burst = np.convolve(rng.normal(0, 0.35, n), np.ones(6) / 6, mode="same") * env
    tail_env = np.exp(-np.maximum(t - 0.08, 0) / 0.06) * (t > 0.08)
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return pcm.from_float(np.clip(burst + 0.15 * buzz * tail_env, -1, 1))


def read_wav(path: Path) -> bytes:
    data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    mono = data.mean(axis=1).astype("<i2") if data.shape[1] > 1 else data[:, 0]
    return pcm.resample(mono.astype("<i2").tobytes(), int(sr), RATE)


class Voices:
    """Synthesises caller speech with Piper or espeak-ng (loaded once per voice and speed)."""

    def __init__(self) -> None:
        self._engines: dict[tuple[Voice, float, bool], Any] = {}
        self._cache: dict[tuple[str, Voice, float, int, bool], Clip] = {}

    def _engine(self, voice: Voice, speed: float, markup: bool = False) -> Any:
        key = (voice, speed, markup)
        if key not in self._engines:
            if voice.engine == "piper":
                from gateway.providers.piper_tts import PiperTTS

                self._engines[key] = PiperTTS(voice.name, speed)
            else:
                from gateway.providers.espeak_tts import EspeakTTS

                self._engines[key] = EspeakTTS(voice.name, speed, markup=markup)
        return self._engines[key]

    def speak(self, text: str, voice: Voice, speed: float = 1.0) -> bytes:
        speech = self._engine(voice, speed).synthesize(text)
        return pcm.resample(speech.pcm, speech.sample_rate, RATE)

    def clip(self, u: Utterance) -> Clip:
        """The utterance as a clip, after a lead-in; pauses of exactly ``pause_ms``."""
        if u.wav is not None:
            return make_clip(read_wav(u.wav), u.label)
        if u.noise is not None:
            return make_clip(noise(u.noise), u.label)
        text = u.text or ""
        key = (text, u.voice, u.speed, u.pause_ms, u.apart)
        if key not in self._cache:
            parts = [p.strip() for p in text.split(PAUSE_MARK) if p.strip()]
            audio = self._apart(parts, u) if u.apart else self._paused(parts, u)
            self._cache[key] = make_clip(audio, u.label)
        return self._cache[key]

    def _apart(self, parts: list[str], u: Utterance) -> bytes:
        """The harder variant: each part synthesised on its own, so each ends the way a
        sentence ends (a trailing comma barely changes that), joined by the pauses."""
        spoken = [p if i == len(parts) - 1 or p[-1] in ",;:-" else p + ","
                  for i, p in enumerate(parts)]
        return silence(u.pause_ms).join(trim(self.speak(p, u.voice, u.speed)) for p in spoken)

    def _paused(self, parts: list[str], u: Utterance) -> bytes:
        """The sentence synthesised once with silence at each word boundary marked: a
        person who pauses mid-sentence does not end the first half like a sentence.

        espeak-ng takes the pause itself (an SSML break, spoken on with a continuing
        intonation); Piper has no markup but reports each phoneme's time, so the sentence
        is cut between the two words (at the quietest point) and the silence put there.
        """
        if u.voice.engine == "espeak":
            brk = f'<break time="{u.pause_ms}ms"/>'
            ssml = brk.join(html.escape(p, quote=False) for p in parts)
            speech = self._engine(u.voice, u.speed, markup=True).synthesize(ssml)
            return trim(pcm.resample(speech.pcm, speech.sample_rate, RATE))
        text = " ".join(parts)
        speech = self._engine(u.voice, u.speed).synthesize(text)
        audio = pcm.resample(speech.pcm, speech.sample_rate, RATE)
        words = visemes.word_timings(text, speech.phonemes)
        cuts = []
        for k in range(1, len(parts)):
            n = len(visemes.spoken_words(" ".join(parts[:k])))
            if not 0 < n < len(words):
                raise ValueError(f"{u.label!r}: no word timing at pause {k} from {u.voice}")
            cuts.append(quietest_point(audio, words[n - 1].end_ms - 40.0,
                                       words[n].start_ms + 40.0))
        pieces = [audio[a * 2:b * 2] for a, b in zip([0, *cuts], [*cuts, len(audio) // 2],
                                                      strict=True)]
        return trim(silence(u.pause_ms).join(pieces))
