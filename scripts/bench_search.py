#!/usr/bin/env python3
"""Measures the sentence embedder and hybrid search (README, "Semantic search" figures).

    PYTHONPATH=. .venv/bin/python scripts/bench_search.py            # SQLite in a temp dir
    PYTHONPATH=. .venv/bin/python scripts/bench_search.py --db-url postgresql+asyncpg://...

1. Embedding cost: ms per sentence alone and in batches of 32 (one thread).
2. Retrieval quality, recall@3 of full-text only, vectors only and hybrid (RRF):
   a. paraphrases: 20 questions that share no content word with their answer;
   b. the evaluation scenarios (eval/scenarios/default.toml over eval/knowledge/pool):
      a hit is a passage that contains the question's first expected fact. Also the
      best score of answerable vs unanswerable questions (what an abstention threshold sees).
3. Import cost: documents written, then their passages and sentences embedded.
4. Search latency at 1k and 10k passages (synthetic text; random unit vectors, as the
   latency does not depend on what they mean): full-text only vs hybrid, with the
   question's embedding included.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import text

from gateway.config import Config
from gateway.providers.minilm_embedder import MiniLMEmbedder
from gateway.store.db import Database
from gateway.store.documents import add_document
from gateway.store.knowledge import read_folder
from gateway.store.models import Assistant
from gateway.store.search import search_chunks
from gateway.store.semantic import SemanticSearch
from gateway.store.vectors import Vectors, to_blob

ROOT = Path(__file__).resolve().parent.parent
MUSEUM = """# Opening hours
The museum is open from 9 am to 5 pm, Tuesday to Sunday. It is closed on Mondays.

# Tickets
Admission is 12 euros for adults and 6 euros for students. Children under six go free.

# Pets
Dogs are welcome in the garden on a leash but not inside the galleries.

# Parking
There is a car park behind the station with 200 spaces; it costs 4 euros a day.

# Food
The cafe on the ground floor serves sandwiches, soup and coffee until 4 pm.

# Accessibility
Wheelchairs can be borrowed at the front desk, and every floor has a lift.

# Photography
Taking pictures is allowed without flash; tripods are not permitted.

# Tours
Guided tours start at 11 am and 2 pm and last ninety minutes.

# Lockers
Large bags and umbrellas must be left in the lockers near the entrance.

# Gift shop
The shop sells postcards, books and prints of the collection.
"""
# (question, heading of the passage that answers it): no content word in common.
PARAPHRASES = [
    ("when can I come by", "Opening hours"), ("what days are you shut", "Opening hours"),
    ("how much does it cost to get in", "Tickets"), ("is it free for my toddler", "Tickets"),
    ("may I bring my puppy along", "Pets"), ("where should I leave my vehicle", "Parking"),
    ("is there somewhere to eat lunch", "Food"), ("can I grab a bite", "Food"),
    ("I use a wheelchair, is that a problem", "Accessibility"),
    ("are there elevators", "Accessibility"), ("can I film or snap photos", "Photography"),
    ("is a camera stand okay", "Photography"), ("is there someone to show us around", "Tours"),
    ("what time does the guide begin", "Tours"), ("what do I do with my backpack", "Lockers"),
    ("can I buy souvenirs", "Gift shop"), ("do you sell art reproductions", "Gift shop"),
    ("how pricey is it for a university pupil", "Tickets"),
    ("what about my rucksack", "Lockers"), ("are animals allowed", "Pets"),
]


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_embedder(emb: MiniLMEmbedder) -> None:
    sentences = [f"The library on street {i} closes at {i % 12 + 1} pm on weekdays."
                 for i in range(256)]
    emb.embed(sentences[:8])
    for batch in (1, 32):
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, 128, batch):
            emb.embed(sentences[i : i + batch])
        ms = (time.perf_counter() - started) * 1000 / 128
        cpu_ms = (time.process_time() - cpu) * 1000 / 128
        print(f"embedding: {ms:.2f} ms wall, {cpu_ms:.2f} ms CPU per sentence in batches "
              f"of {batch}")


async def load(db: Database, assistant: str, docs: list[tuple[str, str]]) -> None:
    async with db.session() as s:
        s.add(Assistant(id=assistant, name=assistant))
        await s.flush()
        for title, content in docs:
            await add_document(s, assistant, title=title, content=content, url=None, meta={})
        await s.commit()


async def ranked(db: Database, sem: SemanticSearch, assistant: str,
                 question: str) -> dict[str, list[str]]:
    """Top-3 passage texts (heading + text) by each method."""
    async with db.session() as s:
        fts = await search_chunks(s, assistant, question, 3)
        query = await sem.vector(question)
        assert query is not None
        near = await sem.index.top(s, assistant, query, 3)
        texts = {r[0]: f"{r[1]}\n{r[2]}" for r in await s.execute(text(
            "SELECT id, heading, text FROM chunks WHERE assistant_id = :a"), {"a": assistant})}
        hybrid = await sem.chunks(s, assistant, question, 3, floor=0.0)  # as the LLM's
    return {"fts": [f"{h.heading}\n{h.text}" for h in fts],
            "vector": [texts[cid] for cid, _ in near],
            "hybrid": [f"{h.heading}\n{h.text}" for h in hybrid],
            "best": [str(max((h.relevance for h in hybrid), default=0.0))]}


def fact_pattern(fact: str | list[str]) -> re.Pattern[str]:
    alternatives = fact if isinstance(fact, list) else [fact]
    parts = [a[3:] if a.startswith("re:") else r"\b" + re.escape(a) + r"\b"
             for a in alternatives]
    return re.compile("|".join(parts), re.IGNORECASE)


async def bench_quality(db: Database, sem: SemanticSearch) -> None:
    await load(db, "museum", [("Museum", MUSEUM)])
    await load(db, "pool", [(t, c) for t, c, _ in read_folder(ROOT / "eval/knowledge/pool")])
    await sem.indexer.index_chunks()
    hits = {"fts": 0, "vector": 0, "hybrid": 0}
    for question, heading in PARAPHRASES:
        found = await ranked(db, sem, "museum", question)
        for method in hits:
            hits[method] += any(t.startswith(heading + "\n") for t in found[method])
    n = len(PARAPHRASES)
    print(f"recall@3, {n} paraphrases (no shared word): "
          + ", ".join(f"{m} {v / n:.0%}" for m, v in hits.items()))
    scenarios = tomllib.loads((ROOT / "eval/scenarios/default.toml").read_text())
    hits = {"fts": 0, "vector": 0, "hybrid": 0}
    answerable, unanswerable = [], []
    for q in scenarios["question"]:
        found = await ranked(db, sem, "pool", q["say"])
        best = float(found["best"][0])
        if q.get("unanswerable"):
            unanswerable.append(best)
            continue
        answerable.append(best)
        pattern = fact_pattern(q["facts"][0])
        for method in hits:
            hits[method] += any(pattern.search(t) for t in found[method])
    n = len(answerable)
    print(f"recall@3, {n} evaluation questions (pool): "
          + ", ".join(f"{m} {v / n:.0%}" for m, v in hits.items()))
    print(f"best hybrid score: answerable median {statistics.median(answerable):.2f} "
          f"(min {min(answerable):.2f}); unanswerable median "
          f"{statistics.median(unanswerable):.2f} (max {max(unanswerable):.2f})")


def synthetic(i: int, rng: np.random.Generator) -> tuple[str, str]:
    words = ["pool", "museum", "library", "park", "station", "market", "school", "garden"]
    days = ["Monday", "Tuesday", "Friday", "Sunday"]
    place = f"{words[i % 8]} {i}"
    return (f"Note {i}", f"# {place.title()}\nThe {place} opens at {rng.integers(6, 11)} am "
            f"on {days[i % 4]}. Entry costs {rng.integers(1, 30)} euros. "
            f"Ask at desk {i % 97} about group visits.")


async def bench_import(db: Database, sem: SemanticSearch) -> None:
    rng = np.random.default_rng(0)
    docs = [synthetic(i, rng) for i in range(200)]
    started = time.perf_counter()
    await load(db, "imported", docs)
    written = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    n = await sem.indexer.index_chunks("imported")
    embedded, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"import: {len(docs)} documents written in {written * 1000:.0f} ms; their {n} "
          f"passages (3 sentences each) embedded in {embedded:.1f} s wall, {cpu:.1f} s CPU "
          f"({cpu / n * 1000:.1f} ms CPU per passage)")


async def bench_latency(db: Database, sem: SemanticSearch, size: int) -> None:
    rng = np.random.default_rng(size)
    assistant = f"big{size}"
    await load(db, assistant, [synthetic(i, rng) for i in range(size)])
    vecs = rng.standard_normal((size, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    async with db.session() as s:
        ids = [r[0] for r in await s.execute(text(
            "SELECT id FROM chunks WHERE assistant_id = :a ORDER BY id"), {"a": assistant})]
        await s.execute(text("UPDATE chunks SET embedding = :e, sentence_embeddings = :e, "
                             "embedder = :m, embedded_at = :t WHERE id = :id"),
                        [{"id": cid, "e": to_blob(vecs[i : i + 1]), "m": sem.embedder,
                          "t": time.time()} for i, cid in enumerate(ids)])
        await s.commit()
    questions = ["when does the library open on friday", "how much is entry to the market",
                 "can groups visit the garden", "what does the pool cost"] * 10
    timings: dict[str, list[float]] = {"fts": [], "hybrid": []}
    async with db.session() as s:
        await sem.chunks(s, assistant, "warm up the index", 3)  # loads the matrix once
        for q in questions:
            started = time.perf_counter()
            await search_chunks(s, assistant, q, 3)
            timings["fts"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await sem.chunks(s, assistant, q, 3)
            timings["hybrid"].append(time.perf_counter() - started)
    print(f"search, {size} passages: " + ", ".join(
        f"{m} p50 {pct(t, 50) * 1000:.1f} ms p95 {pct(t, 95) * 1000:.1f} ms"
        for m, t in timings.items()))


async def main(db_url: str | None, sizes: list[int]) -> None:
    emb = MiniLMEmbedder.from_config(Config())
    bench_embedder(emb)

    async def embed(texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(emb.embed, texts)

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(db_url or f"sqlite+aiosqlite:///{tmp}/bench.db")
        await db.migrate()
        sem = SemanticSearch(db, embed, emb.name, emb.dim, Config().embedder.min_similarity)
        print(f"database: {db.dialect}")
        await bench_quality(db, sem)
        await bench_import(db, sem)
        for size in sizes:
            await bench_latency(db, sem, size)
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db-url", help="an empty database (default: SQLite in a temp dir)")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    asyncio.run(main(args.db_url, [int(x) for x in args.sizes.split(",")]))
