"""Alembic migrations against the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.tables import Base


async def _diff_and_tables(url: str) -> tuple[list[object], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> tuple[list[object], set[str]]:
                context = MigrationContext.configure(
                    sync_conn,
                    opts={"compare_type": True},  # type: ignore[arg-type]
                )
                diff = compare_metadata(context, Base.metadata)
                return list(diff), set(inspect(sync_conn).get_table_names())

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_upgrade_head_matches_models(empty_db_url: str) -> None:
    """upgrade head from empty gives exactly the models' schema."""
    await migrate.upgrade_async(empty_db_url)
    diff, tables = await _diff_and_tables(empty_db_url)
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    assert await migrate.current_revision_async(empty_db_url) is not None


async def test_downgrade_to_base_removes_schema(empty_db_url: str) -> None:
    """downgrade base leaves only Alembic's version table."""
    await migrate.upgrade_async(empty_db_url)
    await migrate.downgrade_async(empty_db_url, "base")
    _diff, tables = await _diff_and_tables(empty_db_url)
    assert tables <= {"alembic_version"}
    assert await migrate.current_revision_async(empty_db_url) is None
    await migrate.upgrade_async(empty_db_url)  # and back up again
    diff, _tables = await _diff_and_tables(empty_db_url)
    assert diff == []
