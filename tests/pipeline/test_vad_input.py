"""The VAD stage's audio path: which rate the VAD runs at, framing, and the utterances
handed on at 16 kHz. Pure: no session, no event loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gateway.audio import pcm
from gateway.pipeline.turns import Endpointer, EndpointerSettings, SpeechStarted, SpeechStopped
from gateway.pipeline.vad_input import PIPELINE_RATE, VadInput, vad_rate
from gateway.providers.base import ProviderError
from gateway.providers.null import NullVAD
from gateway.providers.webrtc_vad import WebRTCVAD

DATA = Path(__file__).parents[1] / "data"


def wav(name: str, rate: int) -> bytes:
    data, src = sf.read(str(DATA / name), dtype="int16")
    return pcm.resample(data.tobytes(), src, rate)


class SixteenOnly:
    """A VAD that names no ``rates`` (as a third-party one might): 16 kHz only."""

    name = "fixed"
    sample_rate = 16000

    def stream(self, frame_ms: int) -> NullVAD:
        return NullVAD().stream(frame_ms)  # type: ignore[return-value]


def test_the_vad_runs_at_the_input_rate_only_where_it_takes_it() -> None:
    assert vad_rate(WebRTCVAD(), 8000) == 8000
    assert vad_rate(WebRTCVAD(), 48000) == 48000
    assert vad_rate(WebRTCVAD(), 24000) == PIPELINE_RATE  # libwebrtc has no 24 kHz
    assert vad_rate(NullVAD(), 8000) == 8000
    assert vad_rate(SixteenOnly(), 8000) == PIPELINE_RATE


def test_frames_are_cut_at_the_vad_rate() -> None:
    same = VadInput(WebRTCVAD(), 20, 8000)
    assert [len(f) for f in same.frames(bytes(320 * 3 + 100))] == [320] * 3
    assert [len(f) for f in same.frames(bytes(220))] == [320]  # the rest was kept
    resampled = VadInput(SixteenOnly(), 20, 8000)
    out = b"".join(resampled.frames(bytes(320 * 50)))
    assert len(out) % 640 == 0 and abs(len(out) - 640 * 50) <= 640 * 2


def test_a_rate_webrtcvad_cannot_take_is_refused_clearly() -> None:
    with pytest.raises(ProviderError, match="24000"):
        WebRTCVAD().stream(20, rate=24000)


def decisions(vin: VadInput, audio: bytes, chunk: int) -> list[bool]:
    return [vin.stream.is_speech(f)
            for i in range(0, len(audio), chunk) for f in vin.frames(audio[i : i + chunk])]


@pytest.mark.parametrize("name", ["what_is_the_gateway.wav", "hello_weather.wav",
                                  "pool_holidays_pause.wav"])
def test_webrtcvad_judges_8khz_audio_as_it_judges_it_resampled(name: str) -> None:
    """libwebrtc decimates 16 kHz to 8 kHz before judging: feeding telephony audio at
    8 kHz as it comes gives the same verdicts as resampling it to 16 kHz first, and the
    endpointer finds the same turns, to the frame or one off."""
    audio8 = wav(name, 8000) + bytes(16000)
    native = decisions(VadInput(WebRTCVAD(), 20, 8000), audio8, 320)
    up = decisions(webrtc_at_16k(), audio8, 320)
    n = min(len(native), len(up))
    agree = sum(a == b for a, b in zip(native[:n], up[:n], strict=True)) / n
    assert agree >= 0.97

    def turns(flags: list[bool]) -> list[tuple[str, float]]:
        ep = Endpointer(EndpointerSettings())
        return [(type(e).__name__, e.at_ms) for i, s in enumerate(flags)
                for e in ep.push(bytes(320), s, False)
                if isinstance(e, SpeechStarted | SpeechStopped)]

    a, b = turns(native[:n]), turns(up[:n])
    assert [k for k, _ in a] == [k for k, _ in b] and a
    assert all(abs(x - y) <= 20 for (_, x), (_, y) in zip(a, b, strict=True))


def webrtc_at_16k() -> VadInput:
    """webrtcvad forced to 16 kHz: 8 kHz input resampled per frame (the old path)."""
    vin = VadInput(SixteenOnly(), 20, 8000)
    vin.stream = WebRTCVAD().stream(20)
    return vin


def test_utterances_go_on_at_16khz_with_the_same_sound() -> None:
    audio16 = wav("what_is_the_gateway.wav", 16000)
    vin = VadInput(WebRTCVAD(), 20, 8000)
    out = vin.to_pipeline(pcm.resample(audio16, 16000, 8000))
    assert len(out) == len(audio16)
    a = np.frombuffer(out, "<i2").astype(np.float64)
    b = np.frombuffer(audio16, "<i2").astype(np.float64)
    # Telephony audio has nothing above 4 kHz; below it the speech is the same.
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert VadInput(WebRTCVAD(), 20, 16000).to_pipeline(audio16) is audio16
