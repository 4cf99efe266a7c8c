"""Realtime client secrets: ``POST /v1/realtime/client_secrets`` (GA) and
``POST /v1/realtime/sessions`` (beta), called server-side with an API key.

A secret is ``ek_`` + one of the core's single-use session tokens (signed, short-lived):
the browser connects to ``/v1/realtime`` with it instead of the API key. The session
configuration sent here travels inside the token and is the new session's starting
configuration. Unlike OpenAI's secrets, which open any number of sessions until they
expire, a gateway secret opens ONE session (the core's token rule).

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, since
the callers are OpenAI clients.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access.auth import AuthError, Principal
from gateway.api.errors import ApiError, client_host
from gateway.api.ratelimit import enforce
from gateway.protocol import realtime as rt
from gateway.protocol.realtime_events import ServerEvents
from gateway.transports.realtime import initial_config, vad_defaults

MAX_BODY = 64 * 1024


def _error(status: int, message: str, code: str | None, param: str | None = None,
           kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise rt.Invalid("request body too large")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise rt.Invalid("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise rt.Invalid("the body must be a JSON object")
    return body


async def _caller(request: Request, model: str | None) -> tuple[Principal, str]:
    auth = request.app.state.auth
    requested = request.headers.get("x-chat-model-id") or request.query_params.get("assistant_id")
    principal: Principal = await auth.principal(request.headers, client_host(request), requested)
    if principal.kind not in ("api_key", "oauth"):
        raise AuthError("an API key is required to create client secrets")
    await enforce(request, principal, "token")
    if not requested and model:
        try:  # a model that names an assistant picks it
            await auth.check_assistant(model)
            requested = model
        except AuthError:
            pass
    assistant_id = principal.assistant_for(requested)
    await auth.check_assistant(assistant_id)
    return principal, assistant_id


def _ttl(body: dict[str, Any], default: int) -> int:
    expires = body.get("expires_after")
    if expires is None:
        return default
    seconds = expires.get("seconds", default) if isinstance(expires, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise rt.Invalid("expires_after.seconds must be an integer", "expires_after.seconds")
    return seconds


async def _mint(request: Request, session: Any, ttl: int | None,
                beta: bool) -> tuple[dict[str, Any], str, int]:
    """Validate the session, mint the token; (session JSON, ek_ value, expires_at)."""
    cfg = request.app.state.cfg
    if not isinstance(session, dict):
        raise rt.Invalid("session must be an object", "session")
    model = session.get("model") if isinstance(session.get("model"), str) else None
    principal, assistant_id = await _caller(request, model)
    config = rt.apply_session(initial_config(cfg, {}, model), session)
    ttl = cfg.auth.token_ttl_s if ttl is None else ttl
    try:
        minted = request.app.state.auth.mint(principal, assistant_id, ttl, {"realtime": session})
    except ValueError as exc:
        raise rt.Invalid(str(exc), "expires_after.seconds") from None
    expires_at = int(time.time()) + ttl
    events = ServerEvents(beta=beta, vad=vad_defaults(cfg))
    return events.session_json(config, minted["sessionId"], expires_at), \
        "ek_" + minted["token"], expires_at


async def client_secrets(request: Request) -> JSONResponse:
    """GA: ``{"expires_after": {"anchor", "seconds"}, "session": {...}}`` →
    ``{"value": "ek_…", "expires_at", "session"}``."""
    try:
        body = await _body(request)
        session_json, value, expires_at = await _mint(
            request, body.get("session") or {"type": "realtime"},
            _ttl(body, request.app.state.cfg.auth.token_ttl_s), beta=False)
    except rt.Invalid as exc:
        return _error(400, str(exc), exc.code, exc.param)
    except AuthError as exc:
        return _error(exc.status, str(exc), exc.code.lower(), kind="authentication_error")
    except ApiError as exc:  # the rate limiter's 429
        return _error(exc.status, exc.message, "rate_limit_exceeded", kind="rate_limit_error")
    return JSONResponse({"value": value, "expires_at": expires_at, "session": session_json})


async def beta_sessions(request: Request) -> JSONResponse:
    """Beta: the session object in the body → the session with ``client_secret``."""
    try:
        body = await _body(request)
        session_json, value, expires_at = await _mint(request, body, None, beta=True)
    except rt.Invalid as exc:
        return _error(400, str(exc), exc.code, exc.param)
    except AuthError as exc:
        return _error(exc.status, str(exc), exc.code.lower(), kind="authentication_error")
    except ApiError as exc:
        return _error(exc.status, exc.message, "rate_limit_exceeded", kind="rate_limit_error")
    session_json["client_secret"] = {"value": value, "expires_at": expires_at}
    return JSONResponse(session_json)
