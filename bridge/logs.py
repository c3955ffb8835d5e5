"""Logging set-up: structlog for bridge's own events, stdlib loggers (aiohttp, ccxt, asyncio, tenacity)
routed through the same processors, secrets scrubbed from every line, tracebacks without frame locals.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from bridge import secrets

_SECRET_FIELDS = frozenset({"api_key", "apikey", "secret", "password", "token", "x-api-key"})


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def scrub_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace secret values anywhere in the event (including rendered tracebacks) with `***`."""
    return {k: _scrub(k, v) for k, v in event_dict.items()}


def _scrub(key: str, value: Any) -> Any:
    if key.lower() in _SECRET_FIELDS and value is not None:
        return secrets.REDACTED
    if isinstance(value, str):
        return secrets.scrub(value)
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub("", v) for v in value]
    if isinstance(value, BaseException | secrets.Secret):
        return secrets.scrub(str(value))
    return value


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure logging once at start-up. `fmt` auto means console on a terminal, JSON otherwise."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() and not os.environ.get("JOURNAL_STREAM") else "json"
    renderer: Processor
    if fmt == "json":
        exceptions: Processor = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exceptions,
            scrub_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter below warning is noise for an operator; bridge's own loggers follow `level`.
    for noisy in ("aiohttp", "ccxt", "asyncio", "tenacity"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
