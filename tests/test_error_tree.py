"""The exception tree and what a client reads for each branch."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.access.auth import AuthError as ApiAuthError
from gateway.api.errors import ApiError
from gateway.api.ratelimit import RateLimited
from gateway.config import ConfigError
from gateway.pipeline.outbox import OutboxClosed
from gateway.pipeline.pool import PoolBusy
from gateway.pipeline.tool_kinds import ToolFailure
from gateway.protocol.fields import FieldError
from gateway.protocol.realtime import Invalid
from gateway.providers.base import ProviderError as BaseProviderError
from gateway.secretfile import SecretsFileError
from gateway.store.users import StoreError


@pytest.mark.parametrize("cls", [ApiAuthError, ApiError, RateLimited, ConfigError, OutboxClosed,
                                 PoolBusy, ToolFailure, FieldError, Invalid, BaseProviderError,
                                 SecretsFileError, StoreError])
def test_every_gateway_exception_is_a_gateway_error(cls: type) -> None:
    assert issubclass(cls, errors.GatewayError)


def test_a_provider_failure_reads_as_its_stage_never_its_text() -> None:
    exc = errors.ProviderError("upstream 500 at http://10.0.0.5:8000/v1: Traceback",
                               retryable=False)
    f = errors.failure(exc, "tts")
    assert (f.code, f.status, f.retryable) == ("PROVIDER_ERROR", 502, False)
    assert f.message == "speech synthesis is unavailable, please try again"
    assert errors.failure(exc).message == "a provider is unavailable, please try again"


def test_a_plain_exception_is_internal() -> None:
    f = errors.failure(RuntimeError("bug in /srv/app/x.py"))
    assert (f.code, f.message, f.status) == ("INTERNAL_ERROR", "internal error", 500)
    assert errors.failure(errors.GatewayError("state")).code == "INTERNAL_ERROR"


def test_client_errors_keep_their_own_words_and_status() -> None:
    f = errors.failure(errors.UnknownAssistant("no assistant named x"))
    assert (f.code, f.status, f.message) == ("INVALID_MODEL_ID", 404, "no assistant named x")
    assert errors.failure(errors.Forbidden("not yours")).status == 403
    assert errors.failure(errors.LimitError("slow down")).retryable
    assert errors.failure(FieldError("voice", "is too long")).code == "INVALID_REQUEST"
