"""Per-tenant activity: a short stream of "conversation X changed" notes for the console.

Gateways write what clients and operators do; workers write what a turn did (its final, a
handoff, a failed turn), so the list is current even where no gateway relays the
conversation. Entries carry only the conversation id and what happened; the console's
gateway reads the conversation's current state from SQL, so a note appended twice or out of
date is harmless.
The stream is trimmed by length: a console that subscribes starts from its newest entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from assistant.bus.connection import bounded_block_ms
from assistant.bus.keys import DEFAULT_KEYS, Keys


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Activity:
    stream_id: str
    conversation_id: str
    kind: str  # created | message | owner | exercise (gateway); final | handoff | turn_failed


class ActivityLog:
    def __init__(
        self, redis: aioredis.Redis, *, keys: Keys = DEFAULT_KEYS, maxlen: int = 1000
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen

    async def append(self, tenant_id: str, conversation_id: str, kind: str) -> None:
        fields: dict[Any, Any] = {"conversation_id": conversation_id, "kind": kind}
        await self.redis.xadd(
            self.keys.activity(tenant_id), fields, maxlen=self.maxlen, approximate=True
        )

    async def last_id(self, tenant_id: str) -> str:
        """The newest entry's id ("0-0" when empty): read from it to get what comes next."""
        newest = await self.redis.xrevrange(self.keys.activity(tenant_id), count=1)
        return _str(newest[0][0]) if newest else "0-0"

    async def read_after(
        self, tenant_id: str, after_id: str, block_ms: int | None = None, count: int = 100
    ) -> list[Activity]:
        """Entries after ``after_id``; ``block_ms`` waits for one, within the socket timeout."""
        reply: Any = await self.redis.xread(
            {self.keys.activity(tenant_id): after_id},
            count=count,
            block=bounded_block_ms(self.redis, block_ms),
        )
        out: list[Activity] = []
        streams = reply.items() if isinstance(reply, dict) else reply or []
        for _stream, entries in streams:
            for stream_id, fields in entries:
                data = {_str(k): _str(v) for k, v in (fields or {}).items()}
                if "conversation_id" in data:
                    out.append(
                        Activity(_str(stream_id), data["conversation_id"], data.get("kind", ""))
                    )
        return out
