"""lookup_order: an order's status, items and tracking, when the customer's email matches."""

from __future__ import annotations

from typing import Any

from assistant.entities.slots import SlotKind
from assistant.tools.base import SUPPORT_CHANNELS, Tool, ToolContext, object_schema
from assistant.tools.shop import Order, Shop, money

NOT_FOUND = {
    "found": False,
    "error": "not_found",
    "message": "No order with that number was found for that email.",
}


def order_view(order: Order | None) -> dict[str, Any]:
    """The tool's result for an order (or for none): the training corpus builds it here too."""
    if order is None:
        return dict(NOT_FOUND)
    view: dict[str, Any] = {
        "order_id": order.number,
        "status": order.status,
        "placed_on": order.placed_on.isoformat(),
        "items": [item.name for item in order.items],
        "total": money(order.total_cents),
    }
    if order.carrier:
        view["carrier"] = order.carrier
        view["tracking_number"] = order.tracking_number
    if order.estimated_delivery:
        view["estimated_delivery"] = order.estimated_delivery.isoformat()
    return view


async def lookup_order(shop: Shop, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return order_view(await shop.find_order(ctx.tenant_id, args["order_id"], args["email"]))


TOOL = Tool(
    name="lookup_order",
    label="Looking up your order\u2026",
    description="Look up an order by its number; the customer's email must match the order.",
    parameters=object_schema(
        {
            "order_id": {"type": "string", "description": "order number, e.g. NW-123456"},
            "email": {"type": "string", "description": "the email the order was placed with"},
        },
        ["order_id", "email"],
    ),
    handler=lookup_order,
    channels=SUPPORT_CHANNELS,
    result_slots={
        "order_id": SlotKind.ORDER_ID,
        "tracking_number": SlotKind.TRACKING,
        "estimated_delivery": SlotKind.DATE,
        "placed_on": SlotKind.DATE,
        "items": SlotKind.PRODUCT,
        "total": SlotKind.AMOUNT,
        "carrier": SlotKind.CARRIER,
    },
    read_only=True,
)
