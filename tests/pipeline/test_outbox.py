"""Outbox: ordered, bounded, purgeable. Async tests (asyncio_mode=auto)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.pipeline.outbox import AudioOut, Outbox, OutboxClosed


def audio(rid: str, ms: float = 20.0, tag: int = 0) -> AudioOut:
    return AudioOut(rid, bytes([tag]) * 2, ms)


async def drain(box: Outbox) -> list[object]:
    out: list[object] = []
    while len(box):
        out.append(await box.get())
    return out


async def test_order_is_kept() -> None:
    box = Outbox(maxsize=10)
    items = [{"type": "tts_start"}, audio("r1", tag=1), audio("r1", tag=2), {"type": "tts_end"}]
    for item in items:
        box.put(item)
    assert len(box) == 4
    assert await drain(box) == items
    assert len(box) == 0


async def test_purge_audio_drops_only_that_responses_audio() -> None:
    box = Outbox(maxsize=20)
    box.put({"type": "tts_start", "response_id": "r1"})
    box.put(audio("r1", 20, 1))
    box.put(audio("r2", 40, 2))
    box.put({"type": "text", "response_id": "r1"})
    box.put(audio("r1", 30, 3))
    box.put(audio("r1", 10.5, 4))
    assert box.purge_audio("r1") == pytest.approx(60.5)
    assert await drain(box) == [
        {"type": "tts_start", "response_id": "r1"},  # events are kept
        audio("r2", 40, 2),
        {"type": "text", "response_id": "r1"},
    ]


async def test_purge_with_nothing_to_drop() -> None:
    box = Outbox(maxsize=5)
    assert box.purge_audio("r1") == 0.0
    box.put({"type": "x"})
    assert box.purge_audio("nope") == 0.0
    assert len(box) == 1


async def test_purge_then_put_keeps_working() -> None:
    box = Outbox(maxsize=5)
    box.put(audio("r1"))
    box.purge_audio("r1")
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()  # empty after the purge: get waits
    box.put({"type": "interrupted"})
    assert await asyncio.wait_for(getter, 1) == {"type": "interrupted"}


async def test_get_waits_for_put() -> None:
    box = Outbox(maxsize=5)
    getter = asyncio.create_task(box.get())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not getter.done()
    box.put({"type": "a"})
    assert await asyncio.wait_for(getter, 1) == {"type": "a"}


async def test_overflow_closes_and_marks_overflowed() -> None:
    box = Outbox(maxsize=3)
    for i in range(3):
        box.put({"i": i})
    assert not box.closed and not box.overflowed
    box.put({"i": 3})  # one too many
    assert box.overflowed and box.closed
    assert len(box) == 3  # the overflowing item is not queued
    box.put({"i": 4})  # after close: ignored
    assert len(box) == 3
    assert [await box.get() for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    with pytest.raises(OutboxClosed):
        await box.get()


async def test_get_after_close_drains_then_raises() -> None:
    box = Outbox(maxsize=5)
    box.put({"type": "a"})
    box.put(audio("r1"))
    box.close()
    assert box.closed and not box.overflowed
    box.put({"type": "late"})  # ignored
    assert await box.get() == {"type": "a"}
    assert await box.get() == audio("r1")
    with pytest.raises(OutboxClosed):
        await box.get()
    with pytest.raises(OutboxClosed):
        await box.get()


async def test_close_wakes_a_waiting_getter() -> None:
    box = Outbox(maxsize=5)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises(OutboxClosed):
        await asyncio.wait_for(getter, 1)


async def test_two_getters_each_get_one_item() -> None:
    box = Outbox(maxsize=5)
    g1 = asyncio.create_task(box.get())
    g2 = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put({"n": 1})
    box.put({"n": 2})
    results = await asyncio.wait_for(asyncio.gather(g1, g2), 1)
    assert sorted(r["n"] for r in results) == [1, 2]  # type: ignore[index]
