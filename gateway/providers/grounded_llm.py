"""``grounded`` (the default): a short answer selected from the knowledge base, or "I
don't know". No text generation, so nothing can be invented.

The runtime retrieves the passages; this provider embeds the query and every sentence
of them (sentence vectors are cached: a knowledge base's sentences come back often) and
lets ``gateway.pipeline.answer`` pick the sentence or clause that answers, or abstain.
About 5-10 ms after retrieval on one core (one query embedding; sentences cached).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import structlog

from gateway.config import Config
from gateway.pipeline.answer import (
    ABSTAIN,
    Answer,
    Unit,
    Weights,
    choose,
    fold,
    heard_as,
    offered_thing,
    query_text,
    split_units,
    unit_words,
    unnamed,
)

from .base import ChatRequest, Embedder, ProviderError

log = structlog.get_logger("gateway.grounded")
# Without an embedder the words alone decide: a unit must share half the question's
# content words (and the right kind of fact helps).
LEXICAL_ONLY = Weights(similarity=0.0, lexical=1.0, kind=0.2, floor=0.5, min_similarity=-1.0)


class GroundedLLM:
    name = "grounded"
    speculative = True  # selects, never generates or calls: safe to run ahead
    # Passages it reads (the runtime retrieves at least this many): it speaks one
    # sentence of them, so more candidates cost no prompt length, and the fifth passage
    # held the answer where the top three did not ("how late on a Saturday?": 27/30 on
    # the pool set against 26/30 with 3, 36/38 against 35/38 on the museum set).
    top_k = 5

    def __init__(self, embedder: Embedder | None, *, weights: Weights | None = None,
                 cache_size: int = 4096) -> None:
        self.embedder = embedder
        self.weights = weights or (Weights() if embedder is not None else LEXICAL_ONLY)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> GroundedLLM:
        from . import registry

        embedder: Embedder | None = None
        if cfg.embedder.provider != "null":
            try:  # the embedder caches its model per process: this is the runtime's one
                embedder = registry.create("embedder", cfg.embedder.provider, cfg)
            except ProviderError as exc:
                log.warning("grounded_without_embedder", error=str(exc),
                            note="answers chosen by their words only")
        return cls(embedder)

    def answer(self, request: ChatRequest) -> Answer:
        units = split_units(request.passages)
        query = query_text(request.messages, request.question)
        if not units:
            return choose(query, [], [], self.weights)
        answer = self._choose(query, units)
        if answer.abstained:
            # Nothing answers the words as heard: try the base's own words a letter away
            # from those it lacks (a recogniser's "big tool" for "big pool").
            fixed = heard_as(query, units)
            if fixed != fold(query):
                return self._choose(fixed, units)
        return answer

    def _choose(self, query: str, units: Sequence[Unit]) -> Answer:
        answer = choose(query, units, self.similarities(query, units), self.weights)
        if answer.abstained or answer.best is None:
            return answer
        missing = unnamed(offered_thing(query), units)
        if missing and not self._named_nearby(missing, answer.best.unit):
            return Answer(ABSTAIN, True, answer.best)
        return answer

    def _named_nearby(self, words: Sequence[str], unit: Unit) -> bool:
        """Whether each of ``words`` (absent from the passages) has a near word in
        ``unit`` ("kids" -> "children"): then the unit may still be about that thing."""
        theirs = unit_words(unit)
        if self.embedder is None or not theirs:
            return False
        vectors = self.embedder.embed([*words, *theirs])
        if vectors.shape[0] != len(words) + len(theirs):
            raise ProviderError("the embedder returned the wrong number of vectors")
        nearest = (vectors[: len(words)] @ vectors[len(words):].T).max(axis=1)
        return bool(nearest.min() >= self.weights.offer_neighbour)

    def similarities(self, query: str, units: Sequence[Unit]) -> list[float]:
        """The mean of the query's cosine to each sentence alone (what it says) and under
        its heading (what it is about): either alone ranks worse on our question sets."""
        both = self._similarities(query, [u.text for u in units]
                                  + [u.embed_text for u in units])
        n = len(units)
        return [(a + b) / 2 for a, b in zip(both[:n], both[n:], strict=True)]

    def generate(self, request: ChatRequest) -> Iterator[str]:
        # Word by word, as a model streams: TTS starts on the first sentence or clause.
        words = self.answer(request).text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word

    def _similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        if self.embedder is None:
            return [0.0] * len(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        vectors = self.embedder.embed([query, *missing])
        if vectors.shape[0] != len(missing) + 1:
            raise ProviderError("the embedder returned the wrong number of vectors")
        with self._lock:
            for text, vector in zip(missing, vectors[1:], strict=True):
                self._cache[text] = vector
            rows = []
            for text in texts:
                self._cache.move_to_end(text)
                rows.append(self._cache[text])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [float(x) for x in np.stack(rows) @ vectors[0]]
