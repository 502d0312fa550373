"""Workers' heartbeats on a real Redis: announced, expired without renewal, withdrawn."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from assistant.bus.heartbeat import alive, announce, withdraw
from assistant.bus.keys import DEFAULT_KEYS as KEYS
from assistant.bus.keys import Keys


async def gone(redis: aioredis.Redis, keys: Keys, name: str, limit_s: float = 20.0) -> bool:
    """Poll until ``name`` is no longer alive (the limit only bounds a hang)."""
    deadline = time.monotonic() + limit_s
    while name in await alive(redis, keys):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_announced_worker_is_alive_until_withdrawn(redis_client: aioredis.Redis) -> None:
    assert await alive(redis_client, KEYS) == []
    await announce(redis_client, KEYS, "w-1")
    await announce(redis_client, KEYS, "w-2")
    assert await alive(redis_client, KEYS) == ["w-1", "w-2"]
    ttl_ms = await redis_client.pttl(KEYS.worker_heartbeat("w-1"))
    assert ttl_ms > 0  # it carries a TTL: a dead worker cannot stay "alive"
    await withdraw(redis_client, KEYS, "w-1")  # a clean stop removes it at once
    assert await alive(redis_client, KEYS) == ["w-2"]
    assert not await redis_client.exists(KEYS.worker_heartbeat("w-1"))
    assert await redis_client.smembers(KEYS.worker_index) == {b"w-2"}


async def test_heartbeat_expires_without_renewal(redis_client: aioredis.Redis) -> None:
    """A worker that stops renewing (it died) drops out; its name is pruned from the index."""
    await announce(redis_client, KEYS, "steady")
    await announce(redis_client, KEYS, "dying", ttl_s=0.05)
    assert await alive(redis_client, KEYS) == ["dying", "steady"]
    assert await gone(redis_client, KEYS, "dying")
    assert await alive(redis_client, KEYS) == ["steady"]
    assert await redis_client.smembers(KEYS.worker_index) == {b"steady"}
    await announce(redis_client, KEYS, "dying", ttl_s=60)  # it came back: listed again
    assert await alive(redis_client, KEYS) == ["dying", "steady"]


async def test_prefixes_do_not_see_each_other(redis_client: aioredis.Redis) -> None:
    other = Keys("other")
    await announce(redis_client, other, "w")
    assert await alive(redis_client, KEYS) == []
    assert await alive(redis_client, other) == ["w"]
