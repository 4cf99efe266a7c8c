"""FastAPI dependencies shared by the HTTP routes: the caller, rate limits, the database.

``authed(group)`` resolves the caller (API key, OAuth token, legacy JWT, or anonymous
where allowed) and then applies the rate limits of ``group`` (chat, token, health,
import, query, search, default) for that caller; a route gets a ``Principal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from gateway.access.auth import AuthError, Principal

from .errors import ApiError, client_host


def requested_assistant(request: Request) -> str | None:
    """The assistant named by the request's header or query (a body may name one too)."""
    value = (request.headers.get("x-chat-model-id")
             or request.query_params.get("chatModelId")
             or request.query_params.get("assistant_id"))
    if value is not None and (len(value) > 64 or not value.isprintable()):
        raise ApiError(400, "INVALID_REQUEST", "chat model id must be printable, ≤ 64 chars")
    return value


def authed(group: str = "default") -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        auth = request.app.state.auth
        try:
            principal: Principal = await auth.principal(
                request.headers, client_host(request), requested_assistant(request)
            )
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        limiter = getattr(request.app.state, "limiter", None)
        if limiter is not None:
            await limiter.check(request, principal, group)
        request.state.principal = principal
        return principal

    return dependency


def assistant_of(principal: Principal, requested: str | None) -> str:
    try:
        return principal.assistant_for(requested)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None


async def checked_assistant(request: Request, principal: Principal,
                            requested: str | None) -> str:
    """The assistant to act as, which must exist (404 ``INVALID_MODEL_ID`` otherwise)."""
    assistant_id = assistant_of(principal, requested or requested_assistant(request))
    try:
        await request.app.state.auth.check_assistant(assistant_id)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return assistant_id


def state(request: Request) -> Any:
    return request.app.state
