"""The support tools' shop in SQL: products, help articles, orders, tickets and handoffs.

Every query is scoped to one tenant, one short transaction each.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from assistant.store.database import completing, session_factory
from assistant.store.repository import NotFound, Repository
from assistant.store.tables import KbArticle, Order, OrderItem, Owner, Product, Ticket
from assistant.tools import shop


@completing
class SqlShop:
    """A :class:`assistant.tools.shop.Shop` in the SQL database, plus loading records into it.

    Its calls run to completion when the caller is cancelled, as the Repository's do.
    """

    def __init__(self, engine: AsyncEngine, store: Repository | None = None) -> None:
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self._store = store or Repository(engine)

    async def load(self, tenant_id: str, data: shop.ShopData) -> dict[str, int]:
        """Insert the store's records that are not there yet; return how many were added."""
        added = {"products": 0, "articles": 0, "orders": 0}
        async with self._sessions() as session:
            skus = set(
                await session.scalars(select(Product.sku).where(Product.tenant_id == tenant_id))
            )
            for product in data.products:
                if product.sku not in skus:
                    session.add(
                        Product(
                            tenant_id=tenant_id,
                            sku=product.sku,
                            name=product.name,
                            category=product.category,
                            price_cents=product.price_cents,
                        )
                    )
                    added["products"] += 1
            topics = set(
                await session.scalars(
                    select(KbArticle.topic).where(KbArticle.tenant_id == tenant_id)
                )
            )
            for article in data.articles:
                if article.topic not in topics:
                    session.add(
                        KbArticle(
                            tenant_id=tenant_id,
                            topic=article.topic,
                            title=article.title,
                            answer=article.answer,
                            keywords=list(article.keywords),
                        )
                    )
                    added["articles"] += 1
            numbers = set(
                await session.scalars(select(Order.number).where(Order.tenant_id == tenant_id))
            )
            for order in data.orders:
                if order.number in numbers:
                    continue
                row = Order(
                    tenant_id=tenant_id,
                    number=order.number,
                    email=order.email.lower(),
                    customer_name=order.customer,
                    status=order.status,
                    carrier=order.carrier,
                    tracking_number=order.tracking_number,
                    placed_on=order.placed_on,
                    estimated_delivery=order.estimated_delivery,
                )
                session.add(row)
                await session.flush()
                for item in order.items:
                    session.add(
                        OrderItem(
                            order_id=row.id,
                            sku=item.sku,
                            name=item.name,
                            quantity=item.quantity,
                            price_cents=item.price_cents,
                        )
                    )
                added["orders"] += 1
            await session.commit()
        return added

    async def find_order(self, tenant_id: str, number: str, email: str) -> shop.Order | None:
        """The order with this number whose email matches; None for anything else.

        A wrong email and an unknown number look the same to the caller, so the tool never
        tells a stranger that an order exists.
        """
        async with self._sessions() as session:
            row = await session.scalar(
                select(Order).where(
                    Order.tenant_id == tenant_id,
                    func.upper(Order.number) == number.strip().upper(),
                    Order.email == email.strip().lower(),
                )
            )
            if row is None:
                return None
            items = list(
                await session.scalars(
                    select(OrderItem).where(OrderItem.order_id == row.id).order_by(OrderItem.id)
                )
            )
        return shop.Order(
            number=row.number,
            email=row.email,
            customer=row.customer_name,
            status=row.status,
            carrier=row.carrier,
            tracking_number=row.tracking_number,
            placed_on=row.placed_on,
            estimated_delivery=row.estimated_delivery,
            items=tuple(shop.OrderItem(i.sku, i.name, i.quantity, i.price_cents) for i in items),
        )

    async def article(self, tenant_id: str, topic: str) -> shop.Article | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(KbArticle).where(KbArticle.tenant_id == tenant_id, KbArticle.topic == topic)
            )
        if row is None:
            return None
        return shop.Article(row.topic, row.title, row.answer, tuple(row.keywords))

    async def open_ticket(
        self,
        tenant_id: str,
        category: str,
        order_number: str | None,
        conversation_id: str | None,
    ) -> str:
        for _attempt in range(5):
            number = f"T-{secrets.randbelow(90000) + 10000}"
            ticket = Ticket(
                tenant_id=tenant_id,
                number=number,
                category=category,
                order_number=order_number,
                conversation_id=conversation_id,
            )
            async with self._sessions() as session:
                session.add(ticket)
                try:
                    await session.commit()
                    return number
                except IntegrityError:
                    await session.rollback()
        raise RuntimeError("could not allocate a ticket number")

    async def hand_off(self, tenant_id: str, conversation_id: str | None) -> None:
        """Give the conversation to the human operators (no operator picked yet)."""
        if conversation_id is None:
            raise ValueError("handoff needs a conversation")
        # Scoped to the tenant: a tool call never touches another tenant's conversation.
        if await self._store.get_conversation(conversation_id, tenant_id) is None:
            raise NotFound(f"no conversation {conversation_id!r} for this tenant")
        await self._store.set_owner(conversation_id, Owner.HUMAN)
