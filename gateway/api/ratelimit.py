"""Rate limits per caller, per endpoint group and per tier, with the ``limits`` library.

A caller is ``Principal.subject``: an API key, a user, or the client IP when anonymous.
Each request counts against its endpoint group's limit (``ratelimit.group_<name>``,
falling back to ``group_default``) and against the caller's tier limits
(``ratelimit.tier_<tier>``, shared by all groups). Over a limit: HTTP 429
``RATE_LIMITED`` with ``Retry-After`` and ``X-RateLimit-Limit/-Remaining/-Reset`` — or
``QUOTA_EXCEEDED`` (the seeds' "plan limits reached") when the refusing limit is one of
the tier's with a window of an hour or more (``100/day``);
allowed responses carry the ``X-RateLimit-*`` of the tightest limit too (``Reset`` is
a Unix time in seconds). On the voice WebSocket a refusal is an ``error`` event, then
close 4429.

Storage: ``memory://`` (per process) or Redis (``async+redis://``), shared by every
gateway using the same URL and ``key_prefix``. If the storage fails (Redis down), the
limiter fails OPEN: requests pass, a warning is logged, and the storage is left alone
for ``RETRY_AFTER_FAILURE_S`` so an outage adds no latency to each request. Refusing all
traffic because the limiter's backend is down would turn a Redis outage into a full
outage; the limits protect capacity, not secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import STRATEGIES, RateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access.auth import Principal
from gateway.config import Config, RateLimitConfig
from gateway.errors import LimitError

from .errors import ApiError, client_host

log = structlog.get_logger("gateway.ratelimit")

RETRY_AFTER_FAILURE_S = 5.0
STORAGE_TIMEOUT_S = 0.5
QUOTA_WINDOW_S = 3600  # a tier limit this long or longer is a plan quota
STATE_KEY = "ratelimit"  # request.state attribute read by the headers middleware
HEADER_NAMES = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for the tightest limit that applied to one request."""

    allowed: bool
    limit: int
    remaining: int
    reset: float  # Unix time when a unit is available again
    quota: bool = False  # refused by a plan (tier) limit of an hour or longer

    @property
    def code(self) -> str:
        return "QUOTA_EXCEEDED" if self.quota else "RATE_LIMITED"

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))

    def headers(self) -> dict[str, str]:
        out = {"X-RateLimit-Limit": str(self.limit),
               "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(math.ceil(self.reset))}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after())
        return out


class RateLimited(LimitError):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__("rate limit exceeded")
        self.verdict = verdict

    def message(self) -> str:
        what = "plan quota reached" if self.verdict.quota else "rate limit exceeded"
        return (f"{what} ({self.verdict.limit} requests); retry in "
                f"{self.verdict.retry_after()} s")


def _parse(value: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(value)) if value.strip() else ()


def _storage(rl: RateLimitConfig) -> tuple[Storage, Any]:
    """The async storage, and a Redis connection pool we own (to close) if any."""
    url = rl.storage_url if rl.storage_url.startswith("async+") else f"async+{rl.storage_url}"
    if url.startswith("async+memory"):
        return storage_from_string(url), None  # type: ignore[return-value]
    from redis.asyncio import ConnectionPool

    pool = ConnectionPool.from_url(
        url.removeprefix("async+"), socket_connect_timeout=STORAGE_TIMEOUT_S,
        socket_timeout=STORAGE_TIMEOUT_S,
    )
    storage = storage_from_string(url, implementation="redispy", key_prefix=rl.key_prefix,
                                  wrap_exceptions=True,
                                  connection_pool=pool)  # type: ignore[arg-type]
    return storage, pool  # type: ignore[return-value]


class Limiter:
    def __init__(self, rl: RateLimitConfig) -> None:
        self.cfg = rl
        self.storage, self._pool = _storage(rl)
        strategy: Any = STRATEGIES[rl.strategy]
        self.strategy: RateLimiter = strategy(self.storage)
        names = [f.name for f in dataclasses.fields(rl)]
        self.groups = {n[6:]: _parse(getattr(rl, n)) for n in names if n.startswith("group_")}
        self.tiers = {n[5:]: _parse(getattr(rl, n)) for n in names if n.startswith("tier_")}
        self._down_until = 0.0

    @classmethod
    async def create(cls, cfg: Config) -> Limiter | None:
        if not cfg.ratelimit.enabled:
            return None
        limiter = cls(cfg.ratelimit)
        try:
            async with asyncio.timeout(2 * STORAGE_TIMEOUT_S):
                reachable = await limiter.storage.check()
        except (StorageError, TimeoutError, OSError):
            reachable = False
        if not reachable:
            log.warning("ratelimit_storage_unreachable", strategy=cfg.ratelimit.strategy,
                        note="failing open: requests pass until the storage is back")
        return limiter

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def evaluate(self, subject: str, group: str, tier: str | None) -> Verdict | None:
        """Count one request; the tightest limit's verdict (None: no limits, or failed open).

        Groups without limits of their own share the ``default`` budget; an unknown tier
        gets the ``free`` limits; ``tier`` None: the group limit only.
        """
        if time.monotonic() < self._down_until:
            return None
        group = group if group in self.groups else "default"
        scoped: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (item, ("g", group, subject)) for item in self.groups[group]]
        if tier is not None:
            tier_limits = self.tiers.get(tier, self.tiers["free"])
            scoped += [(item, ("t", subject)) for item in tier_limits]
        if not scoped:
            return None
        try:
            async with asyncio.timeout(4 * STORAGE_TIMEOUT_S):
                return await self._hit_all(scoped)
        except (StorageError, TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE_S
            log.warning("ratelimit_storage_failed", error=type(exc).__name__,
                        note="failing open for a few seconds")
            return None

    async def _hit_all(self, scoped: list[tuple[RateLimitItem, tuple[str, ...]]]) -> Verdict:
        # The group limit first: a request it refuses does not eat into the daily tier quota.
        n_group = sum(1 for _, ids in scoped if ids[0] == "g")
        for batch in (scoped[:n_group], scoped[n_group:]):
            if not batch:
                continue
            hits = await asyncio.gather(*(self.strategy.hit(i, *ids) for i, ids in batch))
            if not all(hits):
                refused = [pair for pair, ok in zip(batch, hits, strict=True) if not ok]
                return await self._tightest(refused, allowed=False)
        return await self._tightest(scoped, allowed=True)

    async def _tightest(self, scoped: list[tuple[RateLimitItem, tuple[str, ...]]],
                        allowed: bool) -> Verdict:
        stats = await asyncio.gather(*(self.strategy.get_window_stats(i, *ids)
                                       for i, ids in scoped))
        # Fewest remaining, then the latest reset (a refused day limit beats a minute one).
        (item, ids), st = min(zip(scoped, stats, strict=True),
                              key=lambda p: (p[1].remaining, -p[1].reset_time))
        reset = st.reset_time if st.reset_time > time.time() else time.time() + item.get_expiry()
        quota = not allowed and ids[0] == "t" and item.get_expiry() >= QUOTA_WINDOW_S
        return Verdict(allowed, item.amount, max(0, st.remaining), reset, quota)

    async def check(self, request: Request, principal: Principal | None, group: str) -> None:
        """Count a request against ``group`` (and the caller's tier); 429 when over.

        ``principal`` None: an unauthenticated endpoint, limited per client IP and
        group only.
        """
        if principal is None:
            verdict = await self.evaluate(f"ip:{client_host(request)}", group, None)
        else:
            verdict = await self.evaluate(principal.subject, group, principal.tier)
        if verdict is None:
            return
        if not verdict.allowed:
            log.info("rate_limited", group=group, path=request.url.path)
            raise ApiError(429, verdict.code, RateLimited(verdict).message(),
                           headers=verdict.headers())
        setattr(request.state, STATE_KEY, verdict)


async def enforce(request: Request, principal: Principal | None, group: str) -> None:
    """Apply the app's limiter, if rate limiting is enabled."""
    limiter: Limiter | None = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        await limiter.check(request, principal, group)


def per_ip(group: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency for endpoints without a caller identity (health): limits per IP."""

    async def dependency(request: Request) -> None:
        await enforce(request, None, group)

    return dependency


class RateLimitHeaders:
    """ASGI middleware: adds the ``X-RateLimit-*`` headers of an allowed request.

    Pure ASGI (not BaseHTTPMiddleware) so streamed responses (SSE) pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: Mapping[str, Any] = scope.get("state") or {}
                verdict = state.get(STATE_KEY)
                if isinstance(verdict, Verdict):
                    headers = MutableHeaders(scope=message)
                    for name, value in verdict.headers().items():
                        if name not in headers:
                            headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
