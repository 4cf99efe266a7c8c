"""Sentence vectors in the database, and the in-process index that ranks them.

Vectors are stored as float16 rows in a plain binary column (BLOB on SQLite, bytea on
PostgreSQL) next to the row they describe, with the name of the embedder that made them.
Ranking is a dot product in numpy: the vectors are L2-normalised, so it is the cosine.

Why not an extension: this Python's ``sqlite3`` is built without extension loading, so
sqlite-vec cannot be loaded; Debian 12 packages no pgvector. A brute-force scan of 10k
passages x 384 dims is about a millisecond in numpy, so each process keeps each
assistant's passage matrix in a bounded LRU cache, checked against the database by a
cheap fingerprint (count and sum of the ids, newest write time) so other workers' writes
are seen.
With pgvector, ``ChunkIndex.top`` is the one function to replace by an ``ORDER BY
embedding <=> :q`` query.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

Vectors = npt.NDArray[np.float32]
# async (texts) -> their vectors, or None when no embedder is configured.
EmbedFn = Callable[[Sequence[str]], Awaitable[Vectors | None]]

_DTYPE = np.dtype("<f2")  # half the bytes; cosines stay within ~1e-3
MAX_CACHED_ROWS = 200_000  # passage vectors held per process, all assistants together
# How stale another worker's writes may be (this process's own writes invalidate at once):
# the change check scans the assistant's rows, ~1-5 ms at 10k passages.
RECHECK_S = 0.5


def to_blob(vectors: Vectors) -> bytes:
    return np.ascontiguousarray(vectors, dtype=_DTYPE).tobytes()


def from_blob(blob: bytes | None, dim: int) -> Vectors:
    """(n, dim) float32 rows; (0, dim) for None or a blob of the wrong size."""
    if not blob or len(blob) % (dim * _DTYPE.itemsize):
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(blob, dtype=_DTYPE).reshape(-1, dim).astype(np.float32)


def passage_text(title: str, heading: str, body: str) -> str:
    """What a passage's vector is made from: its document title and heading give context
    ("Opening hours" makes "9 to 5" findable by "when can I visit")."""
    head = " - ".join(p for p in (title, heading) if p)
    return f"{head}: {body}" if head else body


@dataclass
class _Entry:
    fingerprint: tuple[int, int, float]
    ids: npt.NDArray[np.int64]
    matrix: Vectors
    checked: float = 0.0  # loop time of the last change check


class ChunkIndex:
    """Each assistant's passage vectors, loaded on demand and kept while unchanged."""

    def __init__(self, embedder: str, dim: int, max_rows: int = MAX_CACHED_ROWS) -> None:
        self.embedder = embedder
        self.dim = dim
        self.max_rows = max_rows
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = asyncio.Lock()

    async def _fingerprint(self, s: AsyncSession, assistant_id: str) -> tuple[int, int, float]:
        row = (await s.execute(text(
            "SELECT count(*), coalesce(sum(id), 0), coalesce(max(embedded_at), 0) FROM chunks "
            "WHERE assistant_id = :a AND embedder = :m"),
            {"a": assistant_id, "m": self.embedder})).one()
        return int(row[0]), int(row[1]), float(row[2])

    def invalidate(self, assistant_id: str | None = None) -> None:
        """Vectors changed here: check the database before the next search."""
        for key, entry in self._cache.items():
            if assistant_id is None or key == assistant_id:
                entry.checked = 0.0

    async def matrix(self, s: AsyncSession,
                     assistant_id: str) -> tuple[npt.NDArray[np.int64], Vectors]:
        """The assistant's passage ids (sorted) and vectors. Rows deleted less than
        RECHECK_S ago by another worker may still be in it: callers skip ids not found."""
        now = asyncio.get_running_loop().time()
        entry = self._cache.get(assistant_id)
        if entry is not None and now - entry.checked < RECHECK_S:
            self._cache.move_to_end(assistant_id)
            return entry.ids, entry.matrix
        fingerprint = await self._fingerprint(s, assistant_id)
        entry = self._cache.get(assistant_id)
        if entry is None or entry.fingerprint != fingerprint:
            async with self._lock:  # one load per change, not one per concurrent search
                entry = self._cache.get(assistant_id)
                if entry is None or entry.fingerprint != fingerprint:
                    entry = await self._load(s, assistant_id, fingerprint)
        entry.checked = now
        if assistant_id in self._cache:
            self._cache.move_to_end(assistant_id)
        return entry.ids, entry.matrix

    async def _load(self, s: AsyncSession, assistant_id: str,
                    fingerprint: tuple[int, int, float]) -> _Entry:
        rows = (await s.execute(text(
            "SELECT id, embedding FROM chunks WHERE assistant_id = :a AND embedder = :m "
            "ORDER BY id"), {"a": assistant_id, "m": self.embedder})).all()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        matrix = np.zeros((len(rows), self.dim), dtype=np.float32)
        for i, r in enumerate(rows):
            vec = from_blob(r[1], self.dim)
            if len(vec) == 1:
                matrix[i] = vec[0]
        entry = _Entry(fingerprint, ids, matrix)
        self._cache[assistant_id] = entry
        while sum(e.matrix.shape[0] for e in self._cache.values()) > self.max_rows and len(
                self._cache) > 1:
            self._cache.popitem(last=False)  # least recently used assistant
        return entry

    async def top(self, s: AsyncSession, assistant_id: str, query: Vectors,
                  limit: int) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the ``limit`` nearest passages, nearest first."""
        ids, matrix = await self.matrix(s, assistant_id)
        if not len(ids):
            return []
        sims = matrix @ query
        n = min(limit, len(ids))
        best = np.argpartition(-sims, n - 1)[:n]
        best = best[np.argsort(-sims[best])]
        return [(int(ids[i]), float(sims[i])) for i in best]

    async def cosines(self, s: AsyncSession, assistant_id: str, query: Vectors,
                      chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine of the query to each given passage that has a vector."""
        ids, matrix = await self.matrix(s, assistant_id)
        pos = np.searchsorted(ids, np.array(chunk_ids, dtype=np.int64))
        out: dict[int, float] = {}
        for cid, p in zip(chunk_ids, pos, strict=True):
            if p < len(ids) and ids[p] == cid:
                out[cid] = float(matrix[p] @ query)
        return out
