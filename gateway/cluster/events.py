"""Events between nodes: which live sessions an API action ends, and how (pure).

A node that revokes a key, deletes an assistant or ends a session handles the event
itself and publishes it; every node closes the matching sessions it holds, each with
the documented error and close code (docs/protocol.md, "Errors").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

from gateway.pipeline import events as ev

KEY_REVOKED: Final = "key_revoked"
ASSISTANT_DELETED: Final = "assistant_deleted"
SESSION_ENDED: Final = "session_ended"
KINDS: Final = (KEY_REVOKED, ASSISTANT_DELETED, SESSION_ENDED)

CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_NORMAL: Final = 1000


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the registry knows of a live session (no words, no secrets)."""

    session_id: str
    transport: str  # ws | twilio | realtime | webrtc
    assistant_id: str
    key_id: str | None  # the API key it was opened with, or that minted its token
    started_at: float  # Unix time

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # one of KINDS
    target: str  # the key id, assistant id or session id
    origin: str = ""  # the publishing node (it handled the event already)

    def encode(self) -> str:
        return json.dumps({"kind": self.kind, "target": self.target, "origin": self.origin})

    @staticmethod
    def decode(data: str | bytes) -> Event | None:
        """None for anything that is not a well-formed event (never raises)."""
        try:
            raw = json.loads(data)
        except (ValueError, TypeError):
            return None
        if not isinstance(raw, dict):
            return None
        kind, target, origin = raw.get("kind"), raw.get("target"), raw.get("origin", "")
        if kind not in KINDS or not isinstance(target, str) or not isinstance(origin, str):
            return None
        return Event(kind, target, origin)

    def matches(self, info: SessionInfo) -> bool:
        if self.kind == KEY_REVOKED:
            return info.key_id == self.target
        if self.kind == ASSISTANT_DELETED:
            return info.assistant_id == self.target
        return info.session_id == self.target

    def ending(self) -> tuple[int, str]:
        """The close code and the pipeline's ending reason (``events.ENDINGS``, which
        each wire renders as its documented error) for a matching session."""
        if self.kind == KEY_REVOKED:
            return CLOSE_UNAUTHORIZED, ev.KEY_REVOKED
        if self.kind == ASSISTANT_DELETED:
            return CLOSE_UNAUTHORIZED, ev.ASSISTANT_DELETED
        return CLOSE_NORMAL, ev.ENDED_BY_ADMIN


def key_of(subject: str, key_id: str | None) -> str | None:
    """The API key behind a credential: the key itself, or the key that minted a session
    token (its subject is ``key:<id>``)."""
    if key_id:
        return key_id
    return subject[4:] if subject.startswith("key:") else None
