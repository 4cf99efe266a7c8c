"""The bounded inference pool: blocking model calls run here, off the event loop.

One pool per stage is shared by every session of the process. Admission is bounded:
a job that cannot get a thread within ``wait_timeout_s`` (or finds too many jobs
already waiting) is refused with ``PoolBusy``, which the session reports to the
client, instead of queueing forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.providers.base import ProviderError

T = TypeVar("T")
_DONE = object()


class PoolBusy(ProviderError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} workers are all busy; try again", retryable=True)


def _lower_priority(nice: int) -> None:
    """Runs in each new worker thread of a background pool: Linux keeps a nice value per
    thread, and raising one's own needs no privilege (lowering it back would)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


class InferencePool:
    """``nice`` > 0: the pool's threads run at a lower CPU priority (work done ahead of
    need, which should not slow what a caller is waiting for)."""

    def __init__(self, name: str, threads: int, max_waiting: int, wait_timeout_s: float,
                 nice: int = 0) -> None:
        self.name = name
        self.threads = threads
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._executor = ThreadPoolExecutor(
            threads, thread_name_prefix=f"pool-{name}",
            initializer=functools.partial(_lower_priority, nice) if nice > 0 else None)
        self._slots = asyncio.Semaphore(threads)
        self._waiting = 0
        self.refused = 0

    @property
    def busy(self) -> int:
        return self.threads - self._slots._value

    async def _acquire(self) -> None:
        if self._waiting >= self.max_waiting:
            self.refused += 1
            raise PoolBusy(self.name)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            self.refused += 1
            raise PoolBusy(self.name) from None
        finally:
            self._waiting -= 1

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, fn, *args)
        # The slot frees when the thread finishes, even if the caller gave up waiting.
        fut.add_done_callback(lambda _f: self._slots.release())
        return fut

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run ``fn(*args)`` in a worker thread; ProviderError if it takes over ``timeout``."""
        await self._acquire()
        fut = self._submit(fn, *args)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise ProviderError(f"{self.name} took longer than {timeout:.1f} s") from None

    async def iterate(
        self, factory: Callable[[], Iterator[T]], *, first_timeout: float, total_timeout: float
    ) -> AsyncIterator[T]:
        """Drive a blocking generator in a worker thread and yield its items here.

        Leaving the ``async for`` early (or cancellation) sets a stop flag that the
        thread sees between items, and the generator is closed in its own thread.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            gen = factory()
            try:
                for item in gen:
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(items.put_nowait, item)
            except BaseException as exc:  # delivered to the consumer below
                loop.call_soon_threadsafe(items.put_nowait, exc)
            finally:
                with contextlib.suppress(Exception):
                    gen.close()  # type: ignore[attr-defined]
                with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                    loop.call_soon_threadsafe(items.put_nowait, _DONE)

        self._submit(pump)
        try:
            async for item in _drain(items, first_timeout, total_timeout, self.name):
                yield item
        finally:
            stop.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def _drain(
    items: asyncio.Queue[Any], first_timeout: float, total_timeout: float, name: str
) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout
    first = True
    while True:
        wait = min(first_timeout, deadline - loop.time())  # also the limit for each gap
        try:
            async with asyncio.timeout(max(0.0, wait)):
                item = await items.get()
        except TimeoutError:
            what = "first output" if first else "completion"
            raise ProviderError(f"{name} timed out waiting for {what}") from None
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            if isinstance(item, ProviderError):
                raise item
            raise ProviderError(f"{name} failed: {item}") from item
        first = False
        yield item
