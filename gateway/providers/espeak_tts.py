"""eSpeak NG as a fallback TTS: robotic but tiny, one subprocess per sentence.

No phoneme timings: the espeak-ng command line prints phonemes but not their times.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

from gateway.config import Config

from .base import ProviderError, Speech

DEFAULT_VOICE = "en-us"
DEFAULT_WPM = 175  # espeak-ng's own default speaking rate
_LIST_TIMEOUT_S = 10.0  # one-off at load; synthesis has its own (configured) timeout
_SAFE_VOICE = re.compile(r"^[A-Za-z0-9_+\-]{1,40}$")  # goes into argv: keep it plain


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """PCM and sample rate of a mono s16le WAV.

    ``espeak-ng --stdout`` cannot seek back, so its RIFF and data sizes are
    placeholders (0x7fff...): the data chunk is taken to run to the end of the stream.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"unsupported WAV format {fmt}/{channels}ch/{bits}bit")
        elif chunk_id == b"data":
            if not rate:
                raise ValueError("WAV data before its fmt chunk")
            pcm = data[body : min(body + size, len(data))]
            return pcm[: len(pcm) // 2 * 2], rate
        pos = body + size + (size & 1)
    raise ValueError("no data chunk in WAV stream")


class EspeakTTS:
    name = "espeak"
    sample_rate = 22050  # espeak-ng's native rate; confirmed per call from the header

    def __init__(
        self, voice: str = DEFAULT_VOICE, speed: float = 1.0, timeout_s: float = 15.0,
        *, markup: bool = False,
    ) -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise ProviderError("espeak-ng is not installed", retryable=False)
        self._exe = exe
        self.timeout_s = timeout_s
        # espeak-ng silently falls back to its default for unknown voices: check here.
        self.voices = self._list_voices()
        self.voice = self._check_voice(voice)
        self.wpm = max(80, min(450, round(DEFAULT_WPM * speed)))
        # SSML input (``<break time="600ms"/>``): the caller escapes the text itself.
        self.markup = markup

    @classmethod
    def from_config(cls, cfg: Config) -> EspeakTTS:
        # tts.voice names a piper voice; espeak keeps its own default voice.
        return cls(DEFAULT_VOICE, cfg.tts.speed, cfg.tts.timeout_s)

    def _list_voices(self) -> frozenset[str]:
        """Language codes and voice names that ``-v`` accepts (lower case)."""
        try:
            out = subprocess.run(
                [self._exe, "--voices"], capture_output=True, timeout=_LIST_TIMEOUT_S, check=True
            ).stdout.decode("utf-8", "replace")
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProviderError(f"cannot list espeak-ng voices: {exc}") from exc
        names: set[str] = set()
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 4:  # Pty Language Age/Gender VoiceName File ...
                names.update((cols[1].lower(), cols[3].lower()))
        return frozenset(names)

    def _check_voice(self, voice: str) -> str:
        # "en-us+f3" is a voice plus a variant; the variant is not checked.
        if not _SAFE_VOICE.match(voice) or voice.split("+")[0].lower() not in self.voices:
            raise ProviderError(f"unknown espeak voice {voice!r}", retryable=False)
        return voice

    def synthesize(self, text: str, *, voice: str | None = None) -> Speech:
        if not text.strip():
            return Speech(b"", self.sample_rate)
        v = self.voice if voice is None else self._check_voice(voice)
        # Text goes through stdin (never argv or a shell): no quoting or option injection.
        args = [self._exe, "--stdout", "--stdin", "-v", v, "-s", str(self.wpm),
                *(["-m"] if self.markup else [])]
        try:
            proc = subprocess.run(
                args, input=text.encode("utf-8"), capture_output=True,
                timeout=self.timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"espeak-ng timed out after {self.timeout_s} s") from exc
        except OSError as exc:
            raise ProviderError(f"cannot run espeak-ng: {exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[:200]
            raise ProviderError(f"espeak-ng failed ({proc.returncode}): {err}")
        try:
            pcm, rate = parse_wav(proc.stdout)
        except (ValueError, struct.error) as exc:
            raise ProviderError(f"espeak-ng produced bad audio: {exc}") from exc
        return Speech(pcm, rate)
