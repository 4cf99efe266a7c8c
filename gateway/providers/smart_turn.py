"""Smart Turn v3.2: semantic end of turn from the sound of the last seconds of speech.

The model (BSD-2-Clause, Daily) is ``smart-turn-v3.2-cpu.onnx`` inside the ``pipecat-ai``
wheel, installed with ``--no-deps`` only for that file: pipecat itself is never imported
(its package directory is found without executing it). Input, as pipecat feeds it: the
last 8 s of 16 kHz audio, zero-padded at the START, normalised to zero mean and unit
variance, as 80 x 800 Whisper log-mel features (faster-whisper's extractor computes the
same features as transformers' in numpy). Output: the probability that the turn is
complete. About 16 ms of features and 60-90 ms of model per check on one core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import Config

from .base import ProviderError
from .whisper_stt import package_dir

SAMPLE_RATE = 16000
WINDOW_S = 8
_MODEL = ("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")
_NORM_EPS = 1e-7


def model_path() -> Path:
    path = package_dir("pipecat").joinpath(*_MODEL)
    if not path.is_file():
        raise ProviderError(f"smart turn model missing: {path}", retryable=False)
    return path


def feature_extractor() -> Any:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=160,
                            chunk_length=WINDOW_S, n_fft=400)


def features(pcm: bytes, extractor: Any) -> np.ndarray:
    """(1, 80, 800) float32 log-mel features of the last 8 s of 16 kHz mono s16le audio."""
    n = SAMPLE_RATE * WINDOW_S
    audio = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")[-n:].astype(np.float32)
    audio *= 1.0 / 32768.0
    # Zero padding at the start: the model was trained with the speech's end at the end.
    x = np.zeros(n, dtype=np.float32)
    x[n - audio.size:] = audio
    x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
    log_mel = extractor(x, padding=0)  # stateless once built: shared by threads
    return np.asarray(log_mel, dtype=np.float32)[np.newaxis]


class SmartTurn:
    """Thread-safe (onnxruntime sessions are); one intra-op thread per check, so the
    pool size bounds the cores it takes."""

    name = "smart_turn"

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = max(1, threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = path or model_path()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ProviderError(f"cannot load smart turn model from {path}: {exc}") from exc
        self._extractor = feature_extractor()

    @classmethod
    def from_config(cls, cfg: Config) -> SmartTurn:
        return cls()

    def end_probability(self, pcm: bytes) -> float:
        """Probability (0..1) that the speech in ``pcm`` (16 kHz s16le, ending now) is a
        finished turn."""
        if len(pcm) < 2:
            return 0.0
        feats = features(pcm, self._extractor)
        try:
            out = self._session.run(None, {"input_features": feats})
        except Exception as exc:
            raise ProviderError(f"smart turn check failed: {exc}") from exc
        return float(np.asarray(out[0]).reshape(-1)[0])
