"""The documented error codes, and the one fixed message a client reads for each failure.

Every transport and HTTP route reports a server-side failure through this table, so a
client never reads a provider's or an exception's own text: an upstream that answers
500 with its traceback, a TTS at a closed port, a database error would otherwise put
file paths, host names, URLs or user names into the ``error`` event or the error body.
That text goes to the server log only, bound to the session id (the callers log it).
Errors about the client's own input (``INVALID_REQUEST``, ``UNAUTHORIZED``, rate
limits) keep their specific messages: they are written by the gateway, not copied.
"""

from __future__ import annotations

from typing import Final

# Error codes of the published API documents (docs/protocol.md, the seeds' error tables).
INVALID_REQUEST: Final = "INVALID_REQUEST"
UNAUTHORIZED: Final = "UNAUTHORIZED"
RATE_LIMITED: Final = "RATE_LIMITED"
PROVIDER_ERROR: Final = "PROVIDER_ERROR"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"

# PROVIDER_ERROR, per pipeline stage.
PROVIDER_MESSAGES: Final = {
    "vad": "voice detection is unavailable, please try again",
    "stt": "speech recognition is unavailable, please try again",
    "llm": "the language model is unavailable, please try again",
    "tts": "speech synthesis is unavailable, please try again",
}
PROVIDER_MESSAGE: Final = "a provider is unavailable, please try again"
STT_BEHIND: Final = "speech recognition is behind; a turn was dropped, please repeat it"
INTERNAL_MESSAGE: Final = "internal error"
SESSION_ENDS: Final = "internal error; the session ends"
# INTERNAL_ERROR that does not end the session: one turn is missing from the history.
TURN_NOT_STORED: Final = "this turn could not be saved to the conversation history"


def provider_message(stage: str) -> str:
    """What a client reads when ``stage``'s providers all failed (never their errors)."""
    return PROVIDER_MESSAGES.get(stage, PROVIDER_MESSAGE)

# Sessions ended from outside (another node, the API, shutdown): docs/protocol.md.
SESSION_ENDED: Final = "SESSION_ENDED"
UNAVAILABLE: Final = "UNAVAILABLE"
# A session ended from outside, by reason (gateway.pipeline.events.ENDINGS): the error
# it gets (code, message, retryable).
ENDINGS: Final = {
    "key_revoked": (UNAUTHORIZED, "the API key of this session was revoked", False),
    "assistant_deleted": (UNAUTHORIZED, "the assistant of this session was deleted", False),
    "ended": (SESSION_ENDED, "the session was ended by the service", False),
    "restarting": (UNAVAILABLE, "the server is restarting; reconnect to continue", True),
}
