"""Creating the async SQLAlchemy engine for a URL, with a clear error for a bad one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from assistant.core.errors import UserError

SUPPORTED = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"


def normalize_url(url: str) -> str:
    """Accept the common sync spellings and name the async driver the project uses."""
    for plain, async_form in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return async_form + url[len(plain) :]
    return url


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"cannot parse database URL {url!r}: use {SUPPORTED}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(f"unsupported database {parsed.get_backend_name()!r}: use {SUPPORTED}")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Writers wait for the lock instead of failing at once.
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    try:
        engine = create_async_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
        raise UserError(f"cannot use database URL {url!r}: {exc}; use {SUPPORTED}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside a writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_connection(engine: AsyncEngine) -> None:
    """Raise UserError naming the URL when the database cannot be reached."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        url = engine.url.render_as_string(hide_password=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot connect to database {url}: {reason} "
            "(check ASSISTANT_DATABASE_URL or --database-url)"
        ) from None
