"""HTTP routes of the core: health and session tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from gateway import __version__
from gateway.access.auth import AuthError

from .errors import ERROR_RESPONSES, ApiError, client_host
from .ratelimit import enforce, per_ip
from .v1base import CleanStr

router = APIRouter()


class AccessTokenRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    avatarId: str | None = Field(default=None, max_length=200)
    chatModelId: str | None = Field(default=None, max_length=64)
    voiceId: str | None = Field(default=None, max_length=200)
    systemPrompt: str | None = Field(default=None, max_length=8000)
    ttlSeconds: int | None = Field(default=None, description="token lifetime, 10 s to 2 h")
    user_id: CleanStr | None = Field(
        default=None, max_length=200,
        description="the end user the session acts for (a key minting for its app's "
        "users): it may resume only that user's conversations. Without one the session "
        "starts a new conversation whatever `conversation_id` it names.")


class AccessTokenResponse(BaseModel):
    token: str
    sessionId: str
    expiresAt: str


class StageDetails(BaseModel):
    providers: dict[str, str]
    failovers: int
    all_failed: int


class HealthResponse(BaseModel):
    status: str
    service: str  # seed 003 shows the service's name
    timestamp: str
    version: str
    providers: dict[str, str]
    # Every provider of each stage (primary and fallbacks): its circuit state, and the
    # stage's failover count.
    provider_details: dict[str, StageDetails] = {}



@router.get("/api/health", response_model=HealthResponse, tags=["health"],
            dependencies=[Depends(per_ip("health"))],
            responses={429: ERROR_RESPONSES[429]})
async def health(request: Request) -> dict[str, Any]:
    runtime = request.app.state.runtime
    providers = runtime.health()
    ok = all(v == "ok" for v in providers.values())
    return {
        "status": "ok" if ok else "degraded",
        "service": request.app.title,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "version": __version__,
        "providers": providers,
        "provider_details": runtime.provider_details(),
    }


class ReadyResponse(BaseModel):
    status: str  # ready | draining | full
    node: str
    active: int
    limit: int


@router.get("/api/health/ready", response_model=ReadyResponse, tags=["health"],
            responses={503: {"model": ReadyResponse, "description": "draining or full"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness for a load balancer: 503 while this node drains or is at
    ``server.max_sessions``, so new calls go elsewhere. ``/api/health`` stays liveness.
    Not rate-limited: probes come every few seconds from every balancer."""
    state = request.app.state
    sessions = state.sessions
    status = "draining" if sessions.draining else "ready" if sessions.ready else "full"
    body = {"status": status, "node": state.cluster.node_id, "active": sessions.active,
            "limit": sessions.limit}
    return JSONResponse(body, status_code=200 if status == "ready" else 503,
                        headers=None if status == "ready" else {"Retry-After": "1"})


class DrainResponse(BaseModel):
    status: str
    ended_in_time: bool  # every session ended before the deadline (none was cut)


@router.post("/api/health/drain", response_model=DrainResponse, tags=["health"],
             include_in_schema=False)
async def drain(request: Request) -> dict[str, Any]:
    """From the node itself only (a Kubernetes preStop hook): drain as SIGTERM does and
    answer when the sessions have ended or ``server.drain_timeout_s`` passed; the
    signal that follows then finds nothing to wait for."""
    if client_host(request) not in ("127.0.0.1", "::1"):
        raise ApiError(403, "FORBIDDEN", "drain is only accepted from the node itself")
    state = request.app.state
    await state.sessions.drain(state.cfg.server.drain_timeout_s)
    return {"status": "drained", "ended_in_time": not state.sessions.cut}


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus text format (gateway/metrics.py): live sessions per transport, turns,
    stage latency histograms, failovers, late audio, refused admissions, drain state."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.post("/api/get-access-token", response_model=AccessTokenResponse, tags=["auth"],
             responses=ERROR_RESPONSES)
async def get_access_token(request: Request, body: AccessTokenRequest) -> dict[str, Any]:
    """Mint a short-lived token for one voice session (call it server-side, with a key)."""
    auth = request.app.state.auth
    requested = body.chatModelId or request.headers.get("x-chat-model-id")
    try:
        principal = await auth.principal(request.headers, client_host(request), requested)
        if principal.kind not in ("api_key", "oauth"):
            raise AuthError("an API key is required to mint session tokens")
        await enforce(request, principal, "token")
        assistant_id = principal.assistant_for(requested)
        await auth.check_assistant(assistant_id)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    extra = {k: v for k, v in (("avatarId", body.avatarId), ("voiceId", body.voiceId),
                               ("systemPrompt", body.systemPrompt)) if v}
    try:
        result: dict[str, Any] = auth.mint(principal, assistant_id, body.ttlSeconds, extra,
                                           user_id=body.user_id)
        return result
    except ValueError as exc:
        raise ApiError(400, "INVALID_REQUEST", str(exc)) from None
