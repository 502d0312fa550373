"""Messages Redis took that no replica has confirmed yet, taken again until one has.

A message whose turn a replica has not copied would be lost by a failover while its client,
told all went well, waits for a reply that never comes (assistant/bus/replication.py). The
gateway keeps such a message here and takes it again (idempotent by its id) until a replica
holds everything written so far: while the primary lives that is a check, and after a
failover that lost the turn it writes the echo and the turn anew on the promoted replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from assistant.bus.replication import NotReplicated
from web.protocol import ProtocolError

log = structlog.get_logger(__name__)

# About a minute in all: longer than a Sentinel failover takes.
RETRY_DELAYS_S = (0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 15.0, 15.0)


class Unconfirmed:
    """Background retries, one per message, cancelled when the gateway stops."""

    def __init__(self, delays: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.delays = delays
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, key: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` after each delay until it returns; one retry per message ``key``
        (its conversation and client id)."""
        if key in self._tasks:
            return
        task = asyncio.create_task(self._retry(attempt))
        self._tasks[key] = task
        task.add_done_callback(lambda _done: self._tasks.pop(key, None))

    def __len__(self) -> int:
        return len(self._tasks)

    async def _retry(self, attempt: Callable[[], Awaitable[None]]) -> None:
        for delay in self.delays:
            await asyncio.sleep(delay)
            try:
                await attempt()
            except (NotReplicated, RedisError, OSError, SQLAlchemyError, ProtocolError) as exc:
                log.info("message not yet on a replica: taking it again", error=str(exc))
                continue
            log.info("message confirmed on a replica")
            return
        log.error("message never confirmed on a replica: a failover now would lose its turn")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
