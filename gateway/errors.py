"""The gateway's one exception tree, and how a boundary reports any exception.

::

    GatewayError                    INTERNAL_ERROR (500): a bug or broken state
    ├── ClientError                 INVALID_REQUEST (400): the caller's input
    │   ├── AuthError               UNAUTHORIZED (401)
    │   │   ├── Forbidden           FORBIDDEN (403)
    │   │   └── UnknownAssistant    INVALID_MODEL_ID (404)
    │   └── LimitError              RATE_LIMITED (429)
    ├── ProviderError               PROVIDER_ERROR (502): an STT/LLM/TTS/... failed
    ├── ConfigError                 bad configuration (start-up only, never a client's)
    └── Closed                      the peer has gone (nothing to report to)

Every boundary (HTTP handlers, the SSE streams, each WebSocket transport) turns an
exception into what the client reads with ``failure(exc, stage)``: the code, the
status and a message. A ``ClientError``'s message is the gateway's own sentence about
the caller's input and is shown; for everything else the client reads the fixed
message of ``gateway.protocol.errors`` and the exception's text goes to the log only.
This module is pure (no I/O, no framework) so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol import errors as codes


class GatewayError(Exception):
    """Root of the gateway's exceptions. Raised as such: an internal error."""

    code: str = codes.INTERNAL_ERROR
    status: int = 500


class ClientError(GatewayError):
    """The caller's request is wrong; ``str(exc)`` is written for the caller."""

    code: str = codes.INVALID_REQUEST
    status: int = 400


class AuthError(ClientError):
    code: str = codes.UNAUTHORIZED
    status: int = 401


class Forbidden(AuthError):
    code: str = "FORBIDDEN"
    status: int = 403


class UnknownAssistant(AuthError):
    code: str = "INVALID_MODEL_ID"
    status: int = 404


class LimitError(ClientError):
    """A rate limit, a quota or a capacity bound refused the request."""

    code: str = codes.RATE_LIMITED
    status: int = 429


class ProviderError(GatewayError):
    """A provider failed; the turn gets ``PROVIDER_ERROR`` and the session goes on.
    Its text (an upstream's answer, a URL) is for the log only."""

    code: str = codes.PROVIDER_ERROR
    status: int = 502

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigError(GatewayError, ValueError):
    """The configuration (file, environment, secrets) is invalid."""


class Closed(GatewayError):
    """The other side has gone (a closed socket or outbox): there is no one to tell."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What a client is told about an exception."""

    code: str
    message: str
    status: int
    retryable: bool


def failure(exc: BaseException, stage: str | None = None) -> Failure:
    """The client's view of ``exc`` (``stage``: the pipeline stage it came from, which
    picks a provider failure's fixed message). Never the exception's own text, except a
    ``ClientError``'s, which the gateway wrote about the caller's input."""
    if isinstance(exc, ProviderError):
        message = codes.provider_message(stage) if stage else codes.PROVIDER_MESSAGE
        return Failure(exc.code, message, exc.status, exc.retryable)
    if isinstance(exc, ClientError):
        return Failure(exc.code, str(exc), exc.status, isinstance(exc, LimitError))
    return Failure(codes.INTERNAL_ERROR, codes.INTERNAL_MESSAGE, 500, True)
