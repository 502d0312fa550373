"""Structured logging, configured once per process.

Library code logs through ``structlog.get_logger()``; stdlib loggers (alembic, websockets,
asyncio) are routed through the same processors. ``bind_turn`` puts the conversation and
turn ids into every line logged while a turn is handled.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr as console text or JSON lines."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        exc_processors: list[Any] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        exc_processors = []

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-frame websocket and SQL chatter drowns the lines that matter.
    for noisy in (
        "websockets",
        "sqlalchemy.engine",
        "aiosqlite",
        "asyncio",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@contextmanager
def bind_turn(conversation_id: str, turn_id: str | None = None) -> Iterator[None]:
    """Attach conversation and turn ids to every log line in this context."""
    values = {"conversation_id": conversation_id}
    if turn_id is not None:
        values["turn_id"] = turn_id
    with structlog.contextvars.bound_contextvars(**values):
        yield
