"""The HTTP routes that set up voice sessions: the WebRTC offer (one peer connection = one
session, ``gateway.transports.webrtc``) and the TwiML that connects a phone call to the
Twilio media stream (``gateway.transports.twilio``). The transports themselves serve
only their wire; these routes are HTTP like the rest of ``gateway.api``."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import structlog
from aiortc import RTCSessionDescription
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.access.auth import AuthError, SessionGrant, bearer_or_header
from gateway.protocol import fields
from gateway.protocol import twilio as tw
from gateway.session_host import SessionHost
from gateway.transports.webrtc import WebRTCPeer, hub_of

from .errors import ApiError, ErrorBody

log = structlog.get_logger("gateway.webrtc")

MAX_OFFER_BYTES = 64 * 1024


# --- WebRTC ---------------------------------------------------------------------------------

# Its OpenAPI declaration (the route reads the raw body itself, to bound it first).
OFFER_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {
        "type": "object", "required": ["sdp", "type"],
        "properties": {"sdp": {"type": "string", "pattern": "^v=0"},
                       "type": {"type": "string", "enum": ["offer"]},
                       "token": {"type": "string"}, "assistant_id": {"type": "string"}},
    }}}}}
_ANSWER = {"type": "object", "required": ["sdp", "type", "session_id"],
           "properties": {k: {"type": "string"} for k in ("sdp", "type", "session_id")}}
OFFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the SDP answer",
          "content": {"application/json": {"schema": _ANSWER}}},
    **{status: {"model": ErrorBody, "description": desc} for status, desc in (
        (400, "INVALID_REQUEST"), (401, "UNAUTHORIZED"), (403, "FORBIDDEN"),
        (404, "INVALID_MODEL_ID"), (413, "INVALID_REQUEST: offer too large"),
        (429, "RATE_LIMITED"), (503, "RATE_LIMITED: at capacity, or shutting down"))},
}


async def webrtc_offer(request: Request) -> JSONResponse:
    """Answer an SDP offer: ``{"sdp","type":"offer","token"?}`` → ``{"sdp","type":"answer",
    "session_id"}``. Auth as for the WebSocket: a session token (body, ``?token=`` or
    Bearer), an API key, or anonymous where allowed."""
    body = await _read_offer(request)
    state = request.app.state
    hub = hub_of(request.app)
    # Room is reserved before auth, so a single-use token is not spent on a refusal.
    if hub.pending >= state.cfg.webrtc.max_pending_offers:
        raise ApiError(503, "RATE_LIMITED", "too many WebRTC connections being set up",
                       headers={"Retry-After": "1"})
    host = SessionHost(state, "webrtc")
    refusal = host.reserve()
    if refusal is not None:
        raise ApiError(503, "RATE_LIMITED", refusal.message, headers={"Retry-After": "5"})
    hub.pending += 1
    try:
        grant = await _authenticate(request, body)
        refusal = await host.admit(grant)
        if refusal is not None:
            raise ApiError(429, refusal.code, refusal.message,
                           headers={"Retry-After": str(refusal.retry_after)})
        await host.resolve()
        peer = WebRTCPeer(host, hub)  # owns the reservation from here on
    except BaseException:
        hub.pending -= 1
        await host.close()
        raise
    try:
        answer = await peer.answer(RTCSessionDescription(sdp=body["sdp"], type="offer"))
    except BaseException:
        await peer.close("offer failed")
        raise
    peer.start()
    return JSONResponse({"sdp": answer.sdp, "type": answer.type, "session_id": grant.session_id})


async def _read_offer(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_OFFER_BYTES:
        raise ApiError(413, "INVALID_REQUEST", f"offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "INVALID_REQUEST", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_REQUEST", "body must be a JSON object")
    if body.get("type") != "offer":
        raise ApiError(400, "INVALID_REQUEST", 'type must be "offer"')
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ApiError(400, "INVALID_REQUEST", "sdp must be an SDP offer")
    try:  # the same field rules as every other transport (gateway/protocol/fields.py)
        fields.text(sdp, "sdp", MAX_OFFER_BYTES)
        fields.optional(fields.token, body.get("token"), "token")
        fields.optional(fields.ident, body.get("assistant_id"), "assistant_id")
    except fields.FieldError as exc:
        raise ApiError(400, "INVALID_REQUEST", str(exc)) from None
    return body


async def _authenticate(request: Request, body: dict[str, Any]) -> SessionGrant:
    auth = request.app.state.auth
    token = body.get("token") or request.query_params.get("token")
    requested = (body.get("assistant_id") or request.query_params.get("assistant_id")
                 or request.headers.get("x-chat-model-id"))
    client = request.client.host if request.client else "unknown"
    bearer = bearer_or_header(request.headers)
    try:
        if not token and bearer and not bearer.startswith("gw_") and bearer.count(".") == 2:
            # A session token as Bearer; if it is not one, other bearer kinds get their turn.
            with contextlib.suppress(AuthError):
                grant: SessionGrant = await auth.redeem(bearer)
                return grant
        grant = await auth.websocket_grant(token, request.headers, client, requested)
        return grant
    except AuthError as exc:
        log.info("webrtc_auth_refused", reason=str(exc))
        raise ApiError(exc.status, exc.code, str(exc)) from None


# --- Twilio ---------------------------------------------------------------------------------

TWIML_OPENAPI: dict[str, Any] = {"parameters": [
    {"name": "assistant_id", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the assistant answering the call (default: the key's)"}]}
TWIML_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "TwiML", "content": {"application/xml": {"schema": {"type": "string"}}}},
    **{status: {"model": ErrorBody, "description": desc} for status, desc in (
        (401, "UNAUTHORIZED"), (403, "FORBIDDEN"), (404, "INVALID_MODEL_ID"))},
}


async def twiml_endpoint(request: Request) -> Response:
    """TwiML for an incoming call: ``<Connect><Stream>`` to this gateway, carrying a fresh
    single-use session token (so the media stream needs no other credential).

    Authenticated with an API key: a Bearer/x-api-key header, or HTTP basic auth with the
    key as the password (what a Twilio webhook URL can carry).
    """
    auth = request.app.state.auth
    presented = bearer_or_header(request.headers) or _basic_password(request)
    requested = request.query_params.get("assistant_id")
    try:
        principal = auth.key_principal(await auth.api_key(presented))
        assistant_id = principal.assistant_for(requested)
        await auth.check_assistant(assistant_id)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    minted = auth.mint(principal, assistant_id, None, {})
    scheme = "wss" if request.url.scheme in ("https", "wss") else "ws"
    url = f"{scheme}://{request.url.netloc}/api/v1/voice/twilio"
    body = tw.twiml(url, {"token": minted["token"], "assistant_id": assistant_id})
    return Response(body, media_type="application/xml")


def _basic_password(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None
