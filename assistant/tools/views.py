"""What the store tools return, as pure functions of the store's records.

The SQL-backed tools and the training-data generator both build results here, so the model
is trained on exactly the shapes it sees when serving.
"""

from __future__ import annotations

from typing import Any

from assistant.demo.shop import Article, Order, money

NOT_FOUND = {
    "found": False,
    "error": "not_found",
    "message": "No order with that number was found for that email.",
}


def order_view(order: Order | None) -> dict[str, Any]:
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


def kb_view(article: Article) -> dict[str, Any]:
    return {"topic": article.topic, "answer": article.answer}


def ticket_view(ticket_id: str, category: str, order_id: str | None) -> dict[str, Any]:
    view: dict[str, Any] = {"ticket_id": ticket_id, "category": category, "status": "open"}
    if order_id:
        view["order_id"] = order_id
    return view


def handoff_view() -> dict[str, Any]:
    return {"status": "waiting_for_human"}
