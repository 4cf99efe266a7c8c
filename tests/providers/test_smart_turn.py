"""Smart Turn v3.2 on real speech: a finished question vs the same sentence at a pause."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA_DIR, read_wav

from gateway.providers.base import TurnDetector
from gateway.providers.smart_turn import SmartTurn, feature_extractor, features, model_path

RATE = 16000


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def ms(n: float) -> int:
    """Bytes of ``n`` ms of 16 kHz s16le."""
    return int(RATE * n / 1000) * 2


def paused() -> tuple[bytes, int]:
    """The pause WAV and where its 600 ms mid-sentence pause (digital zeros) starts."""
    pcm = read_wav(DATA_DIR / "pool_holidays_pause.wav")
    zero = np.frombuffer(pcm, dtype="<i2") == 0
    inner = zero[: len(zero) - RATE]  # not the trailing silence
    runs = np.flatnonzero(np.diff(np.concatenate(([0], inner.view(np.int8), [0]))))
    starts, ends = runs[::2], runs[1::2]
    longest = int(np.argmax(ends - starts))
    assert ends[longest] - starts[longest] >= RATE * 0.55
    return pcm, int(starts[longest]) * 2


def test_model_ships_in_the_wheel_and_pipecat_is_not_imported(model: SmartTurn) -> None:
    import subprocess
    import sys

    assert isinstance(model, TurnDetector)
    assert model_path().name == "smart-turn-v3.2-cpu.onnx"
    # In a fresh interpreter: other tests (Pipecat as a Realtime client) import pipecat.
    probe = ("import sys\n"
             "from gateway.providers.smart_turn import SmartTurn\n"
             "SmartTurn()\n"
             "print(sorted(n for n in sys.modules if n.split('.')[0] == 'pipecat'))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_features_are_the_last_8_s_zero_padded_at_the_start() -> None:
    ext = feature_extractor()
    short = read_wav(DATA_DIR / "hello_weather.wav")  # 3.1 s
    f = features(short, ext)
    assert f.shape == (1, 80, 800) and f.dtype == np.float32
    # The padding (first ~4.9 s) is one column repeated; the speech at the end is not.
    assert np.ptp(f[0, :, :400], axis=1).max() < 1e-5
    assert np.ptp(f[0, :, -300:], axis=1).max() > 0.5
    # Longer audio: only its last 8 s count.
    long = read_wav(DATA_DIR / "count_numbers.wav") * 3
    assert np.array_equal(features(long, ext), features(long[-ms(8000):], ext))


def test_a_finished_question_is_complete_the_same_sentence_at_a_pause_is_not(
        model: SmartTurn) -> None:
    pcm, pause_at = paused()
    # What the session hands over 200 ms into each pause: the utterance so far.
    at_mid_pause = pcm[: pause_at + ms(200)]
    at_end = pcm[: len(pcm) - ms(500)]  # 700 ms of trailing silence, 200 ms of it
    p_mid, p_end = model.end_probability(at_mid_pause), model.end_probability(at_end)
    assert p_mid < 0.2 < 0.8 < p_end, (p_mid, p_end)
    for name in ("hello_weather.wav", "count_numbers.wav"):
        whole = read_wav(DATA_DIR / name)
        assert model.end_probability(whole[: len(whole) - ms(500)]) > 0.8, name


def test_silence_and_scraps_are_handled(model: SmartTurn) -> None:
    assert model.end_probability(b"") == 0.0
    assert 0.0 <= model.end_probability(b"\x00\x00" * RATE) <= 1.0
    assert 0.0 <= model.end_probability(b"\x01") <= 1.0  # an odd byte: ignored
