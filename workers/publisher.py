"""Publishes one turn's events to the conversation's event log, in order, drafts throttled."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.exceptions import RedisError

from assistant.bus.schema import DraftEvent, Event, FinalEvent, TurnRequest
from assistant.bus.streams import EventLog
from assistant.store.tables import Message

log = structlog.get_logger(__name__)


class TurnPublisher:
    """Appends one turn's events in order; drafts are throttled, other events never dropped.

    At most one draft per ``interval_s``: a draft arriving sooner is held, replaced by any
    newer one, and appended when the interval is over, so the last shown is the latest.
    """

    def __init__(self, events: EventLog, turn: TurnRequest, interval_s: float) -> None:
        self.events = events
        self.conversation_id = turn.conversation_id
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

    async def publish(self, event: Event, *, drop_draft: bool = False) -> None:
        """Append a non-draft event, after the held draft (or instead of it: ``drop_draft``)."""
        async with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None and not drop_draft:
                await self._append_draft(pending)
            await self._append(event)

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

    async def _append(self, event: Event) -> None:
        seq = await self.events.append(self.conversation_id, event)
        if seq:
            self.published.append(event.with_seq(seq))
        elif not self.turn_ended:
            self.turn_ended = True
            log.info("another delivery already finished this turn; its events are dropped")


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
