"""What the ``/api/v1`` platform routes share: bounded input types and credential checks.

Strings that reach the database are refused when PostgreSQL could not store them (NUL
characters, lone surrogates); JSON objects are bounded in size and must be plain JSON
(no NaN). A client sees 400 ``INVALID_REQUEST`` instead of a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.access.auth import Principal
from gateway.protocol import fields

from .deps import authed
from .errors import ApiError

MAX_BATCH = 100  # documents per import request (seed: "max 100 per request")
MAX_JSON_BYTES = 16 * 1024


def _clean_text(value: str) -> str:
    # The rules every transport uses (lengths are the models' own max_length).
    return fields.text(value, "text", len(value))


def _plain_json(value: Any) -> Any:
    return None if value is None else fields.plain_json(value, "value", MAX_JSON_BYTES)


CleanStr = Annotated[str, AfterValidator(_clean_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]
JsonList = Annotated[list[Any], AfterValidator(_plain_json)]
ChatModelId = Annotated[CleanStr, Field(min_length=1, max_length=64)]
# The caller, after the rate limits of the seed's endpoint group.
Caller = Annotated[Principal, Depends(authed("default"))]
ImportCaller = Annotated[Principal, Depends(authed("import"))]
SearchCaller = Annotated[Principal, Depends(authed("search"))]
QueryCaller = Annotated[Principal, Depends(authed("query"))]


class DocumentIn(BaseModel):
    """A document as the knowledge-base seed imports it."""

    model_config = ConfigDict(extra="ignore")

    title: CleanStr = Field(min_length=1, max_length=500)
    content: CleanStr = Field(min_length=1, description="size limit: knowledge.max_document_bytes")
    url: CleanStr | None = Field(default=None, max_length=2048)
    metadata: JsonObject | None = None


def check_document_sizes(contents: list[str], limit: int) -> None:
    """413 ``DOCUMENT_TOO_LARGE`` naming the first document over the limit."""
    for i, content in enumerate(contents):
        size = len(content.encode("utf-8"))
        if size > limit:
            raise ApiError(413, "DOCUMENT_TOO_LARGE",
                           f"documents[{i}] is {size} bytes; the limit is {limit} bytes: "
                           "split it into smaller documents")


def require_credential(principal: Principal) -> None:
    """The platform API is for integrations: an API token (or OAuth token), never anonymous."""
    if principal.kind == "anonymous":
        raise ApiError(401, "INVALID_TOKEN",
                       "an API token is required (Authorization: Bearer <token>)")


def require_admin(principal: Principal) -> None:
    require_credential(principal)
    if not principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "this needs an admin API key")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
