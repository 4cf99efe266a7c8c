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
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from gateway.providers.base import ProviderError

log = structlog.get_logger("gateway.pool")

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


def in_nicer_thread(nice: int, fn: Callable[[], T]) -> T:
    """``fn()`` run in a new thread ``nice`` steps nicer, its result (or exception) here.
    Threads inherit their maker's nice value: a provider that computes in threads of
    its own, made when it loads (CTranslate2's), is made nicer by loading it this way
    (a nicer pool thread that only waits for those threads is not)."""
    box: list[Any] = []

    def run() -> None:
        _lower_priority(nice)
        try:
            box.append((True, fn()))
        except BaseException as exc:  # raised again in the caller's thread
            box.append((False, exc))

    thread = threading.Thread(target=run, name="nicer-loader")
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


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
        asked = time.perf_counter()
        await self._acquire()
        fut = self._submit(_timed(fn, self.name, asked), *args)
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


def _timed(fn: Callable[..., T], name: str, asked: float) -> Callable[..., T]:
    """``fn`` logging (debug) how long it waited for its thread, ran, and held a CPU:
    wall time well over CPU time is a job starved by others."""
    def run(*args: Any) -> T:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args)
        finally:
            end = time.perf_counter()
            log.debug("pool_job", pool=name, job=_job_name(fn),
                      wait_ms=round((started - asked) * 1000, 1),
                      run_ms=round((end - started) * 1000, 1),
                      cpu_ms=round((time.thread_time() - cpu) * 1000, 1))
    return run


def _job_name(fn: Callable[..., Any]) -> str:
    target = getattr(fn, "func", fn)  # a functools.partial's function
    owner = getattr(target, "__self__", None)
    model = getattr(owner, "model_dir", None)
    name = getattr(target, "__qualname__", "?")
    return f"{name}[{model.name}]" if model is not None else name


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
