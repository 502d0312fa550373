"""What every ``assistant`` command shares: option groups, running a coroutine, the store."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from assistant.core.config import LOG_FORMATS, LOG_LEVELS, Settings
from assistant.core.errors import UserError

Handler = Callable[[argparse.Namespace, Settings], int]
# What a package adds to the command line (see the ``assistant.commands`` entry points).
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def logging_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format", choices=LOG_FORMATS, help="default: auto ($ASSISTANT_LOG_FORMAT)"
    )
    group.add_argument(
        "--log-level", choices=LOG_LEVELS, help="default: info ($ASSISTANT_LOG_LEVEL)"
    )
    return parser


def database_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, parents=[logging_options()])
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db "
        "(default: a SQLite file in the data directory; $ASSISTANT_DATABASE_URL)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="local state directory (default: ./data; $ASSISTANT_DATA_DIR)",
    )
    return parser


def runtime_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, parents=[database_options()])
    group = parser.add_argument_group("services")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis URL, e.g. redis://host:6379/0 (default: start an embedded redis-server; "
        "$ASSISTANT_REDIS_URL)",
    )
    group.add_argument(
        "--model-path",
        metavar="DIR",
        help="checkpoint directory (default: the bundled model; $ASSISTANT_MODEL_PATH)",
    )
    group.add_argument(
        "--device",
        help="torch device: auto, cpu, cuda, cuda:1 ... (default: auto; $ASSISTANT_DEVICE)",
    )
    group.add_argument("--host", help="address to listen on (default: 127.0.0.1; $ASSISTANT_HOST)")
    group.add_argument("--port", type=int, help="gateway port (default: 8765; $ASSISTANT_PORT)")
    group.add_argument(
        "--secret",
        metavar="TEXT",
        help="secret that signs conversation tokens, the same for every gateway (default: a "
        "random one kept in DATA_DIR/secret; prefer $ASSISTANT_SECRET, flags show in ps)",
    )
    return parser


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def require_redis(settings: Settings) -> None:
    if not settings.redis_url:
        raise UserError(
            "this process needs a Redis URL: set ASSISTANT_REDIS_URL or --redis-url "
            "(or use 'assistant serve', which starts an embedded Redis)"
        )


async def with_store(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from assistant.store import migrate
    from assistant.store.database import check_connection, create_engine
    from assistant.store.repository import Repository

    engine = create_engine(settings.effective_database_url)
    store = Repository(engine)
    try:
        await check_connection(engine)
        revision = await migrate.current_revision_async(settings.effective_database_url)
        if revision is None:
            raise UserError("the database has no schema yet: run 'assistant db upgrade' first")
        return await action(store)
    finally:
        await store.close()
