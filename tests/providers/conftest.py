"""Shared fixtures for the provider tests: the recorded speech WAVs and their words."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf

# Nothing may come from a model hub: every model is a local directory or wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
RATE = 16000
# WAV -> words a transcription must contain (after normalize_text).
EXPECTED_WORDS: dict[str, tuple[str, ...]] = {
    "what_is_the_gateway.wav": ("what", "gateway"),
    "hello_weather.wav": ("hello", "weather", "today"),
    # Whisper hears the jargon "barge in" as "bargin'" (tiny.en), "VARGen" (base, greedy)
    # or "Varjan" (base, beam 5): the word itself is not checked.
    "tell_me_about_barge_in.wav": ("tell", "about"),
    "count_numbers.wav": ("one", "two", "five", "nine", "ten"),
}

_DIGITS = dict(
    zip(
        "1 2 3 4 5 6 7 8 9 10".split(),
        "one two three four five six seven eight nine ten".split(),
        strict=True,
    )
)


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, digits spelled out (Whisper writes "1 2 3")."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return " ".join(_DIGITS.get(w, w) for w in words)


def read_wav(path: Path) -> bytes:
    data, rate = sf.read(path, dtype="int16")
    assert rate == RATE and data.ndim == 1, f"{path.name} must be 16 kHz mono"
    return bytes(data.tobytes())


@pytest.fixture(scope="session")
def speech_wavs() -> dict[str, bytes]:
    """Every test utterance as 16 kHz mono s16le PCM, by file name."""
    return {name: read_wav(DATA_DIR / name) for name in EXPECTED_WORDS}


@pytest.fixture(scope="session")
def expected_words() -> dict[str, tuple[str, ...]]:
    return EXPECTED_WORDS


@pytest.fixture(scope="session")
def normalize() -> Callable[[str], str]:
    return normalize_text


# --- local OpenAI-format HTTP server (tests/providers/openai_server.py) ----------------

from collections.abc import Iterator  # noqa: E402

from openai_server import LocalOpenAIServer  # noqa: E402


@pytest.fixture(scope="session")
def _openai_server_session() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(_openai_server_session: LocalOpenAIServer) -> Iterator[LocalOpenAIServer]:
    """A real local OpenAI-format HTTP server (one per session), reset for each test."""
    _openai_server_session.reset()
    yield _openai_server_session
    _openai_server_session.reset()  # frees handlers a test left hanging


# --- local ElevenLabs and hybrid-backend servers; keys for the live tests ------------------

from elevenlabs_server import LocalElevenLabsServer  # noqa: E402
from hybrid_server import LocalHybridServer  # noqa: E402


@pytest.fixture(scope="session")
def _elevenlabs_server_session() -> Iterator[LocalElevenLabsServer]:
    with LocalElevenLabsServer() as server:
        yield server


@pytest.fixture
def elevenlabs_server(
    _elevenlabs_server_session: LocalElevenLabsServer,
) -> Iterator[LocalElevenLabsServer]:
    """A real local ElevenLabs-format HTTP + WebSocket server, reset for each test."""
    _elevenlabs_server_session.reset()
    yield _elevenlabs_server_session
    _elevenlabs_server_session.reset()


@pytest.fixture(scope="session")
def _hybrid_server_session() -> Iterator[LocalHybridServer]:
    with LocalHybridServer() as server:
        yield server


@pytest.fixture
def hybrid_server(_hybrid_server_session: LocalHybridServer) -> Iterator[LocalHybridServer]:
    """A real local hybrid backend (SmarterAvatar shape), reset for each test."""
    _hybrid_server_session.reset()
    yield _hybrid_server_session
    _hybrid_server_session.reset()


def _live_key(name: str) -> str:
    key = os.environ.get(name, "")
    if not key:
        pytest.skip(f"live test: set {name} to run it against the real API")
    return key


@pytest.fixture
def openai_live_key() -> str:
    """The real OpenAI key (tests marked ``live`` only); skips when unset."""
    return _live_key("OPENAI_API_KEY")


@pytest.fixture
def elevenlabs_live_key() -> str:
    """The real ElevenLabs key (tests marked ``live`` only); skips when unset."""
    return _live_key("ELEVENLABS_API_KEY")
