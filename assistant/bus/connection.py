"""Opening Redis connections, with a clear error when the server cannot be reached."""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from assistant.core.errors import UserError

# How long a client waits for any reply before it drops the connection. Blocking reads
# (XREAD / XREADGROUP BLOCK) must end well before it: see ``bounded_block_ms``.
SOCKET_TIMEOUT_S: Final = 10.0


def connect(url: str, *, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> aioredis.Redis:
    try:
        # Without a retry policy redis-py fails the first command after a server restart;
        # with it, clients ride out a restart of a few seconds.
        return aioredis.Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=5,
            # Set here rather than left to redis-py, whose default (5 s since 6.x) equalled
            # the gateway's BLOCK and made every idle follower time out and reconnect.
            socket_timeout=socket_timeout_s,
            health_check_interval=15,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 10),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    except ValueError as exc:
        raise UserError(
            f"cannot parse Redis URL {url!r}: {exc} (use redis://HOST:PORT/DB)"
        ) from None


def block_limit_ms(socket_timeout_s: float | None) -> int | None:
    """The longest BLOCK a client with this socket timeout may ask for (None: no limit).

    Redis ends a blocked read on its timer (every 100 ms at the default ``hz 10``), so its
    empty reply can come a good while after BLOCK: half the timeout leaves room for that and
    for a busy machine. Pure, so it is tested without a server.
    """
    if socket_timeout_s is None or socket_timeout_s <= 0:
        return None
    return max(1, int(socket_timeout_s * 1000 / 2))


def bounded_block_ms(client: aioredis.Redis, block_ms: int | None) -> int | None:
    """``block_ms`` cut to what ``client``'s socket timeout allows; 0 (forever) is cut too.

    Callers loop on an empty reply, so a shorter BLOCK only costs one more round trip, while
    a BLOCK the socket timeout cuts short raises, drops the connection and is retried.
    """
    if block_ms is None:
        return None
    limit = block_limit_ms(client.connection_pool.connection_kwargs.get("socket_timeout"))
    if limit is None:
        return block_ms
    return limit if block_ms == 0 else min(block_ms, limit)


async def check_redis(url: str) -> None:
    client = connect(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise UserError(
            f"cannot reach Redis at {url}: {exc} "
            "(check ASSISTANT_REDIS_URL, or leave it empty to start an embedded redis-server)"
        ) from None
    finally:
        await client.aclose()
