"""structlog set-up: JSON lines in production, readable lines in a terminal.

The standard library's loggers (uvicorn, websockets, asyncio, SQLAlchemy) write through
the same renderer, so the stream stays one JSON object per line even when a library
logs an exception (its traceback is then a field of that line, not loose text).
"""

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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *scrub,
                    renderer, *scrub],
        foreign_pre_chain=[structlog.stdlib.add_logger_name,
                           structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True),
                           structlog.processors.format_exc_info]))
    if redactor:
        handler.addFilter(redactor.logging_filter())
    root = logging.getLogger()
    for old in list(root.handlers):  # a second configure (tests) replaces, not adds
        if getattr(old, "_gateway", False):
            root.removeHandler(old)
    handler._gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # uvicorn's own logging config (when it ran with its defaults in this process) gives
    # "uvicorn" a plain-text handler and stops propagation: its lines, tracebacks
    # included, would bypass the renderer and the scrubber.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        lib.setLevel(logging.NOTSET)
    root.setLevel(max(level, logging.WARNING))
