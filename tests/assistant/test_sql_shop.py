"""The shop in SQL: loading the demo, tenant-scoped order lookup, articles, tickets."""

from __future__ import annotations

from assistant.demo.load import load_demo
from assistant.demo.shop import build_shop
from assistant.store.repository import Repository
from assistant.store.shop import SqlShop


async def test_load_is_idempotent_and_complete(store: Repository) -> None:
    """Loading twice adds everything once."""
    tenant_id, added = await load_demo(store.engine)
    data = build_shop()
    assert added == {
        "products": len(data.products),
        "articles": len(data.articles),
        "orders": len(data.orders),
    }
    again_id, again = await load_demo(store.engine)
    assert again_id == tenant_id and not any(again.values())


async def test_order_lookup_needs_the_matching_email(store: Repository) -> None:
    """An order is found with its own email (any case), never with another's."""
    tenant_id, _ = await load_demo(store.engine)
    shop = SqlShop(store.engine, store)
    order, other = build_shop().orders[:2]
    found = await shop.find_order(tenant_id, order.number.lower(), order.email.upper())
    assert found is not None and found.items == order.items and found.status == order.status
    assert await shop.find_order(tenant_id, order.number, other.email) is None
    assert await shop.find_order(tenant_id, "NW-000000", order.email) is None


async def test_lookup_is_tenant_scoped(store: Repository) -> None:
    """Another tenant cannot find the demo tenant's orders."""
    await load_demo(store.engine)
    other = await store.create_tenant("other-shop")
    order = build_shop().orders[0]
    shop = SqlShop(store.engine, store)
    assert await shop.find_order(other.id, order.number, order.email) is None


async def test_articles_and_tickets(store: Repository) -> None:
    """Articles are found by topic; tickets get distinct numbers."""
    tenant_id, _ = await load_demo(store.engine)
    shop = SqlShop(store.engine, store)
    article = await shop.article(tenant_id, "returns")
    assert article is not None and "30 days" in article.answer
    assert await shop.article(tenant_id, "nonsense") is None
    first = await shop.open_ticket(tenant_id, "damaged", "NW-123456", None)
    second = await shop.open_ticket(tenant_id, "billing", None, None)
    assert first != second and first.startswith("T-")
