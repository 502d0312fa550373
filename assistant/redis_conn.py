"""Opening Redis connections, with a clear error when the server cannot be reached."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from assistant.errors import UserError


def connect(url: str) -> aioredis.Redis:
    try:
        return aioredis.Redis.from_url(
            url, decode_responses=False, socket_connect_timeout=5, health_check_interval=15
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
