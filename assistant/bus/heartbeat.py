"""Workers' heartbeats: which workers have their model loaded and consume turns.

A worker ``announce``s itself every ``HEARTBEAT_EVERY_S`` seconds once its consumer loop
runs (never while the model still loads): a key ``keys.worker_heartbeat(name)`` with a TTL
of three intervals, and its name in ``keys.worker_index``. A clean stop ``withdraw``s both at
once; a worker that died disappears when its key expires, and its name is pruned from the
index by the next ``alive``. Readiness (/readyz) and ``assistant serve`` read ``alive``.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from assistant.bus.keys import Keys

HEARTBEAT_EVERY_S: Final = 2.0
HEARTBEAT_TTL_S: Final = 3 * HEARTBEAT_EVERY_S


async def announce(
    redis: aioredis.Redis, keys: Keys, worker_name: str, ttl_s: float = HEARTBEAT_TTL_S
) -> None:
    """Say that ``worker_name`` consumes turns, for the next ``ttl_s`` seconds."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker_heartbeat(worker_name), "1", px=max(1, int(ttl_s * 1000)))
        pipe.sadd(keys.worker_index, worker_name)
        await pipe.execute()


async def withdraw(redis: aioredis.Redis, keys: Keys, worker_name: str) -> None:
    """Remove a stopping worker's heartbeat at once instead of waiting for the TTL."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker_heartbeat(worker_name))
        pipe.srem(keys.worker_index, worker_name)
        await pipe.execute()


async def alive(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """The names of the workers whose heartbeat has not expired, sorted."""
    names = sorted(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in await redis.smembers(keys.worker_index)
    )
    if not names:
        return []
    # EXISTS in a pipeline, one key each: on a cluster the keys live in different slots.
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(keys.worker_heartbeat(name))
        found = await pipe.execute()
    live = [name for name, present in zip(names, found, strict=True) if present]
    gone = [name for name, present in zip(names, found, strict=True) if not present]
    if gone:
        # A worker that announces again right after this re-adds itself on its next beat.
        await redis.srem(keys.worker_index, *gone)
    return live
