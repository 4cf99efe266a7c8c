"""Live sessions across the service (admin key): list them, end one.

In cluster mode the listing is every live node's (the Redis directory); on one node,
this process's. Ending a session is an event: the node holding it closes it within the
2 s budget with ``SESSION_ENDED`` (docs/protocol.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from redis.exceptions import RedisError

from gateway.cluster.events import SESSION_ENDED

from .envelope import EnvelopeRoute
from .errors import ERROR_RESPONSES, ApiError
from .v1base import Caller, CleanStr, require_admin

router = APIRouter(prefix="/api/v1", route_class=EnvelopeRoute, responses=ERROR_RESPONSES)
SessionPath = Annotated[CleanStr, Path(min_length=1, max_length=64)]


class LiveSession(BaseModel):
    session_id: str
    node: str
    transport: str
    assistant_id: str
    key_id: str | None
    started_at: float


class NodeState(BaseModel):
    node: str
    active: int
    limit: int
    draining: bool
    sessions: int


class SessionList(BaseModel):
    success: bool
    sessions: list[LiveSession]
    nodes: list[NodeState]


class SessionEnded(BaseModel):
    success: bool
    ended: str
    node: str


@router.get("/sessions", response_model=SessionList, tags=["sessions"])
async def list_sessions(request: Request, principal: Caller) -> dict[str, Any]:
    """Every live voice session on every live node (admin key)."""
    require_admin(principal)
    nodes = await _nodes(request)
    sessions = [{**s, "node": node} for node, state in nodes.items()
                for s in state["sessions"]]
    states = [{"node": node, "active": st.get("active", 0), "limit": st.get("limit", 0),
               "draining": bool(st.get("draining")), "sessions": len(st["sessions"])}
              for node, st in nodes.items()]
    return {"success": True, "sessions": sessions, "nodes": states}


@router.delete("/sessions/{session_id}", response_model=SessionEnded, tags=["sessions"])
async def end_session(request: Request, principal: Caller,
                      session_id: SessionPath) -> dict[str, Any]:
    """End a live session on whichever node holds it (admin key)."""
    require_admin(principal)
    nodes = await _nodes(request)
    holder = next((node for node, st in nodes.items()
                   if any(s["session_id"] == session_id for s in st["sessions"])), None)
    if holder is None:
        raise ApiError(404, "NOT_FOUND", "no live session with this id")
    await request.app.state.cluster.publish(SESSION_ENDED, session_id)
    return {"success": True, "ended": session_id, "node": holder}


async def _nodes(request: Request) -> dict[str, dict[str, Any]]:
    try:
        nodes: dict[str, dict[str, Any]] = await request.app.state.cluster.nodes()
        return nodes
    except (RedisError, OSError, TimeoutError) as exc:
        raise ApiError(503, "UNAVAILABLE", "the session directory is unreachable",
                       headers={"Retry-After": "1"}) from exc
