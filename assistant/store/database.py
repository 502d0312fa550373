"""Creating the async SQLAlchemy engine for a URL, with a clear error for a bad one."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from assistant.core.errors import UserError

T = TypeVar("T")
C = TypeVar("C", bound=type)

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


async def run_to_completion(operation: Coroutine[Any, Any, T]) -> T:
    """Await ``operation`` in a task of its own that a cancellation of the caller never cuts.

    A cancellation that lands inside the driver (an INSERT in flight, its ROLLBACK) makes
    SQLAlchemy invalidate the connection, which is then left unclosed in a reference cycle
    with its transaction open until the garbage collector runs; on SQLite that transaction
    is the database's one write lock, and every other writer waits 30 s and fails. So a
    store call always finishes (committed, or rolled back and closed), and a cancellation
    received meanwhile is raised to the caller afterwards: it is delayed by one short
    transaction, never lost.
    """
    task = asyncio.ensure_future(operation)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():  # the operation itself was cancelled (the loop is closing)
                raise
            cancelled = exc
        except BaseException:
            if cancelled is not None:
                raise cancelled from None
            raise
        else:
            break
    if cancelled is not None:
        raise cancelled
    return result


def completes(
    method: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Decorate a store coroutine so that it runs to completion (``run_to_completion``)."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        return await run_to_completion(method(*args, **kwargs))

    return wrapper


def completing(cls: C) -> C:
    """Class decorator: every public coroutine method of ``cls`` runs to completion."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, completes(member))
    return cls
