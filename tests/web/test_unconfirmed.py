"""Background retries of messages no replica confirmed (web/unconfirmed.py)."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from assistant.bus.replication import NotReplicated
from web.unconfirmed import Unconfirmed


async def test_a_message_is_taken_again_until_an_attempt_succeeds() -> None:
    outcomes: list[Exception | None] = [NotReplicated(1, 0), RedisConnectionError("gone"), None]
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    unconfirmed = Unconfirmed(delays=(0.0,) * 5)
    unconfirmed.add("c:m1", attempt)
    unconfirmed.add("c:m1", attempt)  # one retry per message, however often it is added
    assert len(unconfirmed) == 1
    for _ in range(50):
        await asyncio.sleep(0)
    assert calls == 3 and len(unconfirmed) == 0


async def test_retries_stop_after_the_last_delay_and_when_the_gateway_closes() -> None:
    calls = 0

    async def never() -> None:
        nonlocal calls
        calls += 1
        raise NotReplicated(1, 0)

    unconfirmed = Unconfirmed(delays=(0.0, 0.0))
    unconfirmed.add("c:m1", never)
    for _ in range(50):
        await asyncio.sleep(0)
    assert calls == 2 and len(unconfirmed) == 0

    slow = Unconfirmed(delays=(60.0,))
    slow.add("c:m2", never)
    await slow.close()
    assert len(slow) == 0
