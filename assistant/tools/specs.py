"""What each tool is called with and which fields of its result are entity slots.

The model sees tool results with these fields replaced by placeholders (see
``assistant.entities.slots``); the parameter schemas are what the tools validate arguments against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assistant.entities.slots import SlotKind

KB_TOPICS = (
    "shipping",
    "returns",
    "refunds",
    "exchanges",
    "warranty",
    "payment",
    "account",
    "cancellation",
    "international",
    "contact",
)
TICKET_CATEGORIES = ("damaged", "wrong_item", "missing_item", "billing", "other")
HANDOFF_REASONS = ("customer_request", "complaint", "other")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    # Result fields whose values enter the prompt as placeholders of this kind.
    result_slots: Mapping[str, SlotKind] = field(default_factory=dict)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get("required", ()))


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


LOOKUP_ORDER = ToolSpec(
    name="lookup_order",
    description="Look up an order by its number; the customer's email must match the order.",
    parameters=_object(
        {
            "order_id": {"type": "string", "description": "order number, e.g. NW-123456"},
            "email": {"type": "string", "description": "the email the order was placed with"},
        },
        ["order_id", "email"],
    ),
    result_slots={
        "order_id": SlotKind.ORDER_ID,
        "tracking_number": SlotKind.TRACKING,
        "estimated_delivery": SlotKind.DATE,
        "placed_on": SlotKind.DATE,
        "items": SlotKind.PRODUCT,
        "total": SlotKind.AMOUNT,
        "carrier": SlotKind.CARRIER,
    },
)

SEARCH_KB = ToolSpec(
    name="search_kb",
    description="Find the store's help article on a topic.",
    parameters=_object({"topic": {"type": "string", "enum": list(KB_TOPICS)}}, ["topic"]),
    result_slots={"answer": SlotKind.KB},
)

CREATE_TICKET = ToolSpec(
    name="create_ticket",
    description="Open a support ticket for a problem with an order.",
    parameters=_object(
        {
            "order_id": {"type": "string"},
            "category": {"type": "string", "enum": list(TICKET_CATEGORIES)},
        },
        ["category"],
    ),
    result_slots={"ticket_id": SlotKind.TICKET, "order_id": SlotKind.ORDER_ID},
)

HANDOFF_TO_HUMAN = ToolSpec(
    name="handoff_to_human",
    description="Hand the conversation to a human agent.",
    parameters=_object({"reason": {"type": "string", "enum": list(HANDOFF_REASONS)}}, ["reason"]),
)

CHECK_ANSWER = ToolSpec(
    name="check_answer",
    description="Check a student's answer to an exercise exactly.",
    parameters=_object(
        {"exercise": {"type": "string"}, "answer": {"type": "string"}}, ["exercise", "answer"]
    ),
    result_slots={
        "expected": SlotKind.EXPR,
        "explanation": SlotKind.HINT,
        "hint": SlotKind.HINT,
    },
)

SUPPORT_TOOLS = (LOOKUP_ORDER, SEARCH_KB, CREATE_TICKET, HANDOFF_TO_HUMAN)
TUTOR_TOOLS = (CHECK_ANSWER,)
ALL_TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in (*SUPPORT_TOOLS, *TUTOR_TOOLS)}
