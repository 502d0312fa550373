"""The outbound queue of one connection: drafts coalesced, every other frame kept in order.

A draft is a whole-reply snapshot, so for a client that reads slowly only the newest one of
a turn matters: a new draft (or the turn's final, the whole reply) removes that turn's drafts
still waiting here. Nothing else is ever dropped; a client so slow that ``max_frames`` pile
up is disconnected instead (``CloseCode.TOO_SLOW``) and resumes from the last seq it saw.
Pure asyncio: no socket here, so it is tested without one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web.protocol import CloseCode

Frame = dict[str, Any]


@dataclass(frozen=True)
class Close:
    """The last item of a queue: close the socket with this code once the frames before it
    are sent."""

    code: int
    reason: str


def _turn_key(frame: Frame) -> tuple[Any, Any]:
    return frame.get("conversation_id"), frame.get("turn_id")


class OutboundQueue:
    def __init__(
        self,
        max_frames: int = 1000,
        on_coalesced: Callable[[int], None] | None = None,
    ) -> None:
        self.max_frames = max_frames
        self.on_coalesced = on_coalesced
        self.coalesced = 0
        self._items: deque[Frame | Close] = deque()
        self._ready = asyncio.Event()
        self._closing = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closing(self) -> bool:
        return self._closing

    def put(self, frame: Frame) -> bool:
        """Queue ``frame``; False when the queue is closing (the frame is not sent)."""
        if self._closing:
            return False
        kind = frame.get("type")
        if kind in ("draft", "final") and frame.get("turn_id"):
            self._drop_drafts(_turn_key(frame))
        if len(self._items) >= self.max_frames:
            self._items.clear()
            self.close(CloseCode.TOO_SLOW, "client too slow: reconnect with resume_from")
            return False
        self._items.append(frame)
        self._ready.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close; later frames are refused."""
        if self._closing:
            return
        self._closing = True
        self._items.append(Close(code, reason))
        self._ready.set()

    async def get(self) -> Frame | Close:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _drop_drafts(self, key: tuple[Any, Any]) -> None:
        def stale(item: Frame | Close) -> bool:
            return isinstance(item, dict) and item.get("type") == "draft" and _turn_key(item) == key

        kept = [item for item in self._items if not stale(item)]
        dropped = len(self._items) - len(kept)
        if dropped:
            self._items = deque(kept)
            self.coalesced += dropped
            if self.on_coalesced is not None:
                self.on_coalesced(dropped)
