"""The knowledge base: a folder of Markdown/text files indexed with SQLite FTS5 (BM25).

Files are cut into passages at headings and blank lines (small enough to speak or
to fit a small model's context). The index lives in memory, is built once at
start-up, and is only read afterwards, so one connection guarded by a lock is enough.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from gateway.providers.base import Passage

_TOKEN = re.compile(r"[^\W_][\w'\-]*")
# Words too common to rank by; FTS5's BM25 already discounts them, but an OR query
# made only of them would match everything.
_STOPWORDS = frozenset(
    """a an and are as at be by can do does for from has have how i in is it its me my
    of on or so that the this to was what when where which who why will with you your
    tell about please could would""".split()
)
SAMPLE_KNOWLEDGE = Path(__file__).resolve().parent.parent / "data" / "knowledge"


def split_passages(text: str, max_chars: int = 700) -> list[tuple[str, str]]:
    """(heading, passage) pairs: sections at Markdown headings, then paragraphs."""
    out: list[tuple[str, str]] = []
    heading = ""
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        lines = block.splitlines()
        if lines[0].startswith("#"):
            heading = lines[0].lstrip("#").strip()
            block = "\n".join(lines[1:]).strip()
            if not block:
                continue
        while len(block) > max_chars:
            cut = block.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > 0 else max_chars
            out.append((heading, block[:cut].strip()))
            block = block[cut:].strip()
        if block:
            out.append((heading, " ".join(block.split())))
    return out


def fts_query(question: str) -> str:
    """An FTS5 OR-query of the question's content words (quoted: no operator injection)."""
    words = [w.lower() for w in _TOKEN.findall(question)]
    terms = [w for w in words if w not in _STOPWORDS and len(w) > 1]
    if not terms:
        terms = [w for w in words if len(w) > 1]
    unique = list(dict.fromkeys(terms))[:32]
    return " OR ".join('"' + t.replace('"', "") + '"' for t in unique)


def trigram_query(question: str) -> str:
    """OR of the trigrams of the question's content words (for the fuzzy fallback)."""
    words = [w.lower() for w in _TOKEN.findall(question)]
    grams: list[str] = []
    for word in words:
        if word in _STOPWORDS or len(word) < 4:
            continue
        word = word.replace("'", "")
        grams.extend(word[i : i + 3] for i in range(len(word) - 2))
    unique = list(dict.fromkeys(grams))[:64]
    return " OR ".join('"' + g.replace('"', "") + '"' for g in unique)


def _close_match(question: str, text: str) -> bool:
    """Some content word of the question has at least half its trigrams in the text."""
    text = text.lower()
    for word in _TOKEN.findall(question.lower()):
        word = word.replace("'", "")
        if word in _STOPWORDS or len(word) < 4:
            continue
        grams = {word[i : i + 3] for i in range(len(word) - 2)}
        hits = sum(g in text for g in grams)
        if hits >= 2 and hits * 2 >= len(grams):
            return True
    return False


class KnowledgeBase:
    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE VIRTUAL TABLE passages USING fts5("
            "title, heading, body, source UNINDEXED, tokenize='porter unicode61')"
        )
        # Fuzzy fallback: STT misspells names and jargon ("barge in" -> "bargin'"),
        # which word matching misses; OR-ed trigrams still find the passage.
        self._db.execute(
            "CREATE VIRTUAL TABLE passages_tri USING fts5(heading, body, tokenize='trigram')"
        )
        self.count = 0

    @classmethod
    def from_folder(cls, folder: str | Path) -> KnowledgeBase:
        kb = cls()
        root = Path(folder)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".md", ".txt"))
        for path in files:
            kb.add(path.stem.replace("_", " ").replace("-", " "), path.read_text("utf-8"),
                   source=str(path.relative_to(root)))
        return kb

    def add(self, title: str, text: str, *, source: str) -> int:
        rows = [(title, h, body, source) for h, body in split_passages(text)]
        return self.add_rows(rows)

    def add_rows(self, rows: Iterable[tuple[str, str, str, str]]) -> int:
        rows = list(rows)
        with self._lock:
            for row in rows:
                cur = self._db.execute(
                    "INSERT INTO passages(title, heading, body, source) VALUES (?,?,?,?)", row
                )
                self._db.execute(
                    "INSERT INTO passages_tri(rowid, heading, body) VALUES (?,?,?)",
                    (cur.lastrowid, row[1], row[2]),
                )
        self.count += len(rows)
        return len(rows)

    def search(self, question: str, k: int = 3) -> list[Passage]:
        query = fts_query(question)
        if not query:
            return []
        with self._lock:
            rows = self._db.execute(
                # Title and heading matches weigh more than body matches.
                "SELECT title, heading, body, source, bm25(passages, 4.0, 2.0, 1.0) AS r "
                "FROM passages WHERE passages MATCH ? ORDER BY r LIMIT ?",
                (query, k),
            ).fetchall()
            fuzzy = trigram_query(question)
            if not rows and fuzzy:
                rows = self._db.execute(
                    "SELECT p.title, p.heading, p.body, p.source, "
                    "bm25(passages_tri, 2.0, 1.0) AS r FROM passages_tri "
                    "JOIN passages p ON p.rowid = passages_tri.rowid "
                    "WHERE passages_tri MATCH ? ORDER BY r LIMIT ?",
                    (fuzzy, k * 4),
                ).fetchall()
                rows = [r for r in rows if _close_match(question, f"{r[1]} {r[2]}")][:k]
        return [
            Passage(title=(h or t), text=body, source=src, score=round(-r, 4))
            for t, h, body, src, r in rows
        ]
