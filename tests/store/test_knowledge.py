"""Knowledge base: passage splitting, FTS query building, BM25 ranking, folder loading."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.providers.base import Passage
from gateway.store.knowledge import (
    SAMPLE_KNOWLEDGE,
    KnowledgeBase,
    fts_query,
    split_passages,
    trigram_query,
)


@pytest.fixture(scope="module")
def sample_kb() -> KnowledgeBase:
    return KnowledgeBase.from_folder(SAMPLE_KNOWLEDGE)


# --- split_passages ------------------------------------------------------------------


def test_split_at_headings_and_paragraphs() -> None:
    text = (
        "Intro paragraph\nwith two lines.\n\n"
        "# First heading\n\nPara one.\n\nPara two.\n\n"
        "## Second heading\nBody right under the heading.\n   \n"  # blank line with spaces
        "# Empty heading\n\n"
        "# Third\nLast.\n"
    )
    assert split_passages(text) == [
        ("", "Intro paragraph with two lines."),
        ("First heading", "Para one."),
        ("First heading", "Para two."),
        ("Second heading", "Body right under the heading."),
        ("Third", "Last."),
    ]


def test_split_empty() -> None:
    assert split_passages("") == []
    assert split_passages("\n\n   \n") == []
    assert split_passages("# Only a heading\n\n## And another") == []


def test_long_paragraph_is_cut_at_sentence_ends() -> None:
    sentence = "This sentence is exactly forty chars ok. "
    assert len(sentence) == 41
    text = sentence * 10
    parts = split_passages(text, max_chars=100)
    assert all(len(body) <= 100 for _, body in parts)
    assert all(body.endswith(".") for _, body in parts)
    assert " ".join(body for _, body in parts) == text.strip()


def test_long_paragraph_without_sentence_ends_is_cut_hard() -> None:
    parts = split_passages("x" * 250, max_chars=100)
    assert [len(body) for _, body in parts] == [100, 100, 50]


def test_sample_kb_files_split_into_sections() -> None:
    text = (SAMPLE_KNOWLEDGE / "gateway.md").read_text("utf-8")
    headings = [h for h, _ in split_passages(text)]
    assert headings == ["What the gateway is", "How a turn works", "Offline by default", "Barge-in"]


# --- fts_query ------------------------------------------------------------------------


def test_fts_query_content_words() -> None:
    assert fts_query("Tell me about Barge-in, please!") == '"barge-in"'
    assert fts_query("How do session TOKENS work? tokens") == '"session" OR "tokens" OR "work"'


def test_fts_query_only_stopwords_falls_back_to_all_words() -> None:
    assert fts_query("what is it") == '"what" OR "is" OR "it"'


def test_fts_query_empty() -> None:
    for q in ("", "   ", "?!", "a", "I", "¿¡"):
        assert fts_query(q) == ""


def test_fts_query_caps_the_number_of_terms() -> None:
    q = fts_query(" ".join(f"word{i}" for i in range(100)))
    assert q.count(" OR ") == 31


@pytest.mark.parametrize(
    "attack",
    [
        '"a" OR NEAR(',
        '" OR body:*',
        "NEAR(gateway barge, 2)",
        "title:secret OR heading:x",
        "gateway* ^latency -offline +x",
        'a" AND "b',
        "NOT AND OR",
        "{title body}: gateway",
        "'); DROP TABLE passages; --",
    ],
)
def test_fts_operator_injection_is_harmless(sample_kb: KnowledgeBase, attack: str) -> None:
    query = fts_query(attack)
    # every term is a quoted phrase without quotes inside: no operators reach FTS5
    for term in filter(None, query.split(" OR ")):
        assert term.startswith('"') and term.endswith('"') and '"' not in term[1:-1]
    sample_kb.search(attack)  # must not raise sqlite3.OperationalError
    assert sample_kb.count == 8  # nothing dropped


def test_near_injection_becomes_a_plain_word() -> None:
    assert fts_query('"a" OR NEAR(') == '"near"'


@settings(max_examples=150, deadline=None, database=None)
@given(st.text(max_size=80))
def test_search_never_raises(text: str) -> None:
    kb = _SHARED_KB
    try:
        results = kb.search(text, k=2)
    except sqlite3.Error as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"search({text!r}) raised {exc!r}")
    assert len(results) <= 2


_SHARED_KB = KnowledgeBase.from_folder(SAMPLE_KNOWLEDGE)


# --- ranking on the sample knowledge base ---------------------------------------------


def test_sample_kb_loads(sample_kb: KnowledgeBase) -> None:
    assert sample_kb.count == 8


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
def test_ranking(sample_kb: KnowledgeBase, question: str, title: str) -> None:
    results = sample_kb.search(question)
    assert results, question
    assert results[0].title == title
    assert [p.score for p in results] == sorted((p.score for p in results), reverse=True)


def test_barge_in_passage_content(sample_kb: KnowledgeBase) -> None:
    best = sample_kb.search("Tell me about barge-in")[0]
    assert isinstance(best, Passage)
    assert best.source == "gateway.md"
    assert best.text.startswith("You can interrupt the assistant at any time.")
    assert best.score > 0


def test_k_limits_results(sample_kb: KnowledgeBase) -> None:
    assert len(sample_kb.search("gateway offline latency tokens barge", k=2)) == 2
    assert len(sample_kb.search("gateway offline latency tokens barge", k=10)) <= 8


def test_no_match(sample_kb: KnowledgeBase) -> None:
    assert sample_kb.search("zebra") == []
    assert sample_kb.search("quantum chromodynamics") == []
    assert sample_kb.search("") == []
    assert sample_kb.search("?") == []


def test_stemming(sample_kb: KnowledgeBase) -> None:
    # porter tokenizer: "interrupting" matches "interrupt"
    assert sample_kb.search("interrupting")[0].title == "Barge-in"


# --- fuzzy (trigram) fallback -------------------------------------------------------------


def test_trigram_query() -> None:
    assert trigram_query("Tell me about bargin'") == '"bar" OR "arg" OR "rgi" OR "gin"'
    assert trigram_query("what is it") == ""  # stopwords and words under 4 letters
    assert trigram_query("gate gate") == '"gat" OR "ate"'  # de-duplicated
    assert trigram_query(" ".join(f"w{i:03d}xyz" for i in range(50))).count(" OR ") == 63


@pytest.mark.parametrize(
    "question",
    ["Tell me about bargin'", "what is vargen", "bargin"],  # how Whisper hears "barge-in"
)
def test_fuzzy_fallback_finds_misheard_jargon(sample_kb: KnowledgeBase, question: str) -> None:
    assert fts_query(question)  # there are words, but no exact match for them ...
    results = sample_kb.search(question)
    assert results and results[0].title == "Barge-in"  # ... the trigrams still find it


def test_fuzzy_fallback_respects_k(sample_kb: KnowledgeBase) -> None:
    assert 1 < len(sample_kb.search("teh gatewey")) <= 3
    assert len(sample_kb.search("teh gatewey", k=1)) == 1


def test_fuzzy_fallback_only_when_words_do_not_match(sample_kb: KnowledgeBase) -> None:
    exact = sample_kb.search("latency")
    assert [p.title for p in exact] == ["Latency"]


@pytest.mark.parametrize("attack", ['bargin" OR NEAR(', "barg* OR body:x", "NEAR(bargin"])
def test_fuzzy_fallback_injection_is_harmless(sample_kb: KnowledgeBase, attack: str) -> None:
    for term in filter(None, trigram_query(attack).split(" OR ")):
        assert term.startswith('"') and term.endswith('"') and '"' not in term[1:-1]
    sample_kb.search(attack)


def test_non_ascii_question_words_match() -> None:
    kb = KnowledgeBase()
    kb.add("menu", "# Café\n\nThe café opens at nine. Crème brûlée is served daily.", source="m")
    assert [p.title for p in kb.search("café")] == ["Café"]
    assert [p.title for p in kb.search("Is there crème brûlée?")] == ["Café"]


# --- from_folder -----------------------------------------------------------------------


def test_from_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "opening_hours.md").write_text(
        "# Opening hours\n\nWe open at nine.\n\nWe close at five.", "utf-8"
    )
    (tmp_path / "sub" / "parking-info.TXT").write_text("Parking is free on Sundays.", "utf-8")
    (tmp_path / "ignored.rst").write_text("Zebra crossing.", "utf-8")
    (tmp_path / "ignored.json").write_text('{"zebra": 1}', "utf-8")
    kb = KnowledgeBase.from_folder(tmp_path)
    assert kb.count == 3
    (hours,) = kb.search("when do you close?", k=1)
    assert hours == Passage(
        title="Opening hours",
        text="We close at five.",
        source="opening_hours.md",
        score=hours.score,
    )
    (parking,) = kb.search("parking")
    # no heading: the title comes from the file name
    assert parking.title == "parking info"
    assert parking.source == "sub/parking-info.TXT"
    assert kb.search("zebra") == []


def test_from_empty_folder(tmp_path: Path) -> None:
    kb = KnowledgeBase.from_folder(tmp_path)
    assert kb.count == 0 and kb.search("anything") == []


def test_add_rows_and_count() -> None:
    kb = KnowledgeBase()
    assert kb.add("t", "# H\n\nOne.\n\nTwo.", source="s") == 2
    assert kb.add_rows([("t2", "", "Three apples.", "s2")]) == 1
    assert kb.count == 3
    (p,) = kb.search("apples")
    assert (p.title, p.source) == ("t2", "s2")
