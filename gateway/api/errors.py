"""One error body everywhere: ``{"error": {"code", "message"}}``. Never a stack trace,
never an exception's or a provider's own text (gateway.protocol.errors has the messages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ClientError, GatewayError, ProviderError, failure
from gateway.protocol import errors

log = structlog.get_logger("gateway.api")

_STATUS_CODES = {
    400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 413: "INVALID_REQUEST", 415: "INVALID_REQUEST",
    422: "INVALID_REQUEST", 429: "RATE_LIMITED", 500: "INTERNAL_ERROR", 502: "PROVIDER_ERROR",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
    success: bool | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": desc}
    for status, desc in ((400, "INVALID_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN"),
                         (404, "NOT_FOUND / INVALID_MODEL_ID"),
                         (429, "RATE_LIMITED / QUOTA_EXCEEDED"), (500, "INTERNAL_ERROR"))
}


def client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class ApiError(ClientError):
    """An error already in its client form: status, code and a message that is safe to
    show (written by the gateway, or a fixed one of ``gateway.protocol.errors``)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers) if headers else None  # e.g. Retry-After on a 429


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def provider_failure(stage: str, exc: ProviderError) -> ApiError:
    """The 502 of a stage whose providers all failed: the provider's text (an upstream
    traceback, its URL) goes to the log, the client reads the stage's fixed message."""
    log.warning("provider_error", stage=stage, error=str(exc))
    f = failure(exc, stage)
    return ApiError(f.status, f.code, f.message)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return error_response(400, "INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "INVALID_REQUEST")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(GatewayError)
    async def _gateway(request: Request, exc: GatewayError) -> JSONResponse:
        # One a route let through (for a provider, the stage is not known here).
        f = failure(exc)
        if f.code == errors.INTERNAL_ERROR:
            log.error("unhandled_error", path=request.url.path, exc_info=exc)
        else:
            log.warning("request_failed", path=request.url.path, code=f.code, error=str(exc))
        return error_response(f.status, f.code, f.message)

    @app.exception_handler(DBAPIError)
    async def _bad_data(request: Request, exc: DBAPIError) -> JSONResponse:
        # SQLSTATE class 22 (data exception): input the database cannot store, such as a
        # NUL character in PostgreSQL text. The client's fault, not ours.
        if _sqlstate(exc).startswith("22"):
            return error_response(400, "INVALID_REQUEST", "input contains characters or "
                                  "values that cannot be stored (e.g. a NUL character)")
        log.error("database_error", path=request.url.path, exc_info=exc)
        return error_response(500, errors.INTERNAL_ERROR, errors.INTERNAL_MESSAGE)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(500, errors.INTERNAL_ERROR, errors.INTERNAL_MESSAGE)


class CatchAll:
    """Pure ASGI, innermost: a bug in an HTTP route becomes the documented 500 here.

    Starlette answers an exception registered for ``Exception`` from its outermost
    middleware and then re-raises it, so the server drops the connection (a keep-alive
    client sees a reset on its next request). Caught here, the 500 is an ordinary
    response and the connection lives on. A response already started cannot be
    replaced: that exception goes on up.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            log.error("unhandled_error", path=scope.get("path", ""), exc_info=exc)
            response = error_response(500, errors.INTERNAL_ERROR, errors.INTERNAL_MESSAGE)
            await response(scope, receive, send)


def _sqlstate(exc: DBAPIError) -> str:
    orig = getattr(exc, "orig", None)
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None) or getattr(getattr(orig, "__cause__", None), attr,
                                                     None)
        if isinstance(value, str):
            return value
    return ""
