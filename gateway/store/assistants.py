"""Assistants (the seeds' chat models) and the default one every fresh gateway has."""

from __future__ import annotations

from sqlalchemy import func, select

from gateway.config import Config

from .db import Database
from .documents import add_document
from .knowledge import SAMPLE_KNOWLEDGE, read_folder
from .models import Assistant, Document

DEFAULT_ASSISTANT = "default"


async def get_assistant(db: Database, assistant_id: str) -> Assistant | None:
    async with db.session() as s:
        return await s.get(Assistant, assistant_id)


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
