"""Field rules for everything a client sends: one place, used by every parser.

Each id, name and text a client sends (protocol v1, Twilio, Realtime, WebRTC offers) is
checked here before it reaches the pipeline or the database: its type, its length (the
limits match the database columns in ``gateway.store.models``), its characters (no NUL,
which PostgreSQL text refuses; no lone surrogates, which ``json.loads`` yields from
``"\\ud800"`` and no UTF-8 encoder takes) and, for ids and names, its shape. A bad field
raises ``FieldError`` with a message fit for the client (it names the field and the
rule, never echoes the value); each parser turns that into its protocol's error.

Pure functions, no I/O. The database's own constraints stay as the last line.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from gateway.errors import ClientError

# Limits, each matching the column the value ends up in (gateway/store/models.py).
ID_CHARS: Final = 64  # conversations.id, assistants.id: String(64)
LANGUAGE_CHARS: Final = 20  # assistants.language: String(20)
VOICE_CHARS: Final = 100  # assistants.voice: String(100)
MODEL_CHARS: Final = 100  # assistants.llm_model: String(100)
TEXT_CHARS: Final = 4000  # a typed user turn (messages.content; the LLM's context)
PROMPT_CHARS: Final = 8000  # a per-session system prompt (as /api/chat's system_prompt)
TOKEN_CHARS: Final = 4096  # a session token (JWT) or an API key
PARAM_CHARS: Final = 1000  # any other free-form parameter (Twilio customParameters)
JSON_BYTES: Final = 16 * 1024  # a client's JSON object (tools, metadata)

# Ids: ASCII letters and digits, then also ``_ - . :`` (what server-made ids, UUIDs and
# telephony ids use); nothing that needs quoting in a log line, a URL or SQL.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_SHOWN = re.compile(r"[A-Za-z0-9_.:-]{0,64}")  # what an error message may quote
# Tokens: base64url, JWT dots, API-key underscores (and classic base64's ``+/=``).
_TOKEN = re.compile(r"[A-Za-z0-9_.~+/=-]+")
# A NUL in encoded JSON: ``\u0000`` after an even number of backslashes (``\\u0000`` is
# the text "\u0000", which is fine).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class FieldError(ClientError, ValueError):
    """A client field broke a rule; ``str(exc)`` is the message for the client."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field} {rule}")
        self.field = field


def text(value: Any, field: str, max_chars: int = TEXT_CHARS) -> str:
    """A string of at most ``max_chars`` that PostgreSQL and UTF-8 can hold."""
    if not isinstance(value, str):
        raise FieldError(field, "must be a string")
    if len(value) > max_chars:
        raise FieldError(field, f"must be at most {max_chars} characters")
    if "\x00" in value:
        raise FieldError(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not Unicode text
        raise FieldError(field, "is not valid Unicode") from None
    return value


def ident(value: Any, field: str, max_chars: int = ID_CHARS) -> str:
    """An id: 1..max_chars of ``A-Z a-z 0-9 _ - . :``, starting with a letter or digit."""
    checked = text(value, field, max_chars)
    if not _ID.fullmatch(checked):
        raise FieldError(field, f"must be 1 to {max_chars} letters, digits or _ - . : "
                         "(starting with a letter or digit)")
    return checked


def name(value: Any, field: str, max_chars: int = VOICE_CHARS) -> str:
    """A name (a voice, a model, a language): printable characters on one line."""
    checked = text(value, field, max_chars)
    if not checked or not checked.isprintable():
        raise FieldError(field, f"must be 1 to {max_chars} printable characters")
    return checked


def token(value: Any, field: str, max_chars: int = TOKEN_CHARS) -> str:
    """A credential: base64url-ish characters only, bounded (checked for shape, not truth)."""
    checked = text(value, field, max_chars)
    if not _TOKEN.fullmatch(checked):
        raise FieldError(field, "is not a well-formed token")
    return checked


def shown(value: Any) -> str:
    """A client's name (an event type) fit to quote in an error: only a short id."""
    if isinstance(value, str) and _SHOWN.fullmatch(value):
        return repr(value)
    return "(not a valid name)"


def optional(rule: Any, value: Any, field: str, *args: Any) -> Any:
    """``rule(value, field, …)``, or None when the field is absent (None)."""
    return None if value is None else rule(value, field, *args)


def plain_json(value: Any, field: str, max_bytes: int = JSON_BYTES) -> Any:
    """A JSON value a database and an upstream API can take: no NaN, no NUL, valid
    Unicode, at most ``max_bytes`` encoded."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        raise FieldError(field, "must be plain JSON (no NaN, valid Unicode)") from None
    if _JSON_NUL.search(encoded):
        raise FieldError(field, "must not contain NUL characters")
    if len(encoded) > max_bytes:
        raise FieldError(field, f"must be at most {max_bytes} bytes of JSON")
    return value
