"""Assistants (the seeds' chat models) and the default one every fresh gateway has."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from sqlalchemy import func, select

from gateway.config import Config
from gateway.pipeline import turn_taking

from .db import Database
from .documents import add_document
from .knowledge import SAMPLE_KNOWLEDGE, read_folder
from .models import Assistant, Document

log = structlog.get_logger("gateway.store")

DEFAULT_ASSISTANT = "default"


# Every connection and turn looks up its assistant; a cache keeps that off the database.
# Writes through the API invalidate it. Past CACHE_TTL_S an entry is still served while
# one background query refreshes it (another gateway process sharing the database sees
# a change within about CACHE_TTL_S); past CACHE_MAX_AGE_S callers wait for the query.
CACHE_TTL_S = 2.0
CACHE_MAX_AGE_S = 30.0
FETCH_TIMEOUT_S = 10.0
_cache: dict[tuple[int, str], tuple[float, Assistant | None]] = {}
_inflight: dict[tuple[int, str], asyncio.Future[Assistant | None]] = {}


async def get_assistant(db: Database, assistant_id: str) -> Assistant | None:
    if "\x00" in assistant_id:  # no stored id has one (PostgreSQL text refuses NUL)
        return None
    key = (id(db), assistant_id)
    hit = _cache.get(key)
    age = time.monotonic() - hit[0] if hit is not None else None
    if hit is not None and age is not None and age < CACHE_TTL_S:
        return hit[1]
    # Single flight: when the entry expires under load, one query serves every waiter.
    task = _inflight.get(key)
    if task is None:
        task = asyncio.ensure_future(_fetch(db, assistant_id, key))
        _inflight[key] = task
        task.add_done_callback(_forget(key))
    if hit is not None and age is not None and age < CACHE_MAX_AGE_S:
        return hit[1]  # stale while revalidating: a turn never waits for the database
    return await asyncio.shield(task)


def _forget(key: tuple[int, str]) -> Any:
    def done(task: asyncio.Future[Assistant | None]) -> None:
        _inflight.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            # A failed background refresh: keep serving the entry until its max age.
            log.warning("assistant_refresh_failed", error=str(task.exception()))
    return done


async def _fetch(db: Database, assistant_id: str, key: tuple[int, str]) -> Assistant | None:
    # Its own deadline: a background refresh stuck on a dead database must end, so the
    # next caller past the TTL starts a new one.
    async with asyncio.timeout(FETCH_TIMEOUT_S), db.session() as s:
        found = await s.get(Assistant, assistant_id)
    if len(_cache) > 1024:
        _cache.clear()
    _cache[key] = (time.monotonic(), found)
    return found


def invalidate_assistant(assistant_id: str | None = None) -> None:
    if assistant_id is None:
        _cache.clear()
        return
    for key in [k for k in _cache if k[1] == assistant_id]:
        _cache.pop(key, None)


async def assistant_tools(db: Database, assistant_id: str) -> list[Any] | None:
    """An assistant's declared function tools (None: no such assistant). Read through the
    short-lived assistant cache: this runs on every turn."""
    assistant = await get_assistant(db, assistant_id)
    if assistant is None:
        return None
    return list(assistant.tools or [])


async def assistant_providers(db: Database, assistant_id: str) -> dict[str, str | None]:
    """The STT / LLM / TTS provider and the STT / LLM model an assistant names ({} for no
    such assistant). Read through the assistant cache: this runs for every
    transcription, reply and sentence."""
    a = await get_assistant(db, assistant_id)
    if a is None:
        return {}
    return {"stt": a.stt_provider, "llm": a.llm_provider, "tts": a.tts_provider,
            "stt_model": a.stt_model, "llm_model": a.llm_model}


def own_turn_taking(a: Assistant | None, cfg: Config, log: Any) -> dict[str, Any]:
    """SessionSettings fields (``interruptions``, ``turn``) from an assistant's
    ``turn_taking``; {} for the config's. A stored value this gateway no longer accepts
    is logged and ignored: never a failed session."""
    if a is None or not a.turn_taking:
        return {}
    try:
        tt = turn_taking.resolve(a.turn_taking, cfg)
    except ValueError as exc:
        log.warning("turn_taking_ignored", assistant_id=a.id, error=str(exc))
        return {}
    out: dict[str, Any] = {}
    if tt.interruptions is not None:
        out["interruptions"] = tt.interruptions
    if tt.end_of_turn is not None:
        out["turn"] = tt.end_of_turn
    return out


async def ensure_default_assistant(db: Database, cfg: Config) -> Assistant:
    """Create the default assistant on first start, with the configured knowledge folder."""
    async with db.session() as s:
        existing = await s.get(Assistant, DEFAULT_ASSISTANT)
        if existing is not None:
            return existing
        assistant = Assistant(
            id=DEFAULT_ASSISTANT, name="Default assistant",
            description="The gateway's built-in assistant",
            system_prompt=cfg.llm.system_prompt, language=cfg.stt.language,
            allow_anonymous=True, tier="enterprise",
        )
        s.add(assistant)
        await s.commit()
    folder = cfg.knowledge.path or str(SAMPLE_KNOWLEDGE)
    async with db.session() as s:
        count = await s.scalar(select(func.count()).select_from(Document)
                               .where(Document.assistant_id == DEFAULT_ASSISTANT))
        if not count:
            for title, content, source in read_folder(folder):
                await add_document(s, DEFAULT_ASSISTANT, title=title, content=content,
                                   url=None, meta={"source": source})
            await s.commit()
    return assistant
