"""Running a tool call: validate the arguments, run with a timeout, never raise."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from assistant.tools.base import ToolContext, validate_arguments
from assistant.tools.registry import TOOLS
from assistant.tools.shop import Shop

log = structlog.get_logger(__name__)


@dataclass
class ToolOutcome:
    name: str
    arguments: dict[str, Any]
    status: str  # ok | error | timeout
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    milliseconds: float = 0.0

    def for_model(self) -> dict[str, Any]:
        """What the model reads back: the result, or a short error it can explain."""
        if self.status == "ok":
            return self.result
        return {
            "error": self.status if self.status == "timeout" else "tool_error",
            "message": self.error or "the tool failed",
        }


class ToolRunner:
    """Runs calls of the registered tools against one shop.

    ``timeout_s`` overrides every tool's own timeout when set (a deployment's cap).
    """

    def __init__(self, shop: Shop, timeout_s: float | None = None) -> None:
        self.shop = shop
        self.timeout_s = timeout_s

    async def run(self, context: ToolContext, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        outcome = ToolOutcome(name=name, arguments=dict(arguments), status="error")
        started = time.perf_counter()
        tool = TOOLS.get(name)
        if tool is None:
            outcome.error = f"no tool named {name!r}"
        elif (problem := validate_arguments(tool, arguments)) is not None:
            outcome.error = problem
        else:
            timeout_s = tool.timeout_s if self.timeout_s is None else self.timeout_s
            try:
                outcome.result = await asyncio.wait_for(
                    tool.handler(self.shop, context, dict(arguments)), timeout_s
                )
                outcome.status = "ok"
            except TimeoutError:
                outcome.status, outcome.error = "timeout", f"took over {timeout_s:g} s"
            except Exception as exc:  # a failing tool must not end the turn
                log.warning("tool failed", tool=name, error=repr(exc))
                outcome.error = f"{type(exc).__name__}: {exc}"
            if outcome.status == "ok" and not isinstance(outcome.result, dict):
                outcome.status, outcome.error = "error", "the tool returned something unusable"
                outcome.result = {}
        outcome.finished_at = datetime.now(UTC)
        outcome.milliseconds = (time.perf_counter() - started) * 1000
        return outcome
