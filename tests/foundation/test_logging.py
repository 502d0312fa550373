"""Structured logging: JSON lines with bound conversation and turn ids."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from assistant.core.log import bind_turn, configure_logging


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_turn_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines logged inside bind_turn carry conversation_id and turn_id."""
    configure_logging("json", "info")
    log = structlog.get_logger("test")
    with bind_turn("conv-1", "turn-9"):
        log.info("generating", steps=4)
    log.info("outside")
    first, second = _lines(capsys.readouterr().err)
    assert first["event"] == "generating" and first["steps"] == 4
    assert (first["conversation_id"], first["turn_id"]) == ("conv-1", "turn-9")
    assert "conversation_id" not in second


def test_stdlib_logging_goes_through_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    """A stdlib logger's line comes out as the same JSON."""
    configure_logging("json", "info")
    with bind_turn("conv-2"):
        logging.getLogger("some.library").warning("disk %s", "full")
    (line,) = _lines(capsys.readouterr().err)
    assert line["event"] == "disk full" and line["level"] == "warning"
    assert line["conversation_id"] == "conv-2" and line["logger"] == "some.library"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """Below the configured level nothing is written."""
    configure_logging("json", "warning")
    structlog.get_logger("test").info("hidden")
    assert capsys.readouterr().err == ""
