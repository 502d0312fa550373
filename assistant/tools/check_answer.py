"""check_answer: whether a student's answer to an exercise is right, decided exactly."""

from __future__ import annotations

from typing import Any

from assistant.entities.slots import SlotKind
from assistant.tools.base import TUTOR_CHANNELS, Tool, ToolContext, object_schema
from assistant.tools.shop import Shop
from assistant.tutoring.checker import check_answer as check


async def check_answer(shop: Shop, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return check(args["exercise"], args["answer"])


TOOL = Tool(
    name="check_answer",
    label="Checking the answer\u2026",
    description="Check a student's answer to an exercise exactly.",
    parameters=object_schema(
        {"exercise": {"type": "string"}, "answer": {"type": "string"}}, ["exercise", "answer"]
    ),
    handler=check_answer,
    channels=TUTOR_CHANNELS,
    result_slots={
        "expected": SlotKind.EXPR,
        "explanation": SlotKind.HINT,
        "hint": SlotKind.HINT,
    },
    read_only=True,
)
