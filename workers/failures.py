"""Which errors of a turn end it at once, and which leave it for another delivery.

Pure: an exception in, a :class:`Failure` out. A worker that retries a turn only helps when
the cause can go away: Redis or the database unreachable, the process or its engine gone,
memory exhausted by the batch of the moment. Those are *transient*: the turn stays pending
and is redelivered (``TurnConsumer`` dead-letters it after ``max_deliveries``). Anything
else raised by the turn's own code (the agent loop, the prompt builder, the engine refusing
a request, a model output nothing can use) would fail the same way on every delivery, since
decoding is seeded by the turn: it is *deterministic*, and ``TurnHandler`` ends the turn at
the first delivery with the fallback reply, its reason logged and in the reply's
``usage.problem``.

A turn whose conversation or user message is not found is transient too: there is no
conversation to store a fallback reply in, and the dead letter tells the client instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError
from sqlalchemy import exc as sql

from assistant.agent.errors import GenerationFailed, PromptTooLong

__all__ = ["Failure", "Kind", "Retryable", "classify"]


class Kind(StrEnum):
    TRANSIENT = "transient"  # left pending: another delivery may succeed
    DETERMINISTIC = "deterministic"  # ended now with the fallback reply: it would recur


class Retryable(Exception):
    """Raised by the worker's own code for a condition another delivery may not meet."""


@dataclass(frozen=True)
class Failure:
    kind: Kind
    # A short code: the log's reason, the metric's label, and (deterministic) the stored
    # reply's usage.problem.
    reason: str
    detail: str  # the exception, for the log

    @property
    def transient(self) -> bool:
        return self.kind is Kind.TRANSIENT


# Database errors that say the connection or the server failed, not the statement.
_SQL_TRANSIENT: tuple[type[BaseException], ...] = (
    sql.OperationalError,  # connection lost, "database is locked", server shutting down
    sql.InterfaceError,
    sql.DisconnectionError,
    sql.TimeoutError,  # no pooled connection in time
    sql.PendingRollbackError,  # a session broken by one of the above
)

# What the engine says when it, not the request, failed (dlm_runtime/engine/scheduler.py).
_ENGINE_GONE = ("engine failed", "engine is closed")
_OUT_OF_MEMORY = ("out of memory", "outofmemoryerror")


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's OutOfMemoryError (recognised by name: no torch import here)."""
    return isinstance(exc, MemoryError) or any(
        cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify(exc: BaseException) -> Failure:
    """Whether ``exc``, raised while handling a turn, is transient or deterministic, and why."""
    detail = _describe(exc)

    def transient(reason: str) -> Failure:
        return Failure(Kind.TRANSIENT, reason, detail)

    def deterministic(reason: str) -> Failure:
        return Failure(Kind.DETERMINISTIC, reason, detail)

    if isinstance(exc, RedisError):
        return transient("redis")
    if isinstance(exc, _SQL_TRANSIENT) or (
        isinstance(exc, sql.DBAPIError) and exc.connection_invalidated
    ):
        return transient("database")
    if _out_of_memory(exc):
        return transient("out_of_memory")
    if isinstance(exc, OSError):  # sockets, ConnectionError, TimeoutError
        return transient("connection")
    if isinstance(exc, Retryable):
        return transient("not_found")
    if isinstance(exc, GenerationFailed):
        error = exc.error.lower()
        if any(marker in error for marker in _ENGINE_GONE):
            return transient("engine_gone")
        if any(marker in error for marker in _OUT_OF_MEMORY):
            return transient("out_of_memory")
        return deterministic("generation_error")
    if isinstance(exc, RuntimeError) and str(exc).startswith(_ENGINE_GONE):
        return transient("engine_gone")
    if isinstance(exc, PromptTooLong) or str(exc).startswith("prompt too long"):
        return deterministic("prompt_too_long")
    return deterministic("turn_error")
