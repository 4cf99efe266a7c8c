"""Whisper STT (faster-whisper, int8) on the recorded utterances."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.providers.base import STT, ProviderError, confidence_of, last_word_of
from gateway.providers.whisper_stt import (
    WhisperSTT,
    base_dir,
    last_word_probability,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def tiny() -> WhisperSTT:
    return WhisperSTT.from_config(Config().replace(stt={"model": "tiny.en"}))


@pytest.fixture(scope="module")
def base_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-data")


def check_words(text: str, words: tuple[str, ...], normalize: Callable[[str], str]) -> None:
    norm = normalize(text)
    missing = [w for w in words if w not in norm]
    assert not missing, f"{missing} not in {text!r}"


def test_tiny_en(
    tiny: WhisperSTT,
    speech_wavs: dict[str, bytes],
    expected_words: dict[str, tuple[str, ...]],
    normalize: Callable[[str], str],
) -> None:
    assert isinstance(tiny, STT)
    assert not tiny.multilingual
    for name, pcm in speech_wavs.items():
        text = tiny.transcribe(pcm)
        assert text == text.strip()
        check_words(text, expected_words[name], normalize)


def test_tiny_en_ignores_language(tiny: WhisperSTT, speech_wavs: dict[str, bytes]) -> None:
    # English-only models take no language; passing one must not fail.
    assert "gateway" in tiny.transcribe(speech_wavs["what_is_the_gateway.wav"], language="de")


def test_empty_and_odd_input(tiny: WhisperSTT) -> None:
    assert tiny.transcribe(b"") == ""
    assert isinstance(tiny.transcribe(b"\x00" * 16001), str)  # odd byte count


def test_concurrent_calls(
    tiny: WhisperSTT,
    speech_wavs: dict[str, bytes],
    expected_words: dict[str, tuple[str, ...]],
    normalize: Callable[[str], str],
) -> None:
    names = list(speech_wavs) * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda n: tiny.transcribe(speech_wavs[n]), names))
    for name, text in zip(names, texts, strict=True):
        check_words(text, expected_words[name], normalize)


def test_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ProviderError):
        resolve_model_dir("large-v3", tmp_path)


@pytest.mark.slow
def test_base_joined_once(base_data_dir: Path) -> None:
    target = base_dir(base_data_dir)
    model = target / "model.bin"
    assert {p.name for p in target.iterdir()} == {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.txt"
    }
    mtime = model.stat().st_mtime_ns
    assert base_dir(base_data_dir) == target
    assert model.stat().st_mtime_ns == mtime  # complete: not written again


@pytest.mark.slow
def test_base_multilingual(
    base_data_dir: Path,
    speech_wavs: dict[str, bytes],
    expected_words: dict[str, tuple[str, ...]],
    normalize: Callable[[str], str],
) -> None:
    cfg = Config().replace(server={"data_dir": str(base_data_dir)}, stt={"model": "base"})
    stt = WhisperSTT.from_config(cfg)
    assert stt.multilingual
    for name, pcm in speech_wavs.items():
        check_words(stt.transcribe(pcm, language="en"), expected_words[name], normalize)


def test_fitted_window_same_words_less_cpu(
    speech_wavs: dict[str, bytes],
    expected_words: dict[str, tuple[str, ...]],
    normalize: Callable[[str], str],
) -> None:
    """A short utterance in a 10 s encoder window, not 30 s: same words, a fraction of
    the CPU (time.process_time counts CTranslate2's threads too)."""
    full = WhisperSTT.from_config(Config().replace(stt={"fit_window_s": 0}))
    fitted = WhisperSTT.from_config(Config())
    assert fitted.fit_window_s > 0 and full.fit_window_s == 0
    cpu = {"full": 0.0, "fitted": 0.0}
    for name, pcm in speech_wavs.items():
        for label, stt in (("full", full), ("fitted", fitted)):
            started = time.process_time()
            text = stt.transcribe(pcm)
            cpu[label] += time.process_time() - started
            check_words(text, expected_words[name], normalize)
            assert text == text.strip() and 0 < (confidence_of(text) or 0) <= 1
    assert cpu["fitted"] < 0.6 * cpu["full"], cpu
    assert fitted.transcribe(bytes(32000)) == ""  # a second of silence: no words


def test_decoder_prompt(tiny: WhisperSTT, speech_wavs: dict[str, bytes]) -> None:
    """A prompt is read as the text before the utterance: the words are still decoded,
    silence still gives no words, and an empty prompt is no prompt."""
    pcm = speech_wavs["what_is_the_gateway.wav"]
    assert "gateway" in tiny.transcribe(pcm, prompt="Riverside Pool, sauna, gateway.").lower()
    assert tiny.transcribe(pcm, prompt="  ") == tiny.transcribe(pcm)
    assert tiny.transcribe(b"\x00" * 32000, prompt="Riverside Pool, sauna, towels.") == ""
    fitted = tiny._fitted
    assert fitted is not None
    head = WhisperSTT._previous(fitted, "x " * 500)
    assert head[0] == fitted.tokenizer.sot_prev and len(head) == 224  # cut to 223 tokens


def test_last_word_probability_of_pieces() -> None:
    pieces = [" How", " much", " is", " that", "?"]
    assert last_word_probability(pieces, [0.5, 0.9, 0.3, 0.25, 0.8]) == 0.25
    # A word of several tokens: its least likely one; punctuation is no word.
    assert last_word_probability([" Ten", " sw", "im", "."], [0.9, 0.8, 0.4, 0.1]) == 0.4
    assert last_word_probability(["What", "'s"], [0.6, 0.9]) == 0.6
    assert last_word_probability(["..."], [0.2]) is None
    assert last_word_probability([], []) is None


@pytest.mark.parametrize("said, voice", [
    ("How much is a | ten swim card?", "espeak:en-gb"),  # "How much is that?" (0.26)
    ("Until what time is the | cafe open?", "espeak:en-us"),  # "until what time is that"
    ("How long before closing is the | last entry?", "espeak:en-gb"),  # "... is that?"
    ("Can I bring my | dog along?", "espeak:en-us+f2"),  # "Can I bring my eyes?"
])
def test_a_guessed_last_word_is_unsure(tiny: WhisperSTT, said: str, voice: str) -> None:
    """Whisper completes a sentence cut after "a" / "the" / "my" with a word it did not
    hear: the words end like a sentence, but the recogniser was unsure of that last word,
    which is what the turn checks hold on (``turn.last_word_min``). The whole sentence's
    last word is sure."""
    from gateway.evaluation.audio import FRAME_BYTES, Voices, frame_levels
    from gateway.evaluation.scenario import Utterance, Voice
    from gateway.pipeline.text import ends_mid_sentence

    clip = Voices().clip(Utterance(text=said, voice=Voice.parse(voice), pause_ms=700)).audio
    quiet = frame_levels(clip) < -55
    # The 700 ms pause: the first run of 25 quiet frames after speech began.
    start = next(i for i in range(int(quiet.argmin()), len(quiet) - 25)
                 if quiet[i : i + 25].all())
    head = clip[: (start + 5) * FRAME_BYTES]  # the first half and 100 ms of its pause
    heard = tiny.transcribe(head, last_word=True)
    last = last_word_of(heard)
    assert not ends_mid_sentence(heard), heard  # the words alone would not hold it
    assert last is not None and last < Config().turn.last_word_min, (heard, last)
    whole = tiny.transcribe(clip, last_word=True)
    assert last_word_of(whole) >= Config().turn.last_word_min, whole  # type: ignore[operator]
    assert last_word_of(tiny.transcribe(clip)) is None  # not asked: no extra pass
