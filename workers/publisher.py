"""Publishes one turn's events to the conversation's event log, in order, drafts throttled.

A redelivered turn publishes only what its log does not hold yet (``load_published``,
``workers.resume.Published``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.exceptions import RedisError

from assistant.bus.schema import DraftEvent, Event, FinalEvent, TurnRequest
from assistant.bus.streams import EventLog
from assistant.store.tables import Message
from workers.resume import Published, ends_search

log = structlog.get_logger(__name__)


class TurnPublisher:
    """Appends one turn's events in order; drafts are throttled, other events never dropped.

    At most one draft per ``interval_s``: a draft arriving sooner is held, replaced by any
    newer one, and appended when the interval is over, so the last shown is the latest.
    An event that ``already`` holds (an earlier delivery published it) is not appended again.
    """

    def __init__(
        self,
        events: EventLog,
        turn: TurnRequest,
        interval_s: float,
        already: Published | None = None,
    ) -> None:
        self.events = events
        self.conversation_id = turn.conversation_id
        self.already = already or Published(turn.turn_id)
        self.skipped = 0  # events an earlier delivery had published
        self.interval_s = interval_s
        self._lock = asyncio.Lock()  # one append at a time keeps seq order = event order
        self._last_draft = -float("inf")
        self._pending: DraftEvent | None = None
        self._flush: asyncio.Task[None] | None = None
        self.published: list[Event] = []
        self.turn_ended = False  # the log refused an event: the turn's final is already in it

    async def draft(self, event: DraftEvent) -> None:
        if self._pending is None and time.monotonic() - self._last_draft >= self.interval_s:
            async with self._lock:
                await self._append_draft(event)
            return
        self._pending = event
        if self._flush is None:
            delay = max(0.0, self._last_draft + self.interval_s - time.monotonic())
            self._flush = asyncio.create_task(self._flush_later(delay))

    async def publish(self, event: Event, *, drop_draft: bool = False) -> bool:
        """Append a non-draft event, after the held draft (or instead of it: ``drop_draft``).

        False when it was not appended: the log held it already, or the turn had ended.
        """
        async with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None and not drop_draft:
                await self._append_draft(pending)
            return await self._append(event)

    async def close(self) -> None:
        """Wait for a scheduled draft (it sleeps at most one interval)."""
        if self._flush is not None:
            # Its failure (Redis gone) must not hide why the turn itself ended.
            with contextlib.suppress(Exception):
                await self._flush

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            self._flush = None
            pending, self._pending = self._pending, None
            if pending is not None:
                try:
                    await self._append_draft(pending)
                except (RedisError, OSError) as exc:
                    # Nobody awaits this task any more; a later draft or the final follows.
                    log.warning("held draft not published", error=str(exc))

    async def _append_draft(self, event: DraftEvent) -> None:
        self._last_draft = time.monotonic()
        await self._append(event)

    async def _append(self, event: Event) -> bool:
        if self.already.holds(event):
            self.skipped += 1
            return False
        seq = await self.events.append(self.conversation_id, event)
        if seq:
            self.published.append(event.with_seq(seq))
            return True
        if not self.turn_ended:
            self.turn_ended = True
            log.info("another delivery already finished this turn; its events are dropped")
        return False


async def load_published(
    events: EventLog, turn: TurnRequest, page: int = 100, most: int = 1000
) -> Published:
    """What the log already holds of ``turn``, read newest first back to the turn's echo.

    At most ``most`` events are read (the log keeps about 1,000): a log without the echo
    (expired, trimmed) costs that once per delivery, nothing more.
    """
    published = Published(turn.turn_id)
    end = await events.last_seq(turn.conversation_id)
    while end > 0 and most > 0:
        start = max(0, end - min(page, most))
        batch = await events.read_from(turn.conversation_id, start, count=end - start)
        for event in batch:
            published.add(event)
        if not batch or any(ends_search(turn.turn_id, event) for event in batch):
            break
        most -= end - start
        end = start
    return published


def final_event(turn: TurnRequest, message: Message) -> FinalEvent:
    """The final event of a stored reply."""
    usage = dict(message.stats or {})
    return FinalEvent(
        conversation_id=turn.conversation_id,
        turn_id=turn.turn_id,
        message_id=message.id,
        text=message.text,
        status=str(message.status),
        usage=usage,
    )
