"""Opening Redis connections, with a clear error when the server cannot be reached."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from assistant.errors import UserError


def connect(url: str) -> aioredis.Redis:
    try:
        # Without a retry policy redis-py fails the first command after a server restart;
        # with it, clients ride out a restart of a few seconds.
        return aioredis.Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=5,
            health_check_interval=15,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 10),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    except ValueError as exc:
        raise UserError(
            f"cannot parse Redis URL {url!r}: {exc} (use redis://HOST:PORT/DB)"
        ) from None


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
