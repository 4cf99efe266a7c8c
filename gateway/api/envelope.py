"""The error body of the ``/api/v1`` platform endpoints: the usual one plus ``"success": false``.

The knowledge-base seed documents ``{"success": false, "error": {"code", "message"}}`` and
``INVALID_TOKEN`` for a bad or missing token. Routes declared with ``EnvelopeRoute`` get
that body; every other route keeps the plain ``{"error": ...}`` one. The app's own
exception handlers still build the response (so status, headers such as ``Retry-After``
and logging stay theirs); this only rewrites the body.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from .errors import error_response

# Headers that describe the old body, not the response.
_BODY_HEADERS = frozenset({"content-length", "content-type"})


def _handler_for(request: Request, exc: Exception) -> Callable[..., Any] | None:
    handlers: dict[Any, Callable[..., Any]] = request.app.exception_handlers
    status = getattr(exc, "status_code", None)
    if status in handlers:
        return handlers[status]
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def enveloped_error(request: Request, exc: Exception) -> Response:
    """The app's response to ``exc``, its body rewritten to the v1 shape."""
    handler = _handler_for(request, exc)
    if handler is None:
        response: Response = error_response(500, "INTERNAL_ERROR", "internal error")
    else:
        result = handler(request, exc)
        response = await result if inspect.isawaitable(result) else result
    try:
        body = json.loads(bytes(response.body))
    except (ValueError, AttributeError):
        return response
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return response
    if response.status_code == 401 and body["error"].get("code") == "UNAUTHORIZED":
        body["error"]["code"] = "INVALID_TOKEN"
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _BODY_HEADERS}
    return JSONResponse({"success": False, "error": body["error"]},
                        status_code=response.status_code, headers=headers)


class EnvelopeRoute(APIRoute):
    """An APIRoute whose errors (auth, validation, rate limit, ...) use the v1 body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error: the handlers decide status and body
                return await enveloped_error(request, exc)

        return route
