"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from gateway.config import Config, secret_values
from gateway.redact import Redactor


def configure_logging(cfg: Config) -> None:
    fmt = cfg.server.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    level = logging.getLevelName(cfg.server.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    # Secrets never reach a log line: scrubbed from the values, then from the rendered line.
    redactor = Redactor(secret_values(cfg))
    scrub: list[structlog.types.Processor] = [redactor.structlog_processor] if redactor else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *scrub,
            renderer,
            *scrub,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)
    if redactor:
        for handler in logging.getLogger().handlers:
            handler.addFilter(redactor.logging_filter())
