"""Knowledge base: ranked search of passages by the database's own engine (SQLite FTS5
+ trigram, PostgreSQL tsvector + pg_trgm), on both backends (``sample_db`` and ``db`` are
parametrized). The pure text helpers are tested in test_passages.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.store.assistants import DEFAULT_ASSISTANT
from gateway.store.db import Database
from gateway.store.documents import add_document, replace_chunks
from gateway.store.knowledge import fts_query, read_folder, trigram_query
from gateway.store.models import Assistant, Chunk, Document
from gateway.store.search import ChunkHit, pg_tsquery, search_chunks

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAMPLE_PASSAGES = 8


async def search(db: Database, question: str, k: int = 3,
                 assistant: str = DEFAULT_ASSISTANT) -> list[ChunkHit]:
    async with db.session() as s:
        return await search_chunks(s, assistant, question, k)


def headings(hits: list[ChunkHit]) -> list[str]:
    """What the retriever calls a passage's title: its heading, else its document's."""
    return [h.heading or h.title for h in hits]


async def chunk_count(db: Database) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Chunk)) or 0)


async def add_assistant(db: Database, assistant_id: str = "kb") -> str:
    async with db.session() as s:
        s.add(Assistant(id=assistant_id, name=assistant_id))
        await s.commit()
    return assistant_id


async def import_folder(db: Database, folder: Path, assistant_id: str) -> None:
    async with db.session() as s:
        for title, content, source in read_folder(folder):
            await add_document(s, assistant_id, title=title, content=content, url=None,
                               meta={"source": source})
        await s.commit()


# --- query injection -----------------------------------------------------------------


ATTACKS = [
    '"a" OR NEAR(',
    '" OR body:*',
    "NEAR(gateway barge, 2)",
    "title:secret OR heading:x",
    "gateway* ^latency -offline +x",
    'a" AND "b',
    "NOT AND OR",
    "{title body}: gateway",
    "'); DROP TABLE chunks; --",
    "a & b | !c <-> d:* ",
    "latency:A & (barge | !offline)",
    "\\' \\\" %s %(q)s :q",
]


def assert_quoted_terms(query: str) -> None:
    """Every FTS5 term is a quoted phrase without quotes inside: no operators get through."""
    for term in filter(None, query.split(" OR ")):
        assert term.startswith('"') and term.endswith('"') and '"' not in term[1:-1]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_fts_operator_injection_is_harmless(sample_db: Database, attack: str) -> None:
    assert_quoted_terms(fts_query(attack))
    assert re.fullmatch(r"(\w+( \| \w+)*)?", pg_tsquery(attack))  # tsquery: words and |
    await search(sample_db, attack)  # must not raise a syntax error from either engine
    assert await chunk_count(sample_db) == SAMPLE_PASSAGES  # nothing dropped


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=80))
async def test_search_never_raises(sample_db: Database, text: str) -> None:
    hits = await search(sample_db, text, k=2)
    assert len(hits) <= 2
    assert all(0.0 <= h.relevance <= 1.0 for h in hits)


# --- ranking on the sample knowledge base ----------------------------------------------


async def test_sample_kb_loads(sample_db: Database) -> None:
    assert await chunk_count(sample_db) == SAMPLE_PASSAGES
    async with sample_db.session() as s:
        docs = (await s.scalars(select(Document).order_by(Document.title))).all()
    assert [(d.title, d.meta["source"]) for d in docs] == [
        ("gateway", "gateway.md"), ("usage", "usage.md")]


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("Tell me about barge-in.", "Barge-in"),
        ("What is barge in?", "Barge-in"),
        ("Can I interrupt the assistant while it is answering?", "Barge-in"),
        ("How do session tokens work?", "Session tokens"),
        ("Does it work offline without an internet connection?", "Offline by default"),
        ("How is latency measured?", "Latency"),
        ("Which cloud providers can I use?", "Cloud providers"),
    ],
)
async def test_ranking(sample_db: Database, question: str, title: str) -> None:
    hits = await search(sample_db, question, k=5)
    assert hits, question
    assert headings(hits)[0] == title
    scores = [h.relevance for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] > 0


async def test_barge_in_passage_content(sample_db: Database) -> None:
    best = (await search(sample_db, "Tell me about barge-in"))[0]
    assert (best.title, best.heading, best.url) == ("gateway", "Barge-in", None)
    assert best.text.startswith("You can interrupt the assistant at any time.")
    assert best.relevance > 0
    async with sample_db.session() as s:
        doc = await s.get(Document, best.document_id)
    assert doc is not None and doc.meta["source"] == "gateway.md"


async def test_k_limits_results(sample_db: Database) -> None:
    question = "gateway offline latency tokens barge"
    assert len(await search(sample_db, question, k=2)) == 2
    assert len(await search(sample_db, question, k=10)) <= SAMPLE_PASSAGES


async def test_no_match(sample_db: Database) -> None:
    for question in ("zebra", "quantum chromodynamics", "", "?"):
        assert await search(sample_db, question) == [], question


async def test_stemming(sample_db: Database) -> None:
    # porter (SQLite) / english (PostgreSQL) stemming: "interrupting" matches "interrupt"
    assert headings(await search(sample_db, "interrupting"))[0] == "Barge-in"


async def test_other_assistants_do_not_see_the_sample(sample_db: Database) -> None:
    assert await search(sample_db, "barge-in", assistant="someone-else") == []


# --- fuzzy (trigram) fallback -------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    # how Whisper hears "barge-in"
    ["Tell me about bargin'", "what is vargen", "bargin", "VARGen"],
)
async def test_fuzzy_fallback_finds_misheard_jargon(sample_db: Database, question: str) -> None:
    assert fts_query(question)  # there are words, but no exact match for them ...
    hits = await search(sample_db, question)
    assert hits and headings(hits)[0] == "Barge-in"  # ... the trigrams still find it


async def test_fuzzy_fallback_respects_k(sample_db: Database) -> None:
    assert 1 < len(await search(sample_db, "teh gatewey")) <= 3
    assert len(await search(sample_db, "teh gatewey", k=1)) == 1


async def test_fuzzy_fallback_only_when_words_do_not_match(sample_db: Database) -> None:
    assert headings(await search(sample_db, "latency")) == ["Latency"]


@pytest.mark.parametrize("attack", ['bargin" OR NEAR(', "barg* OR body:x", "NEAR(bargin",
                                    "bargin' % _ \\"])
async def test_fuzzy_fallback_injection_is_harmless(sample_db: Database, attack: str) -> None:
    assert_quoted_terms(trigram_query(attack))
    await search(sample_db, attack)


# --- writing: documents, updates, deletes, unicode ----------------------------------------


async def test_non_ascii_question_words_match(db: Database) -> None:
    kb = await add_assistant(db)
    async with db.session() as s:
        await add_document(s, kb, title="menu", url=None, meta={},
                           content="# Café\n\nThe café opens at nine. Crème brûlée is served.")
        await s.commit()
    assert headings(await search(db, "café", assistant=kb)) == ["Café"]
    assert headings(await search(db, "Is there crème brûlée?", assistant=kb)) == ["Café"]


async def test_update_and_delete_keep_the_index_in_step(db: Database) -> None:
    kb = await add_assistant(db)
    async with db.session() as s:
        doc = await add_document(s, kb, title="Pets", url="https://example.com/pets",
                                 meta={}, content="Parrots can talk.")
        await s.commit()
    (hit,) = await search(db, "parrots", assistant=kb)
    assert (hit.document_id, hit.url) == (doc.id, "https://example.com/pets")
    async with db.session() as s:
        doc = await s.get(Document, doc.id)
        assert doc is not None
        doc.content = "Tortoises live long."
        await replace_chunks(s, doc)
        await s.commit()
    assert await search(db, "parrots", assistant=kb) == []
    assert [h.document_id for h in await search(db, "tortoises", assistant=kb)] == [doc.id]
    async with db.session() as s:
        await s.delete(await s.get(Document, doc.id))
        await s.commit()
    assert await search(db, "tortoises", assistant=kb) == []
    assert await chunk_count(db) == 0  # chunks went with their document


# --- folders --------------------------------------------------------------------------


async def test_folder_import_and_search(db: Database, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "opening_hours.md").write_text(
        "# Opening hours\n\nWe open at nine.\n\nWe close at five.", "utf-8")
    (tmp_path / "sub" / "parking-info.TXT").write_text("Parking is free on Sundays.", "utf-8")
    (tmp_path / "ignored.rst").write_text("Zebra crossing.", "utf-8")
    kb = await add_assistant(db)
    await import_folder(db, tmp_path, kb)
    assert await chunk_count(db) == 3
    (hours,) = await search(db, "when do you close?", k=1, assistant=kb)
    assert (hours.heading, hours.text) == ("Opening hours", "We close at five.")
    (parking,) = await search(db, "parking", assistant=kb)
    # no heading: the title comes from the file name
    assert (parking.heading, parking.title) == ("", "parking info")
    assert await search(db, "zebra", assistant=kb) == []


async def test_empty_folder(db: Database, tmp_path: Path) -> None:
    kb = await add_assistant(db)
    await import_folder(db, tmp_path, kb)
    assert await chunk_count(db) == 0
    assert await search(db, "anything", assistant=kb) == []
