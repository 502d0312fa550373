"""Loading the demo store into SQL as the demo tenant (``assistant demo load``, first run)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.db.catalog import Catalog
from assistant.db.repository import NotFound, Store
from assistant.demo.store import DEMO_TENANT, build_store


async def load_demo(engine: AsyncEngine) -> tuple[str, dict[str, int]]:
    """Create the demo tenant if needed and add its store; return (tenant id, counts added)."""
    store = Store(engine)
    try:
        tenant = await store.get_tenant(DEMO_TENANT)
    except NotFound:
        tenant = await store.create_tenant(DEMO_TENANT)
    added = await Catalog(engine).load(tenant.id, build_store())
    return tenant.id, added
