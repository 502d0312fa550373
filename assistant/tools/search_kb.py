"""search_kb: the store's help article on one topic of a closed set."""

from __future__ import annotations

from typing import Any

from assistant.entities.slots import SlotKind
from assistant.tools.base import SUPPORT_CHANNELS, Tool, ToolContext, object_schema
from assistant.tools.shop import Article, Shop

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


def kb_view(article: Article) -> dict[str, Any]:
    return {"topic": article.topic, "answer": article.answer}


async def search_kb(shop: Shop, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    article = await shop.article(ctx.tenant_id, args["topic"])
    if article is None:
        return {"found": False, "error": "not_found", "message": "No article on that topic."}
    return kb_view(article)


TOOL = Tool(
    name="search_kb",
    label="Checking our help articles\u2026",
    description="Find the store's help article on a topic.",
    parameters=object_schema({"topic": {"type": "string", "enum": list(KB_TOPICS)}}, ["topic"]),
    handler=search_kb,
    channels=SUPPORT_CHANNELS,
    result_slots={"answer": SlotKind.KB},
    read_only=True,
)
