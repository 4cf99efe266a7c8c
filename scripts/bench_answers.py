"""Compare answer engines on a question set over a knowledge base (text in, text out).

Imports the knowledge base into a fresh database, retrieves passages with the real
retriever for each question (with the previous question as history, as in a call), asks
each engine, and judges the answer with ``gateway eval``'s scoring (facts present, no
number absent from the base, "I don't know" for unanswerable questions). Prints accuracy,
abstention precision/recall, words per answer and time per answer.

Run from the repository root:
  PYTHONPATH=. python scripts/bench_answers.py                       # the museum set
  PYTHONPATH=. python scripts/bench_answers.py eval/scenarios/default.toml --engines grounded
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.evaluation.scoring import abstained, judge, numbers
from gateway.pipeline.answer import query_text
from gateway.providers import registry
from gateway.providers.base import ChatRequest, Message, Passage
from gateway.providers.grounded_llm import GroundedLLM
from gateway.store.assistants import DEFAULT_ASSISTANT, ensure_default_assistant
from gateway.store.db import Database
from gateway.store.knowledge import read_folder, split_passages
from gateway.store.retriever import Retriever
from gateway.store.semantic import SemanticSearch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SET = ROOT / "tests" / "data" / "grounded" / "museum.toml"


@dataclass
class Question:
    ask: str
    facts: list[Any]
    forbid: list[Any] = field(default_factory=list)
    unanswerable: bool = False
    follows: str | None = None  # the previous question of the same conversation
    said: str = ""  # what the caller said, when ``ask`` is what a recogniser heard


def load_set(path: Path) -> tuple[Path, list[Question]]:
    """(knowledge folder, questions) from our format ([[q]] ask) or a ``gateway eval``
    scenario set ([[question]] say, knowledge = folder)."""
    data = tomllib.loads(path.read_text("utf-8"))
    kb = (path.parent / data["knowledge"]).resolve() if "knowledge" in data \
        else path.with_suffix("")
    items = data.get("q") or [*data.get("question", []), *data.get("pause", [])]
    qs = [Question(" ".join((i.get("ask") or i["say"]).replace("|", " ").split()),
                   _facts(i.get("facts", [])), _facts(i.get("forbid", [])),
                   bool(i.get("unanswerable", False)), i.get("follows"))
          for i in items]
    return kb, qs


def heard(questions: list[Question], path: Path) -> list[Question]:
    """The questions as the recogniser heard them (``said`` keeps the words said)."""
    rows = {" ".join(r["said"].split()): r["heard"] for r in json.loads(path.read_text())}
    return [replace(q, ask=rows.get(q.ask, q.ask), said=q.ask) for q in questions]


def _facts(items: list[Any]) -> list[list[str]]:
    return [[f] if isinstance(f, str) else list(f) for f in items]


def dense(passages: list[Passage], query: str, k: int) -> list[Passage]:
    """The k passages nearest the query by MiniLM cosine (stands in for hybrid retrieval)."""
    embedder = registry.create("embedder", "minilm", Config())
    vectors = embedder.embed([query, *(f"{p.title}. {p.text}" for p in passages)])
    sims = vectors[1:] @ vectors[0]
    order = sorted(range(len(passages)), key=lambda i: -sims[i])[:k]
    return [replace(passages[i], score=float(sims[i])) for i in order]


async def passages_for(kb: Path, questions: list[Question], cfg: Config, url: str | None,
                       mode: str) -> list[tuple[list[Message], list[Passage]]]:
    tmp = tempfile.mkdtemp()
    db = Database(url or f"sqlite+aiosqlite:///{tmp}/bench.db")
    await db.migrate()
    await ensure_default_assistant(db, cfg.replace(knowledge={"path": str(kb)}))
    semantic = None
    if mode == "hybrid":
        embedder = registry.create("embedder", "minilm", cfg)

        async def embed(texts: Sequence[str]) -> Any:
            return await asyncio.to_thread(embedder.embed, list(texts))

        semantic = SemanticSearch(db, embed, embedder.name, embedder.dim,
                                  cfg.embedder.min_similarity)
        await semantic.indexer.index_chunks()
    retriever = Retriever(db, semantic)
    everything = [Passage(heading or title, body, source)
                  for title, content, source in read_folder(kb)
                  for heading, body in split_passages(content)]
    out = []
    for q in questions:
        # Each question is a call of its own, as in ``gateway eval``, unless it follows one.
        history = [Message("user", q.follows)] if q.follows else []
        query = query_text([*history, Message("user", q.ask)], q.ask)
        if mode in ("fts", "hybrid"):
            found = await retriever.search(DEFAULT_ASSISTANT, query, cfg.knowledge.top_k)
        else:
            found = dense(everything, query, cfg.knowledge.top_k if mode == "dense" else 99)
        out.append((history, found))
    await db.close()
    return out


def ask(engine: Any, history: list[Message], question: str, passages: list[Any]) -> str:
    request = ChatRequest(messages=[Message("system", Config().llm.system_prompt), *history,
                                    Message("user", question)], passages=passages)
    return "".join(engine.generate(request)).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", nargs="?", type=Path, default=DEFAULT_SET)
    parser.add_argument("--engines", default="grounded,extractive,llama")
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--retrieval", choices=("hybrid", "fts", "dense", "all"),
                        default="hybrid", help="the gateway's retriever (full-text + "
                        "vectors), full-text only, the top passages by embedding, or all")
    parser.add_argument("--top-k", type=int,
                        default=max(Config().knowledge.top_k, GroundedLLM.top_k),
                        help="passages retrieved per question (default: what the runtime "
                        "gives the grounded engine)")
    parser.add_argument("--transcripts", type=Path, help="ask what the recogniser heard: "
                        "the JSON of scripts/bench_stt.py --out (judged against what was said)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every answer")
    args = parser.parse_args()
    cfg = Config().replace(knowledge={"top_k": args.top_k})
    kb, questions = load_set(args.set)
    if args.transcripts:
        questions = heard(questions, args.transcripts)
    known = set().union(*(numbers(t + "\n" + c) for t, c, _ in read_folder(kb)))
    retrieved = asyncio.run(passages_for(kb, questions, cfg, args.db, args.retrieval))
    print(f"{args.set.name}: {len(questions)} questions "
          f"({sum(q.unanswerable for q in questions)} unanswerable), knowledge {kb.name}")
    for name in args.engines.split(","):
        engine = registry.create("llm", name, cfg)
        ask(engine, [], "warm up", [])
        right = 0
        words, times = [], []
        abst_tp = abst_fp = abst_fn = invented = 0
        for q, (history, passages) in zip(questions, retrieved, strict=True):
            started = time.perf_counter()
            answer = ask(engine, history, q.ask, passages)
            times.append((time.perf_counter() - started) * 1000)
            v = judge(answer, facts=q.facts, forbid=q.forbid, unanswerable=q.unanswerable,
                      known_numbers=known, question=q.said or q.ask)
            right += v.correct
            invented += bool(v.invented)
            did = abstained(answer)
            abst_tp += did and q.unanswerable
            abst_fp += did and not q.unanswerable
            abst_fn += (not did) and q.unanswerable
            if not did:
                words.append(len(answer.split()))
            if args.verbose or not v.correct:
                mark = "ok " if v.correct else "BAD"
                print(f"  {mark} [{name}] {q.ask!r} -> {answer!r} {v.reason}")
        n = len(questions)
        precision = abst_tp / (abst_tp + abst_fp) if abst_tp + abst_fp else 1.0
        recall = abst_tp / (abst_tp + abst_fn) if abst_tp + abst_fn else 1.0
        print(f"{name:>10}: correct {right}/{n} ({100 * right / n:.0f} %), answers with "
              f"invented numbers {invented}, abstention precision {precision:.2f} recall "
              f"{recall:.2f}, words/answer mean {statistics.mean(words or [0]):.1f} max "
              f"{max(words or [0])}, ms/answer median {statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
