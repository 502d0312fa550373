"""Writes that must survive a failover: wait until a replica holds them (Redis ``WAIT``).

Redis replicates asynchronously. A user message's echo and turn written to a primary that
dies a moment later, before its replica copied them, are gone from the promoted replica,
while the gateway has already told its caller that all went well: the client waits for an
answer that never comes. ``WAIT n timeout`` after the write, on the same connection (it
counts that connection's writes), reports how many replicas hold it; when fewer than asked
do, the gateway takes the message again (idempotent by its id) until a replica confirms
it; one that a failover lost by then is written anew on the promoted replica.

The number asked for is capped by the replicas the primary has now (``ROLE``, checked again
every few seconds), so a lone primary, or one whose replica is down, never waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)

WAIT_MS = 500
RECHECK_S = 5.0


class NotReplicated(Exception):
    """A write was made but no replica confirmed it in time: make it again (idempotent)."""

    def __init__(self, wanted: int, acked: int) -> None:
        super().__init__(f"{acked} of {wanted} replicas confirmed the write")


def connected_replicas(role: Any) -> int:
    """Replicas a ``ROLE`` reply lists (a primary's third element; 0 for any other role)."""
    if not isinstance(role, list | tuple) or len(role) < 3:
        return 0
    kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    return len(role[2]) if kind == "master" else 0


class ReplicaAcks:
    """How many replicas a write must reach before it counts as done, and the check."""

    def __init__(
        self,
        wanted: int,
        *,
        wait_ms: int = WAIT_MS,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if wanted < 0 or wait_ms < 1:
            raise ValueError("wanted must be at least 0 and wait_ms at least 1")
        self.wanted = wanted
        self.wait_ms = wait_ms
        self.recheck_s = recheck_s
        self._clock = clock
        self._replicas = 0
        self._checked_at: float | None = None

    async def needed(self, redis: aioredis.Redis) -> int:
        """The replicas to wait for now: ``wanted``, capped by those the primary has."""
        if self.wanted == 0:
            return 0
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self.recheck_s:
            self._replicas = connected_replicas(await redis.execute_command("ROLE"))
            self._checked_at = now
        return min(self.wanted, self._replicas)

    async def confirm_written(self, redis: aioredis.Redis, probe_key: str) -> None:
        """Raise ``NotReplicated`` unless every write the primary took so far (by any
        client) is on the replicas: WAIT after a write of this connection's own, since
        replication is one ordered stream."""
        needed = await self.needed(redis)
        if not needed:
            return
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(probe_key, 1, px=60_000)
            pipe.wait(needed, self.wait_ms)
            _ok, acked = await pipe.execute()
        await self.confirm(redis, needed, int(acked))

    async def confirm(self, redis: aioredis.Redis, needed: int, acked: int) -> None:
        """Raise ``NotReplicated`` when fewer than ``needed`` replicas confirmed the write and
        the primary still has them: a replica that is gone (after a failover the promoted
        one has none yet) is not waited for."""
        if acked >= needed:
            return
        self._checked_at = None
        if acked >= await self.needed(redis):
            return
        log.warning("write not confirmed by a replica", wanted=needed, acked=acked)
        raise NotReplicated(needed, acked)
