"""``extractive``: answers with the best-matching knowledge-base passage. Deterministic.

For tests, for benchmarks of the rest of the pipeline, and for machines without the
local model: it never invents anything, it only reads back what the knowledge base
says (the runtime retrieves the passages and passes them in the request).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.config import Config
from gateway.pipeline.answer import ABSTAIN

from .base import ChatRequest

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Whatever the knowledge base is about: no fixed text about the gateway itself.
FALLBACK = ABSTAIN


class ExtractiveLLM:
    name = "extractive"
    speculative = True  # selects, never generates or calls: safe to run ahead

    def __init__(self, max_sentences: int = 2) -> None:
        self.max_sentences = max_sentences

    @classmethod
    def from_config(cls, cfg: Config) -> ExtractiveLLM:
        return cls()

    def answer(self, request: ChatRequest) -> str:
        if not request.passages:
            return FALLBACK
        best = request.passages[0]
        sentences = _SENTENCE.split(best.text.strip())
        return " ".join(sentences[: self.max_sentences])

    def generate(self, request: ChatRequest) -> Iterator[str]:
        # Word by word, so downstream streaming behaves as with a real model.
        words = self.answer(request).split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
