"""Failover across a stage's ordered providers, with a circuit breaker per provider.

A call goes to the first provider whose circuit allows it. If that provider fails, or
gives no first output within the stage's first-byte timeout, the next one takes the
call at once, so the client sees no gap beyond that timeout. ``PROVIDER_ERROR`` reaches
the client only when every provider failed. Blocking providers run in the stage's pool;
async ones are awaited directly under the same timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from gateway.providers.base import ProviderError

from .breaker import Breaker
from .pool import InferencePool, PoolBusy

log = structlog.get_logger("gateway.failover")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_byte_s: float
    total_s: float


@dataclass
class Chain:
    stage: str
    providers: list[Any]
    pool: InferencePool
    timeouts: Timeouts
    breakers: list[Breaker] = field(default_factory=list)
    failovers: int = 0
    exhausted: int = 0

    def __post_init__(self) -> None:
        if not self.breakers:
            self.breakers = [Breaker() for _ in self.providers]

    @property
    def primary(self) -> Any:
        return self.providers[0]

    def health(self) -> dict[str, str]:
        now = time.monotonic()
        return {getattr(p, "name", type(p).__name__): b.describe(now)
                for p, b in zip(self.providers, self.breakers, strict=True)}

    def _candidates(self) -> Iterator[tuple[Any, Breaker]]:
        now = time.monotonic()
        for provider, breaker in zip(self.providers, self.breakers, strict=True):
            if breaker.allow(now):
                yield provider, breaker

    def _failed(self, provider: Any, breaker: Breaker, exc: Exception, errors: list[str]) -> None:
        name = getattr(provider, "name", "?")
        breaker.failure(time.monotonic(), str(exc))
        errors.append(f"{name}: {exc}")
        self.failovers += 1
        log.warning("provider_failed", stage=self.stage, provider=name, error=str(exc))

    def _give_up(self, errors: list[str]) -> ProviderError:
        self.exhausted += 1
        detail = "; ".join(errors) or "every provider's circuit is open"
        return ProviderError(f"all {self.stage} providers failed ({detail})")

    async def call(self, method: str, *args: Any, hints: dict[str, Any] | None = None,
                   **kwargs: Any) -> Any:
        """One request/response call (transcribe, synthesize) with failover.

        ``hints`` are optional keyword arguments only providers that accept them get
        (the session's output rate for a TTS, a partial-transcript callback for an STT).
        """
        errors: list[str] = []
        for provider, breaker in self._candidates():
            fn: Callable[..., Any] = getattr(provider, method)
            kw = {**kwargs, **_accepted(fn, hints)} if hints else kwargs
            try:
                if getattr(provider, "inline", False):  # instant, non-blocking (null)
                    result = fn(*args, **kw)
                elif inspect.iscoroutinefunction(fn):
                    async with asyncio.timeout(self.timeouts.total_s):
                        result = await fn(*args, **kw)
                else:
                    job = _bind(fn, args, kw)
                    result = await self.pool.run(job, timeout=self.timeouts.total_s)
            except PoolBusy:
                breaker.probing = False
                raise  # overload is ours, not the provider's: no failover, no breaker trip
            except (ProviderError, TimeoutError) as exc:
                self._failed(provider, breaker, _as_error(exc, self.timeouts.total_s), errors)
                continue
            breaker.success()
            return result
        raise self._give_up(errors)

    async def stream(self, make: Callable[[Any], Any]) -> AsyncIterator[Any]:
        """Items of a streaming call (LLM tokens) with failover.

        ``make(provider)`` returns the provider's stream: a sync iterator (run in the
        pool) or an async iterator. A failure before the first item hands the call to
        the next provider; a failure mid-stream too (its answer follows what was said).
        """
        errors: list[str] = []
        for provider, breaker in self._candidates():
            emitted = False
            try:
                async for item in self._one(provider, make):
                    emitted = True
                    yield item
            except PoolBusy:
                breaker.probing = False
                raise
            except ProviderError as exc:
                self._failed(provider, breaker, exc, errors)
                if emitted:
                    yield " "
                continue
            breaker.success()
            return
        raise self._give_up(errors)

    async def _one(self, provider: Any, make: Callable[[Any], Any]) -> AsyncIterator[Any]:
        t = self.timeouts
        if getattr(provider, "inline", False):
            for item in make(provider):
                yield item
            return
        if hasattr(provider, "generate"):
            items = self.pool.iterate(lambda: make(provider), first_timeout=t.first_byte_s,
                                      total_timeout=t.total_s)
            async for item in items:
                yield item
            return
        stream = make(provider)
        try:
            async for item in _timed(stream, t.first_byte_s, t.total_s, self.stage):
                yield item
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


def _accepted(fn: Callable[..., Any], hints: dict[str, Any]) -> dict[str, Any]:
    params = _parameters(getattr(fn, "__func__", fn))
    return {name: value for name, value in hints.items() if name in params}


@functools.lru_cache(maxsize=256)
def _parameters(fn: Callable[..., Any]) -> frozenset[str]:
    """A function's parameter names (cached: inspect.signature is slow, and this runs
    for every transcription and sentence)."""
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: no hints
        return frozenset()


def _bind(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], T]:
    return functools.partial(fn, *args, **kwargs)


def _as_error(exc: Exception, timeout: float) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"no answer within {timeout:.1f} s")


async def _timed(stream: AsyncIterator[Any], first_s: float, total_s: float,
                 stage: str) -> AsyncIterator[Any]:
    """An async stream under a first-item and a total deadline, errors as ProviderError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    first = True
    iterator = stream.__aiter__()
    while True:
        # After the first item the same limit applies to each gap: a stall mid-stream
        # fails over as fast as a slow start does.
        wait = min(first_s, deadline - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            what = "first output" if first else "completion"
            raise ProviderError(f"{stage} timed out waiting for {what}") from None
        except ProviderError:
            raise
        except Exception as exc:  # a provider bug must not kill the turn
            raise ProviderError(f"{stage} failed: {exc}") from exc
        first = False
        yield item
