"""Classifying a turn's errors: transient ones are redelivered, deterministic ones end it."""

from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from assistant.agent.errors import GenerationFailed, PromptTooLong
from workers.failures import Kind, Retryable, classify


class OutOfMemoryError(RuntimeError):
    """Named as torch's is (torch.OutOfMemoryError): recognised by name."""


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RedisConnectionError("Connection refused"), "redis"),
        (RedisTimeoutError("Timeout reading from socket"), "redis"),
        (BusyLoadingError("loading the dataset in memory"), "redis"),
        (ResponseError("OOM command not allowed"), "redis"),
        (OperationalError("INSERT", {}, Exception("database is locked")), "database"),
        (PendingRollbackError("rolled back"), "database"),
        (ConnectionError("database went away"), "connection"),
        (TimeoutError(), "connection"),
        (MemoryError(), "out_of_memory"),
        (OutOfMemoryError("CUDA out of memory"), "out_of_memory"),
        (GenerationFailed("t:0", "engine failed: RuntimeError('boom')"), "engine_gone"),
        (GenerationFailed("t:0", "OutOfMemoryError('CUDA out of memory')"), "out_of_memory"),
        (RuntimeError("engine is closed"), "engine_gone"),
        (Retryable("conversation c of this tenant does not exist"), "not_found"),
    ],
)
def test_transient_errors_are_left_for_another_delivery(error: Exception, reason: str) -> None:
    failure = classify(error)
    assert failure.kind is Kind.TRANSIENT and failure.transient
    assert failure.reason == reason
    assert type(error).__name__ in failure.detail


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PromptTooLong(439, 416, 96), "prompt_too_long"),
        (
            ValueError("prompt too long: 439 prompt tokens + max_new_tokens=96 = 535 positions"),
            "prompt_too_long",
        ),
        (GenerationFailed("t:1", "IndexError('index out of range')"), "generation_error"),
        (ValueError("request_id must be a non-empty string"), "turn_error"),
        (KeyError("arguments"), "turn_error"),
        (AssertionError("the engine ended a request without a Final event"), "turn_error"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "turn_error"),
        (IntegrityError("INSERT", {}, Exception("NOT NULL constraint failed")), "turn_error"),
        (RuntimeError("the agent loop ended without a TurnFinished"), "turn_error"),
    ],
)
def test_errors_that_would_recur_end_the_turn(error: Exception, reason: str) -> None:
    failure = classify(error)
    assert failure.kind is Kind.DETERMINISTIC and not failure.transient
    assert failure.reason == reason
