"""HTTP routes of the core: health and session tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import __version__

from .auth import AuthError
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


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> str:
    """Prometheus text format: sessions, failovers and exhausted chains per stage."""
    state = request.app.state
    lines = [
        "# TYPE gateway_sessions_active gauge",
        f"gateway_sessions_active {state.sessions.active}",
        "# TYPE gateway_sessions_total counter",
        f"gateway_sessions_total {state.sessions.total}",
        "# TYPE gateway_failovers_total counter",
        "# TYPE gateway_provider_chain_exhausted_total counter",
    ]
    for stage, detail in state.runtime.provider_details().items():
        lines.append(f'gateway_failovers_total{{stage="{stage}"}} {detail["failovers"]}')
        lines.append(f'gateway_provider_chain_exhausted_total{{stage="{stage}"}} '
                     f'{detail["all_failed"]}')
    for name, pool in state.runtime.pools.items():
        lines.append(f'gateway_pool_refused_total{{stage="{name}"}} {pool.refused}')
    return "\n".join(lines) + "\n"


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
