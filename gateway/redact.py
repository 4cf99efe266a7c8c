"""Keeping secrets out of text: log lines, error messages, anything shown to a client.

Providers scrub their own keys from the errors they raise; this is the second line:
every structlog line and every stdlib log record (uvicorn, httpx, the vendor SDKs) is
scrubbed of every secret value the configuration holds before it is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

MASK = "***"


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a value containing another is masked whole.
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub_value(v) for v in value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(str(value))  # objects would be rendered with their secrets

    # structlog: before the renderer (values) and after it (the rendered line).
    def structlog_processor(self, _logger: Any, _name: str,
                            event: MutableMapping[str, Any] | str | bytes) -> Any:
        if isinstance(event, str):
            return self.scrub(event)
        if isinstance(event, bytes):
            return self.scrub(event.decode("utf-8", "replace")).encode()
        return {k: self.scrub_value(v) for k, v in event.items()}

    def logging_filter(self) -> logging.Filter:
        return _ScrubFilter(self)


class _ScrubFilter(logging.Filter):
    """Scrubs a stdlib record's message and traceback in place (attach to handlers)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw template
            message = str(record.msg)
        record.msg, record.args = self.redactor.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        return True
