"""handoff_to_human: give the conversation to the human operators."""

from __future__ import annotations

from typing import Any

from assistant.tools.base import SUPPORT_CHANNELS, Tool, ToolContext, object_schema
from assistant.tools.shop import Shop

HANDOFF_REASONS = ("customer_request", "complaint", "other")


def handoff_view() -> dict[str, Any]:
    return {"status": "waiting_for_human"}


async def handoff_to_human(shop: Shop, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    await shop.hand_off(ctx.tenant_id, ctx.conversation_id)
    return handoff_view()


TOOL = Tool(
    name="handoff_to_human",
    label="Finding a person to help\u2026",
    description="Hand the conversation to a human agent.",
    parameters=object_schema(
        {"reason": {"type": "string", "enum": list(HANDOFF_REASONS)}}, ["reason"]
    ),
    handler=handoff_to_human,
    channels=SUPPORT_CHANNELS,
)
