"""Running a tool call: validate the arguments, run with a timeout, never raise.

The store tools work on a :class:`StoreBackend`: SQL when serving (``SqlBackend``), the
in-memory demo store in the evaluation (``MemoryBackend``), so both run the same tool code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from assistant.demo import shop as demo
from assistant.tools import views
from assistant.tools.specs import ALL_TOOLS, ToolSpec

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 5.0


class StoreBackend(Protocol):
    async def find_order(self, tenant_id: str, number: str, email: str) -> demo.Order | None: ...

    async def article(self, tenant_id: str, topic: str) -> demo.Article | None: ...

    async def open_ticket(
        self,
        tenant_id: str,
        category: str,
        order_number: str | None,
        conversation_id: str | None,
    ) -> str: ...

    async def hand_off(self, tenant_id: str, conversation_id: str | None) -> None: ...


@dataclass(frozen=True)
class ToolContext:
    tenant_id: str
    conversation_id: str | None = None


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


def validate_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    """A sentence saying what is wrong with the arguments, or None when they fit the schema."""
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    for name in spec.required:
        if name not in arguments:
            return f"missing argument {name!r}"
    for name, value in arguments.items():
        schema = properties.get(name)
        if schema is None:
            return f"unknown argument {name!r}"
        if schema.get("type") == "string" and not isinstance(value, str):
            return f"argument {name!r} must be a string"
        if "enum" in schema and value not in schema["enum"]:
            return f"argument {name!r} must be one of {', '.join(schema['enum'])}"
    return None


Handler = Callable[[ToolContext, dict[str, Any]], Awaitable[dict[str, Any]]]


class ToolRunner:
    """Dispatches tool calls by name to their handlers."""

    def __init__(self, backend: StoreBackend, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.handlers: dict[str, Handler] = {
            "lookup_order": self._lookup_order,
            "search_kb": self._search_kb,
            "create_ticket": self._create_ticket,
            "handoff_to_human": self._handoff,
            "check_answer": self._check_answer,
        }

    async def run(self, context: ToolContext, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        outcome = ToolOutcome(name=name, arguments=dict(arguments), status="error")
        started = time.perf_counter()
        spec, handler = ALL_TOOLS.get(name), self.handlers.get(name)
        if spec is None or handler is None:
            outcome.error = f"no tool named {name!r}"
        elif (problem := validate_arguments(spec, arguments)) is not None:
            outcome.error = problem
        else:
            try:
                outcome.result = await asyncio.wait_for(
                    handler(context, dict(arguments)), self.timeout_s
                )
                outcome.status = "ok"
            except TimeoutError:
                outcome.status, outcome.error = "timeout", f"took over {self.timeout_s:g} s"
            except Exception as exc:  # a failing tool must not end the turn
                log.warning("tool failed", tool=name, error=repr(exc))
                outcome.error = f"{type(exc).__name__}: {exc}"
            if outcome.status == "ok" and not isinstance(outcome.result, dict):
                outcome.status, outcome.error = "error", "the tool returned something unusable"
                outcome.result = {}
        outcome.finished_at = datetime.now(UTC)
        outcome.milliseconds = (time.perf_counter() - started) * 1000
        return outcome

    async def _lookup_order(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        order = await self.backend.find_order(ctx.tenant_id, args["order_id"], args["email"])
        return views.order_view(order)

    async def _search_kb(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        article = await self.backend.article(ctx.tenant_id, args["topic"])
        if article is None:
            return {"found": False, "error": "not_found", "message": "No article on that topic."}
        return views.kb_view(article)

    async def _create_ticket(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        number = await self.backend.open_ticket(
            ctx.tenant_id, args["category"], args.get("order_id"), ctx.conversation_id
        )
        return views.ticket_view(number, args["category"], args.get("order_id"))

    async def _handoff(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        await self.backend.hand_off(ctx.tenant_id, ctx.conversation_id)
        return views.handoff_view()

    async def _check_answer(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        from assistant.tutoring.checker import check_answer

        return check_answer(args["exercise"], args["answer"])


class MemoryBackend:
    """The demo store in memory: the evaluation's tools, no database needed."""

    def __init__(self, data: demo.Store, first_ticket: int = 60000) -> None:
        self.orders = {order.number: order for order in data.orders}
        self.articles = {article.topic: article for article in data.articles}
        self.next_ticket = first_ticket
        self.handed_off: list[str | None] = []

    async def find_order(self, tenant_id: str, number: str, email: str) -> demo.Order | None:
        order = self.orders.get(number.strip().upper())
        if order is None or order.email.lower() != email.strip().lower():
            return None
        return order

    async def article(self, tenant_id: str, topic: str) -> demo.Article | None:
        return self.articles.get(topic)

    async def open_ticket(
        self,
        tenant_id: str,
        category: str,
        order_number: str | None,
        conversation_id: str | None,
    ) -> str:
        self.next_ticket += 1
        return f"T-{self.next_ticket}"

    async def hand_off(self, tenant_id: str, conversation_id: str | None) -> None:
        self.handed_off.append(conversation_id)
