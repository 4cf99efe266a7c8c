"""Silero VAD (v5+) on plain onnxruntime: one shared session, per-session RNN state.

The ``silero_vad`` package is never imported (it pulls in torch); only its bundled
``data/silero_vad.onnx`` is used. At 16 kHz the model takes 512-sample windows
preceded by the last 64 samples of the previous window (the "context"), plus the
recurrent state ``(2, 1, 128)``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gateway.config import Config

from .base import ProviderError

SAMPLE_RATE = 16000
WINDOW = 512  # samples per model call at 16 kHz
CONTEXT = 64  # samples of the previous window the v5 model expects in front
_STATE_SHAPE = (2, 1, 128)
_SR = np.array(SAMPLE_RATE, dtype=np.int64)
# Silero's own iterator leaves speech only below threshold - 0.15 (hysteresis).
_HYSTERESIS = 0.15
_EXPECTED_INPUTS = {"input", "state", "sr"}


def model_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError("the silero-vad package is not installed", retryable=False)
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise ProviderError(f"silero VAD model missing at {path}", retryable=False)
    return path


def load_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One thread per call: many sessions run in parallel, each window is tiny.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ProviderError(f"cannot load silero VAD model {path}: {exc}") from exc
    names = {i.name for i in session.get_inputs()}
    if names != _EXPECTED_INPUTS:
        raise ProviderError(
            f"unexpected silero VAD inputs {sorted(names)}; need {sorted(_EXPECTED_INPUTS)}",
            retryable=False,
        )
    return session


class SileroVADStream:
    """Buffers 10/20/30 ms frames into 512-sample windows; keeps the RNN state."""

    __slots__ = ("_buf", "_fill", "_neg", "_run", "_speaking", "_state", "_thr", "last_prob")

    def __init__(self, session: ort.InferenceSession, threshold: float) -> None:
        self._run = session.run
        self._thr = threshold
        self._neg = max(threshold - _HYSTERESIS, 0.01)
        # [context | window]: the model input is this whole buffer.
        self._buf: npt.NDArray[np.float32] = np.zeros((1, CONTEXT + WINDOW), np.float32)
        self._fill = 0
        self._state: npt.NDArray[np.float32] = np.zeros(_STATE_SHAPE, np.float32)
        self._speaking = False
        self.last_prob = 0.0

    def is_speech(self, frame: bytes) -> bool:
        """Decision of the latest complete window (lags the frame by < 32 ms)."""
        try:
            x = np.frombuffer(frame, dtype="<i2")
        except ValueError as exc:
            raise ProviderError(f"odd-length PCM frame ({len(frame)} bytes)") from exc
        pos, n = 0, len(x)
        while pos < n:
            take = min(WINDOW - self._fill, n - pos)
            start = CONTEXT + self._fill
            self._buf[0, start : start + take] = x[pos : pos + take] * (1.0 / 32768.0)
            self._fill += take
            pos += take
            if self._fill == WINDOW:
                self._infer()
        return self._speaking

    def _infer(self) -> None:
        try:
            out, state = self._run(
                ["output", "stateN"], {"input": self._buf, "state": self._state, "sr": _SR}
            )
        except Exception as exc:
            raise ProviderError(f"silero VAD inference failed: {exc}") from exc
        self._state = state
        prob = float(out[0, 0])
        self.last_prob = prob
        self._speaking = prob >= (self._neg if self._speaking else self._thr)
        # The last 64 samples become the next window's context.
        self._buf[0, :CONTEXT] = self._buf[0, WINDOW:]
        self._fill = 0


class SileroVAD:
    name = "silero"
    sample_rate = SAMPLE_RATE

    def __init__(self, threshold: float = 0.5, path: Path | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ProviderError("silero threshold must be within (0, 1)", retryable=False)
        self.threshold = threshold
        self._session = load_session(path or model_path())

    @classmethod
    def from_config(cls, cfg: Config) -> SileroVAD:
        return cls(cfg.vad.silero_threshold)

    def stream(self, frame_ms: int, threshold: float | None = None) -> SileroVADStream:
        """``threshold``: a per-session speech probability threshold (0..1)."""
        # Any frame length works: frames are re-cut into model windows.
        thr = self.threshold if threshold is None else min(max(threshold, 0.05), 0.95)
        return SileroVADStream(self._session, thr)
