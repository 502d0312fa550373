"""The shop the support tools work on: its records, the interface to it, and one in memory.

Tools talk to a :class:`Shop`; serving uses the SQL one (``assistant.store.shop.SqlShop``),
the evaluation and the tests this module's :class:`MemoryShop`, so both run the same tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price_cents: int


@dataclass(frozen=True)
class Article:
    topic: str  # the closed set search_kb is asked with
    title: str
    answer: str  # the one-paragraph answer a reply quotes
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrderItem:
    sku: str
    name: str
    quantity: int
    price_cents: int


@dataclass(frozen=True)
class Order:
    number: str
    email: str
    customer: str
    status: str
    carrier: str | None
    tracking_number: str | None
    placed_on: date
    estimated_delivery: date | None
    items: tuple[OrderItem, ...]
    split: str = ""  # the demo's corpus split, "train" or "heldout"; "" for a real order

    @property
    def total_cents(self) -> int:
        return sum(item.price_cents * item.quantity for item in self.items)


@dataclass
class ShopData:
    """A shop's records: what a :class:`MemoryShop` serves and what ``demo load`` writes to SQL."""

    products: list[Product]
    articles: list[Article]
    orders: list[Order] = field(default_factory=list)

    def orders_in(self, split: str) -> list[Order]:
        return [order for order in self.orders if order.split == split]


def money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


class Shop(Protocol):
    """What the tools read and write; every call is scoped to one tenant."""

    async def find_order(self, tenant_id: str, number: str, email: str) -> Order | None:
        """The order with this number whose email matches (any case); None for anything else."""
        ...

    async def article(self, tenant_id: str, topic: str) -> Article | None: ...

    async def open_ticket(
        self,
        tenant_id: str,
        category: str,
        order_number: str | None,
        conversation_id: str | None,
    ) -> str:
        """Open a ticket and return its number."""
        ...

    async def hand_off(self, tenant_id: str, conversation_id: str | None) -> None:
        """Give the conversation to the human operators."""
        ...


class MemoryShop:
    """A :class:`Shop` over records in memory: the evaluation's tools, no database needed."""

    def __init__(self, data: ShopData, first_ticket: int = 60000) -> None:
        self.orders = {order.number: order for order in data.orders}
        self.articles = {article.topic: article for article in data.articles}
        self.next_ticket = first_ticket
        self.handed_off: list[str | None] = []

    async def find_order(self, tenant_id: str, number: str, email: str) -> Order | None:
        order = self.orders.get(number.strip().upper())
        if order is None or order.email.lower() != email.strip().lower():
            return None
        return order

    async def article(self, tenant_id: str, topic: str) -> Article | None:
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
