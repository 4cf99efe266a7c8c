"""The ASGI application. Resources (models, key store) are owned by the lifespan."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import __version__
from gateway.access.auth import Authenticator, load_token_secret
from gateway.api import chat, knowledge, oauth, ratelimit
from gateway.api import sessions as sessions_api
from gateway.api.errors import CatchAll, install_error_handlers
from gateway.api.realtime_secrets import beta_sessions, client_secrets
from gateway.api.routes import router
from gateway.api.voice_routes import (
    OFFER_OPENAPI,
    OFFER_RESPONSES,
    TWIML_OPENAPI,
    TWIML_RESPONSES,
    twiml_endpoint,
    webrtc_offer,
)
from gateway.cluster.node import Cluster
from gateway.cluster.sessions import DrainGate, SessionRegistry
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.pipeline.runtime import Runtime
from gateway.store.assistants import (
    DEFAULT_ASSISTANT,
    assistant_providers,
    assistant_tools,
    ensure_default_assistant,
    get_assistant,
)
from gateway.store.db import Database
from gateway.store.keys import KeyStore
from gateway.store.retriever import Retriever
from gateway.store.semantic import SemanticSearch
from gateway.store.voice_log import VoiceLog
from gateway.tracing import Tracing
from gateway.transports.realtime import realtime_ws
from gateway.transports.twilio import twilio_ws
from gateway.transports.websocket import voice_ws
from gateway.web import install_pages

log = structlog.get_logger("gateway.app")


# How long a start waits for the knowledge base's vectors before it serves.
STARTUP_BACKFILL_WAIT_S = 20.0
# The voice WebSockets: each also a FastAPI route, reached directly by VoiceSockets.
VOICE_SOCKETS: dict[str, Callable[[WebSocket], Awaitable[None]]] = {
    "/api/v1/voice/ws": voice_ws,
    "/api/v1/voice/twilio": twilio_ws,
    "/v1/realtime": realtime_ws,  # OpenAI-Realtime-compatible: clients change the base URL
}


class VoiceSockets:
    """Pure ASGI: a WebSocket to a voice path goes straight to its endpoint.

    None of the HTTP middleware below it acts on WebSockets, yet each connect passed
    through all of it, the router's matching, FastAPI's dependency solving and an exit
    stack, and every later wake-up of the session's reader resumed that whole chain of
    coroutines. Placed inside DrainGate, so a draining node still refuses upgrades.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = VOICE_SOCKETS.get(scope["path"]) if scope["type"] == "websocket" else None
        if endpoint is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        await endpoint(WebSocket(scope, receive, send))


def create_app(cfg: Config, *, providers: dict[str, Any] | None = None) -> FastAPI:
    """``providers`` injects ready provider objects by stage (tests share loaded models)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_config(cfg)
        async with db.startup_lock():
            await db.migrate()
            await ensure_default_assistant(db, cfg)
        keys = KeyStore(db)
        runtime = await asyncio.to_thread(Runtime.load, cfg, overrides=providers)
        semantic = None
        if runtime.embedder is not None:  # else full-text search only
            semantic = SemanticSearch(db, runtime.embed, runtime.embedder.name,
                                      runtime.embedder.dim, cfg.embedder.min_similarity,
                                      functools.partial(runtime.embed, bulk=True))
            semantic.indexer.start_backfill()  # the sample knowledge, older rows
            # A fresh start must not answer its first questions from a half-embedded
            # knowledge base (passages without vectors rank by their words alone): wait
            # for it, bounded, before serving; a large backlog finishes in the background.
            await semantic.indexer.wait_backfill(STARTUP_BACKFILL_WAIT_S)
        runtime.retriever = Retriever(db, semantic)
        app.state.semantic = semantic
        if runtime.tools is not None:  # each assistant's declared function tools
            runtime.tools.declarations = functools.partial(assistant_tools, db)
        runtime.assistant_providers = functools.partial(assistant_providers, db)
        app.state.cfg = cfg
        app.state.db = db
        app.state.keys = keys
        app.state.auth = Authenticator(cfg, db, keys, load_token_secret(cfg))
        oauth.install(app)  # OAuth access tokens and legacy JWTs as bearer credentials
        app.state.limiter = await ratelimit.Limiter.create(cfg)  # None when disabled
        app.state.runtime = runtime
        app.state.metrics = Metrics(app.state)
        runtime.observers.append(app.state.metrics)
        tracing = Tracing(cfg.telemetry) if cfg.telemetry.traces else None
        if tracing is not None:
            runtime.observers.append(tracing)
        app.state.sessions = SessionRegistry(cfg.server.max_sessions)
        app.state.cluster = Cluster(cfg, app.state.sessions)
        await app.state.cluster.start()
        app.state.voice_log = VoiceLog(db)
        # Into the cache, last: the first callers of a burst need not wait for the query
        # (a failure here is only a cold cache).
        with suppress(Exception):
            await get_assistant(db, DEFAULT_ASSISTANT)
        log.info("gateway_ready", host=cfg.server.host, port=cfg.server.port,
                 providers={s: getattr(runtime, s).name for s in ("vad", "stt", "llm", "tts")})
        try:
            yield
        finally:
            await app.state.cluster.aclose()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)
            if app.state.limiter is not None:
                await app.state.limiter.aclose()
            await app.state.voice_log.flush()
            if semantic is not None:
                await semantic.indexer.aclose()
            await runtime.aclose()
            await db.close()

    app = FastAPI(title="gateway", version=__version__, lifespan=lifespan,
                  description="Real-time voice and avatar gateway. WebSocket protocol: "
                  "docs/protocol.md (ws /api/v1/voice/ws).")
    app.add_middleware(CatchAll)  # first added: innermost (a route's bug: a plain 500)
    if cfg.server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.server.cors_origins),
                           allow_methods=["*"], allow_headers=["*"],
                           expose_headers=[*ratelimit.HEADER_NAMES, "Retry-After"])
    app.add_middleware(ratelimit.RateLimitHeaders)
    app.add_middleware(VoiceSockets)
    app.add_middleware(DrainGate)
    install_error_handlers(app)
    # Reached through VoiceSockets; routes too, for a mount under a root path.
    for path, endpoint in VOICE_SOCKETS.items():
        app.add_api_websocket_route(path, endpoint)
    app.include_router(router)
    app.include_router(knowledge.router)
    app.include_router(chat.router)
    app.include_router(oauth.router)
    app.include_router(sessions_api.router)
    for method in ("GET", "POST"):  # one operation id each (OpenAPI wants them unique)
        app.add_api_route("/api/v1/voice/twilio/twiml", twiml_endpoint, methods=[method],
                          tags=["telephony"], summary="TwiML connecting a call to the gateway",
                          response_class=Response, responses=TWIML_RESPONSES,
                          openapi_extra=TWIML_OPENAPI, operation_id=f"twiml_{method.lower()}")
    app.add_api_route("/api/v1/voice/webrtc/offer", webrtc_offer, methods=["POST"],
                      tags=["voice"], summary="WebRTC: answer an SDP offer (one voice session)",
                      response_class=Response, responses=OFFER_RESPONSES,
                      openapi_extra=OFFER_OPENAPI)
    install_pages(app)  # the voice page (/) and the kiosk (/kiosk)
    _document_security(app)
    app.add_api_route("/v1/realtime/client_secrets", client_secrets, methods=["POST"],
                      tags=["realtime"], summary="Mint an ek_ client secret (one session)",
                      response_class=Response)
    app.add_api_route("/v1/realtime/sessions", beta_sessions, methods=["POST"],
                      tags=["realtime"], summary="Beta: session + client_secret",
                      response_class=Response)
    return app


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description":
                   "An API key (gw_…), a session token from /api/get-access-token, an "
                   "OAuth access token, or a legacy chatbot JWT (with x-use-chatbot-auth)."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "An API key (gw_…)."},
}


def _document_security(app: FastAPI) -> None:
    """Declare the credentials in the OpenAPI document (the auth is our own dependency,
    which FastAPI cannot describe). ``{}`` among the alternatives: some operations also
    take anonymous callers (health, tokens for anonymous-friendly assistants)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            schema["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}, {}]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

