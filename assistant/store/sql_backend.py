"""The support tools' store in SQL: a ``StoreBackend`` over ``Catalog`` and ``Store``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.demo import shop as demo
from assistant.store.catalog import Catalog
from assistant.store.repository import NotFound, Store
from assistant.store.tables import Owner


class SqlBackend:
    """Tenant-scoped reads and writes of the tools, one short transaction each."""

    def __init__(self, engine: AsyncEngine, store: Store | None = None) -> None:
        self.catalog = Catalog(engine)
        self.store = store or Store(engine)

    async def find_order(self, tenant_id: str, number: str, email: str) -> demo.Order | None:
        return await self.catalog.find_order(tenant_id, number, email)

    async def article(self, tenant_id: str, topic: str) -> demo.Article | None:
        return await self.catalog.article(tenant_id, topic)

    async def open_ticket(
        self,
        tenant_id: str,
        category: str,
        order_number: str | None,
        conversation_id: str | None,
    ) -> str:
        ticket = await self.catalog.open_ticket(tenant_id, category, order_number, conversation_id)
        return ticket.number

    async def hand_off(self, tenant_id: str, conversation_id: str | None) -> None:
        """Give the conversation to the human operators (no operator picked yet)."""
        if conversation_id is None:
            raise ValueError("handoff needs a conversation")
        # Scoped to the tenant: a tool call never touches another tenant's conversation.
        if await self.store.get_conversation(conversation_id, tenant_id) is None:
            raise NotFound(f"no conversation {conversation_id!r} for this tenant")
        await self.store.set_owner(conversation_id, Owner.HUMAN)
