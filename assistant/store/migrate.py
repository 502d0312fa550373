"""Alembic migrations driven from Python: ``assistant db ...``, ``serve`` and the tests."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from assistant.store.database import check_connection, create_engine, normalize_url


def _scripts_dir() -> Path:
    """The migrations package's folder, found without importing it: it stands above assistant/
    (its env.py imports the tables) and is Alembic's to run, not ours."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("the migrations package is not installed beside assistant/")
    return Path(spec.origin).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_scripts_dir()))
    # Alembic's config is an ini parser: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


async def _on_connection(url: str, action: Callable[[Connection], Any]) -> Any:
    """Run a sync Alembic action on one transaction of the application's async engine."""
    engine = create_engine(url)
    try:
        await check_connection(engine)
        async with engine.begin() as conn:
            return await conn.run_sync(action)
    finally:
        await engine.dispose()


def _command(url: str, fn: Callable[..., None], *args: str) -> Callable[[Connection], None]:
    def action(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        fn(config, *args)

    return action


async def upgrade_async(url: str, revision: str = "head") -> None:
    await _on_connection(url, _command(url, command.upgrade, revision))


async def downgrade_async(url: str, revision: str) -> None:
    await _on_connection(url, _command(url, command.downgrade, revision))


async def current_revision_async(url: str) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    result: str | None = await _on_connection(url, read)
    return result


def upgrade(url: str, revision: str = "head") -> None:
    asyncio.run(upgrade_async(url, revision))


def downgrade(url: str, revision: str) -> None:
    asyncio.run(downgrade_async(url, revision))


def current_revision(url: str) -> str | None:
    return asyncio.run(current_revision_async(url))
