"""What the OpenAI speech providers share: the official client and the error mapping.

Errors become ``ProviderError`` with ``retryable`` set the way the failover chain needs
it (429 rate limits, 5xx, timeouts and connection errors: yes; a rejected key, an
exhausted quota, a bad request: no). Messages name the server without credentials and
never carry the key: OpenAI quotes part of a rejected key in its 401 message, so that
message is replaced, and any other message is scrubbed of the key.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx2
import openai
from openai import AsyncOpenAI

from gateway.redact import Redactor

from .base import ProviderError

# Local servers ignore the key, but the client refuses to start without one.
PLACEHOLDER_KEY = "not-needed"
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_DETAIL = 300


def make_client(base_url: str, api_key: str, *, timeout_s: float, connect_timeout_s: float,
                max_retries: int) -> AsyncOpenAI:
    # The read timeout also bounds every gap between two streamed chunks.
    return AsyncOpenAI(
        api_key=api_key or PLACEHOLDER_KEY,
        base_url=base_url,
        timeout=openai.Timeout(timeout_s, connect=connect_timeout_s, read=timeout_s),
        max_retries=max_retries,
    )


def safe_url(url: str) -> str:
    """The URL without user:password@, query or fragment (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "<server>"


class ErrorMapper:
    """Turns client exceptions into ProviderErrors for one provider ("transcription")."""

    def __init__(self, what: str, base_url: str, api_key: str, setting: str) -> None:
        self.what = what
        self.where = safe_url(base_url)
        self.setting = setting  # where the key is configured, for the 401 hint
        self._redactor = Redactor([api_key] if api_key else [])

    def scrub(self, text: str) -> str:
        return self._redactor.scrub(text)[:_MAX_DETAIL]

    def map(self, exc: Exception) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return ProviderError(f"{self.what} server at {self.where} timed out")
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
            name = type(cause).__name__ if cause else "connection error"
            return ProviderError(f"cannot reach {self.what} server at {self.where} ({name})")
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
            return ProviderError(f"{self.what} server at {self.where} sent an invalid response",
                                 retryable=False)
        if isinstance(exc, openai.APIError):  # an error event inside a stream
            return ProviderError(f"{self.what} stream error: {self.scrub(exc.message)}")
        return ProviderError(f"{self.what} client error: {type(exc).__name__}", retryable=False)

    def _status_error(self, exc: openai.APIStatusError) -> ProviderError:
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        code = exc.code or exc.type or "error"
        retryable = status in _RETRYABLE_STATUS or status >= 500
        if code == "insufficient_quota":  # a 429 that no retry will fix
            retryable = False
        if status == 401:
            detail = f"the API key was rejected; check {self.setting}"
        else:
            detail = self.scrub(str(body.get("message") or exc.message))
        request_id = f", request id {exc.request_id}" if exc.request_id else ""
        return ProviderError(
            f"{self.what} server returned HTTP {status} ({code}{request_id}): {detail}",
            retryable=retryable,
        )
