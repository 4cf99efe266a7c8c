"""Knowledge-base text handling: passages, search-query building, folder import.

Documents are cut into passages at headings and blank lines (small enough to speak or
to fit a small model's context). The indexes themselves are the database's full-text
engines (``gateway.store.search``); this module is pure.
"""

from __future__ import annotations

import re
from pathlib import Path

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


# A sentence ends at . ! ? (or a line break) followed by space and a capital, digit or
# quote; "9 a.m. to 5" or "e.g. dogs" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\s*\n+\s*")
MAX_SENTENCES = 32  # per passage: bounds the vectors stored with it


def split_sentences(text: str) -> list[str]:
    """The sentences of a passage, in order (deterministic: stored vectors follow it)."""
    parts = [" ".join(p.split()) for p in _SENTENCE_END.split(text)]
    out = [p for p in parts if p]
    if len(out) > MAX_SENTENCES:  # the tail goes into the last one
        out = [*out[: MAX_SENTENCES - 1], " ".join(out[MAX_SENTENCES - 1 :])]
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


def close_match(question: str, text: str) -> bool:
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


def read_folder(folder: str | Path) -> list[tuple[str, str, str]]:
    """(title, content, source) of each .md/.txt file under ``folder``."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".md", ".txt"))
    return [
        (p.stem.replace("_", " ").replace("-", " "), p.read_text("utf-8"),
         str(p.relative_to(root)))
        for p in files
    ]
