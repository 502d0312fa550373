"""create_ticket: open a support ticket for a problem with an order."""

from __future__ import annotations

from typing import Any

from assistant.entities.slots import SlotKind
from assistant.tools.base import SUPPORT_CHANNELS, Tool, ToolContext, object_schema
from assistant.tools.shop import Shop

TICKET_CATEGORIES = ("damaged", "wrong_item", "missing_item", "billing", "other")


def ticket_view(ticket_id: str, category: str, order_id: str | None) -> dict[str, Any]:
    view: dict[str, Any] = {"ticket_id": ticket_id, "category": category, "status": "open"}
    if order_id:
        view["order_id"] = order_id
    return view


async def create_ticket(shop: Shop, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    number = await shop.open_ticket(
        ctx.tenant_id, args["category"], args.get("order_id"), ctx.conversation_id
    )
    return ticket_view(number, args["category"], args.get("order_id"))


TOOL = Tool(
    name="create_ticket",
    label="Opening a support ticket\u2026",
    description="Open a support ticket for a problem with an order.",
    parameters=object_schema(
        {
            "order_id": {"type": "string"},
            "category": {"type": "string", "enum": list(TICKET_CATEGORIES)},
        },
        ["category"],
    ),
    handler=create_ticket,
    channels=SUPPORT_CHANNELS,
    result_slots={"ticket_id": SlotKind.TICKET, "order_id": SlotKind.ORDER_ID},
)
