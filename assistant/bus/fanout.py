"""Every conversation a gateway relays, followed through one blocking XREAD.

A blocking read holds its Redis connection until it returns, so one read per followed
conversation meant one connection each: redis-py's pool stops at 100, and a gateway with a
thousand open widgets would need a thousand connections. Instead one task reads the event
streams of all followed conversations in one XREAD on a connection of its own, and hands
each event to the followers of its conversation. A new follower wakes the read with CLIENT
UNBLOCK (from the shared pool), so it sees its first events at once, not after the block.

Each follower keeps its own position: the read starts at the lowest position of any
follower of a conversation and every follower skips what it has already had, so a
follower that joins behind another (a resume) still gets everything after its own seq,
exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from assistant.bus.schema import Event
from assistant.bus.streams import EventLog

log = structlog.get_logger(__name__)

READ_COUNT = 200  # events per stream per read: a long replay comes in a few reads
RETRY_S = 0.5


class Follower:
    """One socket's view of one conversation: the events after ``last``, in order."""

    def __init__(self, conversation_id: str, after: int) -> None:
        self.conversation_id = conversation_id
        self.last = after
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def offer(self, event: Event) -> None:
        if event.seq is not None and event.seq > self.last:
            self.last = event.seq
            self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()


class EventFanout:
    def __init__(self, events: EventLog, redis: aioredis.Redis, block_ms: int) -> None:
        self.events = events
        self.redis = redis  # the shared client: CLIENT UNBLOCK goes through it
        self.block_ms = block_ms
        self.followers: dict[str, set[Follower]] = {}
        self._position: dict[str, int] = {}  # where the next read of a conversation starts
        self._reader: aioredis.Redis | None = None
        self._reader_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def follow(self, conversation_id: str, after: int) -> Follower:
        follower = Follower(conversation_id, after)
        self.followers.setdefault(conversation_id, set()).add(follower)
        known = self._position.get(conversation_id)
        self._position[conversation_id] = after if known is None else min(known, after)
        self._wake()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="event-fanout")
        return follower

    def unfollow(self, follower: Follower) -> None:
        group = self.followers.get(follower.conversation_id)
        if group is None:
            return
        group.discard(follower)
        if not group:
            del self.followers[follower.conversation_id]
            self._position.pop(follower.conversation_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reader is not None:
            await self._reader.aclose()
            self._reader = None

    def _wake(self) -> None:
        """Make the loop read again now, with the new set of conversations."""
        self._changed.set()
        if self._reader_id is not None:
            reader_id = self._reader_id
            asyncio.get_running_loop().create_task(self._unblock(reader_id))

    async def _unblock(self, reader_id: int) -> None:
        try:
            await self.redis.client_unblock(reader_id)
        except RedisError as exc:  # the read ends on its own within block_ms anyway
            log.debug("cannot unblock the event reader", error=str(exc))

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._position:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._changed.clear()
            try:
                found = await self._read()
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("cannot read events; retrying", error=str(exc))
                failing = True
                self._reader_id = None
                await asyncio.sleep(RETRY_S)
                continue
            if failing:
                log.info("reading events again")
                failing = False
            for conversation_id, batch in found.items():
                for event in batch:
                    for follower in tuple(self.followers.get(conversation_id, ())):
                        follower.offer(event)
                if conversation_id in self._position and batch[-1].seq is not None:
                    self._position[conversation_id] = max(
                        self._position[conversation_id], batch[-1].seq
                    )

    async def _read(self) -> dict[str, list[Event]]:
        if self._reader is None:
            self._reader = self.redis.client()
        if self._reader_id is None:
            self._reader_id = int(await self._reader.client_id())
        # A follower that joined while the last read was on its way needs no wait.
        block = None if self._changed.is_set() else self.block_ms
        return await self.events.read_many(
            dict(self._position), block_ms=block, count=READ_COUNT, client=self._reader
        )
