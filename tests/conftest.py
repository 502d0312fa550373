"""Shared fixtures: a private Redis, SQLite and PostgreSQL databases with the schema applied.

PostgreSQL comes from ASSISTANT_TEST_PG_URL (default: the local server, database ``test``);
each test gets its own database, created and dropped here, so runs never collide. When the
server cannot be reached, the PostgreSQL variants are skipped and the reason is printed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from tests.system._sentinel import SentinelDeployment

PG_URL = os.environ.get(
    "ASSISTANT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One private redis-server for the whole run (flushed before each test that uses it)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, free to kill and restart."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelDeployment]:
    """A primary, a replica and three sentinels of this test's own (tests/system/_sentinel.py)."""
    deployment = SentinelDeployment(tmp_path / "sentinel-deployment")
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


# SQL --------------------------------------------------------------------------------------


def _admin_connect_args() -> tuple[str, dict[str, object]]:
    url = make_url(PG_URL)
    return url.database or "postgres", {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
    }


async def _pg_admin(statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    database, kwargs = _admin_connect_args()
    conn = await asyncpg.connect(database=database, timeout=5, **kwargs)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


_pg_unreachable: str | None = None


def _postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database, yield its URL, drop it afterwards."""
    global _pg_unreachable
    if _pg_unreachable is not None:
        pytest.skip(_pg_unreachable)
    name = f"assistant_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        _pg_unreachable = f"PostgreSQL at {PG_URL} is unreachable: {exc}"
        pytest.skip(_pg_unreachable)
    url = make_url(PG_URL).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each supported backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database on each backend with the schema migrated to head."""
    migrate.upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Repository]:
    store = Repository(create_engine(db_url))
    yield store
    await store.close()
