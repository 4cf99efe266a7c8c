"""Knowledge-base text handling (pure): passages, query building, folder reading.

The searches themselves run in the database: see test_knowledge.py.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.knowledge import (
    SAMPLE_KNOWLEDGE,
    close_match,
    fts_query,
    read_folder,
    split_passages,
    trigram_query,
)
from gateway.store.search import pg_tsquery


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
    assert [h for h, _ in split_passages(text)] == [
        "What the gateway is", "How a turn works", "Offline by default", "Barge-in"]


def test_fts_query_content_words() -> None:
    assert fts_query("Tell me about Barge-in, please!") == '"barge-in"'
    assert fts_query("How do session TOKENS work? tokens") == '"session" OR "tokens" OR "work"'


def test_fts_query_only_stopwords_falls_back_to_all_words() -> None:
    assert fts_query("what is it") == '"what" OR "is" OR "it"'


def test_fts_query_empty() -> None:
    for q in ("", "   ", "?!", "a", "I", "¿¡"):
        assert fts_query(q) == ""
        assert pg_tsquery(q) == ""


def test_fts_query_caps_the_number_of_terms() -> None:
    q = fts_query(" ".join(f"word{i}" for i in range(100)))
    assert q.count(" OR ") == 31


def test_pg_tsquery_is_words_joined_by_or() -> None:
    assert pg_tsquery("Tell me about Barge-in, please!") == "barge | in"
    # (the FTS5 "OR"s come along as a word: harmless, "or" is an English stop word)
    assert set(pg_tsquery("How do session TOKENS work?").split(" | ")) - {"OR"} == {
        "session", "tokens", "work"}


def test_near_injection_becomes_a_plain_word() -> None:
    assert fts_query('"a" OR NEAR(') == '"near"'


def test_trigram_query() -> None:
    assert trigram_query("Tell me about bargin'") == '"bar" OR "arg" OR "rgi" OR "gin"'
    assert trigram_query("what is it") == ""  # stopwords and words under 4 letters
    assert trigram_query("gate gate") == '"gat" OR "ate"'  # de-duplicated
    assert trigram_query(" ".join(f"w{i:03d}xyz" for i in range(50))).count(" OR ") == 63


def test_close_match() -> None:
    assert close_match("bargin", "barge-in")
    assert close_match("VARGen", "barge-in")
    assert not close_match("zebra", "barge-in")
    assert not close_match("what is it", "what is it")  # stopwords never count


def test_read_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "opening_hours.md").write_text("# Opening hours\n\nWe open at nine.", "utf-8")
    (tmp_path / "sub" / "parking-info.TXT").write_text("Parking is free on Sundays.", "utf-8")
    (tmp_path / "ignored.rst").write_text("Zebra crossing.", "utf-8")
    (tmp_path / "ignored.json").write_text('{"zebra": 1}', "utf-8")
    assert read_folder(tmp_path) == [
        ("opening hours", "# Opening hours\n\nWe open at nine.", "opening_hours.md"),
        ("parking info", "Parking is free on Sundays.", "sub/parking-info.TXT"),
    ]
    assert read_folder(tmp_path / "sub") == [
        ("parking info", "Parking is free on Sundays.", "parking-info.TXT")]
