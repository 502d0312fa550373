"""The bus against a real redis-server: event log, turn queue, consumer group, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.bus import heartbeat
from assistant.bus.activity import ActivityLog
from assistant.bus.connection import block_limit_ms, bounded_block_ms, connect
from assistant.bus.keys import DEFAULT_KEYS as KEYS
from assistant.bus.schema import (
    DraftEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    TurnRequest,
    UserMessageEvent,
)
from assistant.bus.streams import (
    TURN_FAILED,
    Busy,
    Cancellation,
    Delivery,
    EventLog,
    InFlight,
    TurnConsumer,
    TurnInFlight,
    TurnQueue,
)


def reconnecting(url: str) -> aioredis.Redis:
    """A client that retries a command whose connection dropped, reconnecting first."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 10),
        retry_on_error=[RedisConnectionError],
    )


def turn(conversation_id: str, turn_id: str | None = None) -> TurnRequest:
    return TurnRequest(
        turn_id=turn_id or f"t-{conversation_id}",
        conversation_id=conversation_id,
        tenant_id="ten",
        channel="widget",
        user_message_id=f"m-{conversation_id}",
    )


def draft(conversation_id: str, text: str, step: int = 1) -> DraftEvent:
    return DraftEvent(conversation_id=conversation_id, turn_id="t", text=text, step=step)


async def submit_all(queue: TurnQueue, count: int, prefix: str = "c") -> list[TurnRequest]:
    turns = [turn(f"{prefix}{i}") for i in range(count)]
    for t in turns:
        await queue.submit(t)
    return turns


async def dead_letters(client: aioredis.Redis) -> list[dict[bytes, bytes]]:
    entries: Any = await client.xrange(KEYS.dead)
    return [fields for _id, fields in entries]


@pytest.fixture
async def clients(redis_server: EmbeddedRedis) -> AsyncIterator[list[aioredis.Redis]]:
    """Four more clients of the shared server, as four processes would have."""
    opened = [connect(redis_server.url) for _ in range(4)]
    yield opened
    for client in opened:
        await client.aclose()


@pytest.fixture
async def consumer(redis_client: aioredis.Redis) -> TurnConsumer:
    worker = TurnConsumer(redis_client, "w1")
    await worker.ensure_group()
    return worker


# event log -----------------------------------------------------------------------------


async def test_seq_is_gapless_under_concurrent_appends(
    redis_client: aioredis.Redis, clients: list[aioredis.Redis]
) -> None:
    """200 appends from 4 clients get seqs 1..200, each once, increasing per writer."""

    async def writer(client: aioredis.Redis, name: int) -> list[int]:
        log = EventLog(client)
        return [await log.append("c", draft("c", f"{name}-{i}")) for i in range(50)]

    results = await asyncio.gather(*(writer(c, n) for n, c in enumerate(clients)))
    assert sorted(s for seqs in results for s in seqs) == list(range(1, 201))
    assert all(seqs == sorted(seqs) for seqs in results)
    events = await EventLog(redis_client).read_from("c", 0)
    assert [e.seq for e in events] == list(range(1, 201))
    texts = {e.text for e in events if isinstance(e, DraftEvent)}
    assert texts == {f"{n}-{i}" for n in range(4) for i in range(50)}


async def test_replay_returns_exactly_the_later_events(redis_client: aioredis.Redis) -> None:
    """read_from(n) gives the events after n, in order, on a fresh reader."""
    writer = EventLog(redis_client)
    for i in range(1, 11):
        await writer.append("c", draft("c", f"d{i}", step=i))
    final = FinalEvent(conversation_id="c", turn_id="t", message_id="m", text="done")
    assert await writer.append("c", final) == 11
    reader = EventLog(redis_client)
    later = await reader.read_from("c", 4)
    assert [e.seq for e in later] == list(range(5, 12))
    assert later[0] == draft("c", "d5", step=5).with_seq(5)
    assert later[-1] == final.with_seq(11)
    assert await reader.read_from("c", 11) == []
    assert [e.seq for e in await reader.read_from("c", 4, count=2)] == [5, 6]
    assert await reader.last_seq("c") == 11
    assert await reader.last_seq("other") == 0


async def test_blocking_read_wakes_on_append(redis_client: aioredis.Redis) -> None:
    """A blocked relay returns as soon as an event arrives, and [] on timeout."""
    log = EventLog(redis_client)
    assert await log.read_from("c", 0, block_ms=50) == []
    relay = asyncio.create_task(log.read_from("c", 0, block_ms=5000))
    await asyncio.sleep(0.05)
    await log.append("c", draft("c", "hello"))
    events = await asyncio.wait_for(relay, 2)
    assert [(e.seq, e.type) for e in events] == [(1, "draft")]


def test_block_stays_within_the_socket_timeout() -> None:
    """A BLOCK is cut to half the socket timeout; forever (0) too; no timeout, no cut."""
    assert block_limit_ms(10.0) == 5000
    assert block_limit_ms(0.001) == 1
    assert block_limit_ms(None) is None
    client = aioredis.Redis(socket_timeout=1.0)
    assert [bounded_block_ms(client, ms) for ms in (None, 0, 200, 500, 5000)] == [
        None,
        500,
        200,
        500,
        500,
    ]
    assert bounded_block_ms(aioredis.Redis(socket_timeout=None), 0) == 0


async def test_blocking_read_longer_than_the_socket_timeout_returns_empty(
    redis_server: EmbeddedRedis,
) -> None:
    """A read asked to block past the socket timeout returns [] instead of timing out."""
    client = connect(redis_server.url, socket_timeout_s=1.0)
    try:
        before = (await client.info("stats"))["total_connections_received"]
        log = EventLog(client)
        assert await log.read_from("quiet", 0, block_ms=0) == []
        assert await ActivityLog(client).read_after("tenant", "0-0", block_ms=5000) == []
        # A timed-out read would have dropped the connection and opened another.
        assert (await client.info("stats"))["total_connections_received"] == before
    finally:
        await client.aclose()


async def test_trimming_keeps_the_newest(redis_client: aioredis.Redis) -> None:
    """Past maxlen the oldest events go; the newest stay, contiguous, seq unaffected."""
    log = EventLog(redis_client, maxlen=50)
    for i in range(300):
        await log.append("c", draft("c", str(i)))
    kept = await log.read_from("c", 0)
    assert 50 <= len(kept) < 300
    assert [e.seq for e in kept] == list(range(301 - len(kept), 301))
    assert await log.first_seq("c") == kept[0].seq
    assert await log.last_seq("c") == 300
    assert await log.append("c", draft("c", "next")) == 301


async def test_keys_expire_when_idle(redis_client: aioredis.Redis) -> None:
    """Both the stream and its counter carry the idle TTL, refreshed by each append."""
    log = EventLog(redis_client, ttl_s=60)
    await log.append("c", draft("c", "x"))
    for key in (KEYS.events("c"), KEYS.seq("c")):
        assert 0 < await redis_client.pttl(key) <= 60_000


async def test_lost_counter_continues_after_the_stream(redis_client: aioredis.Redis) -> None:
    """If the counter vanishes but the stream stays, numbering continues, never repeats."""
    log = EventLog(redis_client)
    for i in range(3):
        await log.append("c", draft("c", str(i)))
    await redis_client.delete(KEYS.seq("c"))
    assert await log.append("c", draft("c", "after")) == 4
    assert await log.append("c", draft("c", "again")) == 5


async def test_a_resent_append_is_not_applied_twice(redis_client: aioredis.Redis) -> None:
    """A client resending an append whose reply was lost gets the same seq, no second copy."""
    log = EventLog(redis_client)
    await log.append("c", draft("c", "a"))
    log._aids = itertools.repeat(7)  # type: ignore[assignment]  # every append "resent"
    first = await log.append("c", draft("c", "b"))
    again = await log.append("c", draft("c", "b"))
    assert first == again == 2
    assert [e.to_dict()["text"] for e in await log.read_from("c", 0)] == ["a", "b"]
    log._aids = itertools.count(100)
    assert await log.append("c", draft("c", "b")) == 3  # a new append of the same event


async def test_append_checks_the_conversation(redis_client: aioredis.Redis) -> None:
    """An event cannot be appended to another conversation's log."""
    with pytest.raises(ValueError, match="appended to"):
        await EventLog(redis_client).append("other", draft("c", "x"))


# consumer group ------------------------------------------------------------------------


async def test_two_consumers_share_turns_each_delivered_once(
    redis_client: aioredis.Redis, clients: list[aioredis.Redis]
) -> None:
    """Two workers in one group split the turns; none is delivered twice."""
    submitted = await submit_all(TurnQueue(redis_client), 10)
    workers = [TurnConsumer(clients[0], "w1"), TurnConsumer(clients[1], "w2")]
    await workers[0].ensure_group()
    await workers[1].ensure_group()  # BUSYGROUP is ignored
    got: dict[str, list[Delivery]] = {"w1": [], "w2": []}
    while True:
        batches = await asyncio.gather(*(w.claim(count=3) for w in workers))
        if not any(batches):
            break
        for worker, batch in zip(workers, batches, strict=True):
            got[worker.consumer] += batch
    ids = [d.turn.turn_id for ds in got.values() for d in ds]
    assert sorted(ids) == sorted(t.turn_id for t in submitted)
    assert got["w1"] and got["w2"]
    assert all(d.attempt == 1 for ds in got.values() for d in ds)


async def test_own_pending_turns_are_reread_first_after_restart(
    redis_client: aioredis.Redis, consumer: TurnConsumer, redis_server: EmbeddedRedis
) -> None:
    """A restarted worker (new client, same name) gets its unacked turns before new ones."""
    queue = TurnQueue(redis_client)
    await submit_all(queue, 2, prefix="old")
    taken = await consumer.claim(count=2)
    await submit_all(queue, 2, prefix="new")
    restarted_client = connect(redis_server.url)
    try:
        restarted = TurnConsumer(restarted_client, "w1")
        first = await restarted.claim(count=10)
        assert [d.stream_id for d in first] == [d.stream_id for d in taken]
        assert all(d.attempt == 2 for d in first)
        second = await restarted.claim(count=10)
        assert [d.turn.conversation_id for d in second] == ["new0", "new1"]
        assert await restarted.claim(count=10) == []
    finally:
        await restarted_client.aclose()


async def test_idle_turns_of_a_dead_worker_are_reclaimed_cursor_advancing(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """XAUTOCLAIM takes a dead worker's idle turns one by one, resuming from its cursor."""
    await submit_all(TurnQueue(redis_client), 3)
    dead = await consumer.claim(count=3)
    survivor = TurnConsumer(redis_client, "w2")
    assert await survivor.reclaim_idle(min_idle_ms=10_000) == []  # not idle long enough
    await asyncio.sleep(0.06)
    cursors, reclaimed = [], []
    for _ in range(3):
        reclaimed += await survivor.reclaim_idle(min_idle_ms=50, count=1)
        cursors.append(survivor.autoclaim_cursor)
    assert [d.stream_id for d in reclaimed] == [d.stream_id for d in dead]
    assert all(d.attempt == 2 for d in reclaimed)
    # The cursor points past each reclaimed entry, then wraps once the scan is done.
    assert cursors[:2] == [dead[1].stream_id, dead[2].stream_id]
    assert cursors[2] == "0-0"
    assert await consumer.keep_alive(dead) == dead  # the dead worker learns it lost them


async def test_deleted_pending_turns_are_dropped(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """Pending turns deleted behind the group's back are acked away, not delivered."""
    await submit_all(TurnQueue(redis_client), 3)
    taken = await consumer.claim(count=3)
    await redis_client.xdel(KEYS.turns, taken[0].stream_id, taken[1].stream_id)
    await asyncio.sleep(0.02)
    survivor = TurnConsumer(redis_client, "w2")
    reclaimed = await survivor.reclaim_idle(min_idle_ms=10, count=1)  # a deleted one
    reclaimed += await survivor.reclaim_idle(min_idle_ms=10, count=10)
    assert [d.stream_id for d in reclaimed] == [taken[2].stream_id]
    pending = await redis_client.xpending_range(KEYS.turns, KEYS.group, "-", "+", 10)
    assert [p["message_id"] for p in pending] == [taken[2].stream_id.encode()]


async def test_keep_alive_prevents_reclaim(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A busy worker's long turn is not taken over while it keeps it alive."""
    await submit_all(TurnQueue(redis_client), 1)
    working = await consumer.claim()
    thief = TurnConsumer(redis_client, "w2")
    for _ in range(10):  # 0.6 s in all: past the takeover idle time of 0.4 s
        await asyncio.sleep(0.06)
        assert await consumer.keep_alive(working) == []
        assert await thief.reclaim_idle(min_idle_ms=400) == []
    pending = await redis_client.xpending_range(KEYS.turns, KEYS.group, "-", "+", 10)
    assert pending[0]["times_delivered"] == 1  # keep-alive is not a delivery
    await asyncio.sleep(0.45)
    taken = await thief.reclaim_idle(min_idle_ms=400)
    assert [d.stream_id for d in taken] == [working[0].stream_id]


async def test_keep_alive_does_not_call_a_finished_turn_lost(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A turn acked while the keep-alive was on its way is finished, not taken over."""
    await submit_all(TurnQueue(redis_client), 2)
    first, second = await consumer.claim(count=2)
    await consumer.ack(first)
    assert await consumer.keep_alive([first, second]) == []


async def test_turn_is_dead_lettered_after_max_deliveries(
    redis_client: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Past max deliveries: dead-letter entry written before the ack, client told, lock freed."""
    queue = TurnQueue(redis_client)
    [t] = await submit_all(queue, 1)
    for attempt in (1, 2):  # two workers crash with the turn in hand
        got = await TurnConsumer(redis_client, "w1", max_deliveries=2).claim()
        assert got[0].attempt == attempt

    monitor_client = connect(redis_server.url)
    commands: list[str] = []

    async def watch() -> None:
        async with monitor_client.monitor() as monitor:
            ready.set()
            while True:
                commands.append((await monitor.next_command())["command"])

    ready = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await ready.wait()
    await asyncio.sleep(0.05)
    assert await TurnConsumer(redis_client, "w1", max_deliveries=2).claim() == []
    for _ in range(100):  # MONITOR lags a little behind
        if any(c.startswith("XACK") for c in commands):
            break
        await asyncio.sleep(0.02)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await monitor_client.aclose()

    [dead] = await dead_letters(redis_client)
    assert dead[b"turn_id"] == t.turn_id.encode()
    assert dead[b"dead_attempt"] == b"3"
    assert b"delivered 3 times" in dead[b"dead_reason"]
    dead_write = next(i for i, c in enumerate(commands) if c.startswith(f"XADD {KEYS.dead}"))
    ack = next(i for i, c in enumerate(commands) if c.startswith("XACK"))
    assert dead_write < ack
    [error] = await EventLog(redis_client).read_from(t.conversation_id, 0)
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.turn_id) == (TURN_FAILED, t.turn_id)
    [note] = await ActivityLog(redis_client).read_after(t.tenant_id, "0-0")
    assert (note.conversation_id, note.kind) == (t.conversation_id, TURN_FAILED)
    assert await redis_client.xlen(KEYS.turns) == 0
    assert await InFlight(redis_client).holder(t.conversation_id) is None


async def test_unreadable_turn_is_dead_lettered_at_once(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A turn of an unknown version goes to the dead letters; the client is told."""
    await redis_client.xadd(KEYS.turns, {"v": "9", "conversation_id": "c", "turn_id": "t"})
    assert await consumer.claim() == []
    [dead] = await dead_letters(redis_client)
    assert b"unsupported schema version" in dead[b"dead_reason"]
    [error] = await EventLog(redis_client).read_from("c", 0)
    assert isinstance(error, ErrorEvent) and error.code == TURN_FAILED


# producer ------------------------------------------------------------------------------


async def test_backpressure_refuses_above_the_bound(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """At the bound a submit raises Busy with a retry hint; once work finishes it is accepted."""
    queue = TurnQueue(redis_client, max_backlog=3, retry_after_s=2.0)
    await submit_all(queue, 3)
    with pytest.raises(Busy) as refused:
        await queue.submit(turn("late"))
    assert refused.value.retry_after_s >= 2.0
    assert refused.value.backlog == 3
    assert await InFlight(redis_client).holder("late") is None  # refused before locking
    [done] = await consumer.claim()
    assert await consumer.ack(done)
    assert await queue.backlog() == 2
    assert await queue.submit(turn("late"))


async def test_one_turn_in_flight_per_conversation(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A second turn waits for the first to end; a resubmitted turn is flagged duplicate."""
    queue = TurnQueue(redis_client)
    first, second = turn("c", "t1"), turn("c", "t2")
    await queue.submit(first)
    with pytest.raises(TurnInFlight) as busy:
        await queue.submit(second)
    assert (busy.value.holder, busy.value.duplicate) == ("t1", False)
    with pytest.raises(TurnInFlight) as again:
        await queue.submit(first)
    assert again.value.duplicate
    assert 0 < await redis_client.pttl(KEYS.turn("c")) <= 120_000
    assert await queue.submit(turn("other"))  # other conversations are not held up
    [delivery] = await consumer.claim()
    assert delivery.turn == first
    await consumer.ack(delivery)
    assert await queue.submit(second)


async def test_resubmit_queues_a_turn_whose_entry_was_lost(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """The lock was taken but the XADD lost (Redis went down): a resubmit queues the turn."""
    queue = TurnQueue(redis_client)
    lost = turn("c", "t1")
    assert await queue.in_flight.acquire("c", "t1")  # what the first submit got done
    await submit_all(queue, 3, prefix="other")
    assert await queue.submit(lost)
    with pytest.raises(TurnInFlight) as again:  # now it is queued: a true duplicate
        await queue.submit(lost)
    assert again.value.duplicate
    delivered = [d.turn for d in await consumer.claim(count=10)]
    assert delivered.count(lost) == 1


async def test_stale_release_does_not_free_the_next_turn(redis_client: aioredis.Redis) -> None:
    """Releasing an old turn's lock leaves a newer turn's lock alone."""
    lock = InFlight(redis_client)
    assert await lock.acquire("c", "t2")
    assert not await lock.release("c", "t1")
    assert await lock.holder("c") == "t2"
    assert not await lock.refresh("c", "t1")


# cancellation --------------------------------------------------------------------------


async def test_cancellation_is_seen_by_the_holder(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """The gateway cancels the turn in flight; the worker holding it sees it, others not."""
    await TurnQueue(redis_client).submit(turn("c", "t1"))
    [delivery] = await consumer.claim()
    cancels = Cancellation(redis_client)
    assert not await cancels.is_cancelled("c", "t1")
    assert await cancels.request("c") == "t1"  # no turn id: the one in flight
    assert await cancels.is_cancelled(delivery.turn.conversation_id, delivery.turn.turn_id)
    assert not await cancels.is_cancelled("c", "t0")
    assert await cancels.cancelled([("c", "t1"), ("d", "t9")]) == {"t1"}
    assert await cancels.request("idle") is None


# Redis restart -------------------------------------------------------------------------


async def test_events_and_turns_survive_a_redis_restart(private_redis: EmbeddedRedis) -> None:
    """After a restart the same clients reconnect; events, queued and pending turns remain."""
    producer, worker_client = reconnecting(private_redis.url), reconnecting(private_redis.url)
    try:
        log = EventLog(producer)
        for i in range(3):
            await log.append("c", draft("c", str(i)))
        worker = TurnConsumer(worker_client, "w1")
        await worker.ensure_group()
        await submit_all(TurnQueue(producer), 2)
        [in_hand] = await worker.claim()

        private_redis.restart()

        assert await log.append("c", draft("c", "after")) == 4
        replay: list[Event] = await EventLog(worker_client).read_from("c", 0)
        assert [e.seq for e in replay] == [1, 2, 3, 4]
        restarted = TurnConsumer(worker_client, "w1")
        [again] = await restarted.claim()
        assert again.stream_id == in_hand.stream_id
        [queued] = await restarted.claim()
        assert queued.turn.conversation_id == "c1"
        with pytest.raises(TurnInFlight):  # the in-flight lock survived too
            await TurnQueue(producer).submit(turn("c0", "t-new"))
    finally:
        await producer.aclose()
        await worker_client.aclose()


async def test_a_turn_has_one_final_event(redis_client: aioredis.Redis) -> None:
    """Two deliveries publishing the same turn's final leave one final; other events append."""
    log = EventLog(redis_client)
    final = FinalEvent(conversation_id="c1", turn_id="t1", message_id="m1", text="Shipped.")
    first = await log.append("c1", final)
    assert await log.append("c1", final) == first
    other = FinalEvent(conversation_id="c1", turn_id="t2", message_id="m2", text="Next.")
    assert await log.append("c1", other) == first + 1
    assert [e.seq for e in await log.read_from("c1", 0)] == [first, first + 1]


async def test_nothing_of_a_turn_is_appended_after_its_final(
    redis_client: aioredis.Redis,
) -> None:
    """A late delivery's draft or error after the turn's final is dropped; other turns append."""
    log = EventLog(redis_client)
    draft = DraftEvent(conversation_id="c2", turn_id="t1", text="Ship", step=1)
    assert await log.append("c2", draft) == 1
    final = FinalEvent(conversation_id="c2", turn_id="t1", message_id="m1", text="Shipped.")
    assert await log.append("c2", final) == 2
    assert await log.append("c2", draft) == 0
    error = ErrorEvent(conversation_id="c2", turn_id="t1", code="turn_failed", message="no")
    assert await log.append("c2", error) == 0
    next_turn = DraftEvent(conversation_id="c2", turn_id="t2", text="Hi", step=1)
    assert await log.append("c2", next_turn) == 3
    assert [e.seq for e in await log.read_from("c2", 0)] == [1, 2, 3]


async def test_nothing_of_a_turn_is_appended_after_its_error(
    redis_client: aioredis.Redis,
) -> None:
    """A turn dead-lettered (its error in the log) while a copy still runs: the copy's draft
    and final are dropped, a second error gets the first one's seq back."""
    log = EventLog(redis_client)
    error = ErrorEvent(conversation_id="c3", turn_id="t1", code=TURN_FAILED, message="no")
    assert await log.append("c3", error) == 1
    assert await log.turn_ended("c3", "t1") and not await log.turn_ended("c3", "t2")
    late = DraftEvent(conversation_id="c3", turn_id="t1", text="Ship", step=1)
    assert await log.append("c3", late) == 0
    final = FinalEvent(conversation_id="c3", turn_id="t1", message_id="m1", text="Shipped.")
    assert await log.append("c3", final) == 0
    assert await log.append("c3", error) == 1
    assert [(e.type, e.seq) for e in await log.read_from("c3", 0)] == [("error", 1)]


def echo_of(t: TurnRequest) -> UserMessageEvent:
    return UserMessageEvent(
        conversation_id=t.conversation_id,
        turn_id=t.turn_id,
        message_id=t.user_message_id,
        client_id="q1",
        text="Where is my order?",
    )


async def test_submit_with_echo_is_all_or_nothing(redis_client: aioredis.Redis) -> None:
    """The echo, the lock and the turn are written together, or none of them is."""
    log = EventLog(redis_client)
    queue = TurnQueue(redis_client, max_backlog=2)
    first = turn("e1")
    seq, stream_id = await queue.submit_with_echo(first, echo_of(first), log)
    assert seq == 1 and (await log.read_from("e1", 0))[0].type == "user_message"
    assert await InFlight(redis_client).holder("e1") == first.turn_id
    [(queued_id, _fields)] = await redis_client.xrange(KEYS.turns)
    assert queued_id.decode() == stream_id

    # Resent (its reply was lost): already queued with its echo, nothing written again.
    with pytest.raises(TurnInFlight) as resent:
        await queue.submit_with_echo(first, echo_of(first), log)
    assert resent.value.duplicate
    # Another turn of the conversation while one is in flight: refused, nothing written.
    other = turn("e1", "t-other")
    with pytest.raises(TurnInFlight) as refused:
        await queue.submit_with_echo(other, echo_of(other), log)
    assert not refused.value.duplicate
    assert await log.last_seq("e1") == 1 and await redis_client.xlen(KEYS.turns) == 1

    # A full backlog: refused with no echo and no lock.
    await queue.submit_with_echo(turn("e2"), echo_of(turn("e2")), log)
    with pytest.raises(Busy):
        await queue.submit_with_echo(turn("e3"), echo_of(turn("e3")), log)
    assert await log.last_seq("e3") == 0
    assert await InFlight(redis_client).holder("e3") is None


async def test_a_turn_is_taken_once_even_after_its_lock_is_gone(
    redis_client: aioredis.Redis,
) -> None:
    """Two takes of one message racing (a resend and a background retry): the second comes
    after the first's turn was answered and its lock released, and still writes nothing."""
    log = EventLog(redis_client)
    queue = TurnQueue(redis_client)
    first = turn("e4")
    await queue.submit_with_echo(first, echo_of(first), log)
    await InFlight(redis_client).release("e4", first.turn_id)
    with pytest.raises(TurnInFlight) as again:
        await queue.submit_with_echo(first, echo_of(first), log)
    assert again.value.duplicate
    assert await log.last_seq("e4") == 1 and await redis_client.xlen(KEYS.turns) == 1
    assert await InFlight(redis_client).holder("e4") is None
    # The conversation's next message is a new turn: taken as usual.
    second = turn("e4", "t-next")
    await queue.submit_with_echo(second, echo_of(second), log)
    assert await log.last_seq("e4") == 2


async def times_delivered(client: aioredis.Redis, stream_id: str) -> int:
    [row] = await client.xpending_range(KEYS.turns, KEYS.group, stream_id, stream_id, 1)
    return int(row["times_delivered"])


async def test_idle_turn_of_a_live_worker_is_left_to_it(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A holder whose heartbeat lives is slow, not dead: its idle turn is not taken over and
    no delivery is counted; once its heartbeat is gone, the turn is taken over."""
    await submit_all(TurnQueue(redis_client), 1)
    [held] = await consumer.claim()
    await heartbeat.announce(redis_client, KEYS, "w1")
    await asyncio.sleep(0.06)
    other = TurnConsumer(redis_client, "w2")
    assert await other.reclaim_idle(min_idle_ms=50) == []
    assert await times_delivered(redis_client, held.stream_id) == 1
    await heartbeat.withdraw(redis_client, KEYS, "w1")
    [taken] = await other.reclaim_idle(min_idle_ms=50)
    assert (taken.stream_id, taken.attempt) == (held.stream_id, 2)


async def test_own_idle_turn_is_reclaimed_only_when_not_running(
    redis_client: aioredis.Redis, consumer: TurnConsumer
) -> None:
    """A live worker takes back its own idle turn whose task failed, not one it still runs."""
    await submit_all(TurnQueue(redis_client), 1)
    [held] = await consumer.claim()
    await heartbeat.announce(redis_client, KEYS, "w1")
    await asyncio.sleep(0.06)
    assert await consumer.reclaim_idle(min_idle_ms=50, running={held.stream_id}) == []
    assert await times_delivered(redis_client, held.stream_id) == 1
    [again] = await consumer.reclaim_idle(min_idle_ms=50)
    assert (again.stream_id, again.attempt) == (held.stream_id, 2)


async def test_a_turn_past_its_deliveries_is_dead_lettered_only_when_nothing_of_it_lives(
    redis_client: aioredis.Redis,
) -> None:
    """Past max deliveries: a turn that ended (its final in the log) is acked, no dead letter;
    a turn whose holder came back to life while it was taken is given back, uncounted; only
    a turn with no live delivery is dead-lettered, after the hook and a cancel of any copy."""
    queue, log = TurnQueue(redis_client), EventLog(redis_client)
    ended, revived, dead = await submit_all(queue, 3, prefix="past")
    holder = TurnConsumer(redis_client, "w1", max_deliveries=1)
    await holder.ensure_group()
    assert len(await holder.claim(count=3)) == 3
    final = FinalEvent(
        conversation_id=ended.conversation_id, turn_id=ended.turn_id, message_id="m", text="ok"
    )
    await log.append(ended.conversation_id, final)
    hooked: list[str] = []

    async def on_dead_letter(turn: TurnRequest) -> None:
        hooked.append(turn.turn_id)

    other = TurnConsumer(redis_client, "w2", max_deliveries=1, on_dead_letter=on_dead_letter)
    await asyncio.sleep(0.06)
    assert await other.reclaim_idle(min_idle_ms=50, count=1) == []  # ended: acked
    assert await redis_client.xlen(KEYS.turns) == 2 and await dead_letters(redis_client) == []

    # w1 looked dead when w2 took the turn, and beats again when w2 decides its fate.
    looks = 0
    real_alive = other._alive

    async def revives(names: Any) -> set[str]:
        nonlocal looks
        looks += 1
        if looks == 2:
            await heartbeat.announce(redis_client, KEYS, "w1")
        return await real_alive(names)

    other._alive = revives  # type: ignore[method-assign]
    assert await other.reclaim_idle(min_idle_ms=50, count=1) == []
    other._alive = real_alive  # type: ignore[method-assign]
    rows = await redis_client.xpending_range(KEYS.turns, KEYS.group, "-", "+", 10)
    assert [(r["consumer"], r["times_delivered"]) for r in rows] == [(b"w1", 1), (b"w1", 1)]
    assert hooked == [] and await dead_letters(redis_client) == []

    await heartbeat.withdraw(redis_client, KEYS, "w1")
    await asyncio.sleep(0.06)
    for _ in range(2):  # wherever the scan's cursor stands, two calls cover both turns
        assert await other.reclaim_idle(min_idle_ms=50, count=2) == []
    assert sorted(hooked) == [revived.turn_id, dead.turn_id]
    assert sorted(d[b"turn_id"] for d in await dead_letters(redis_client)) == [
        revived.turn_id.encode(),
        dead.turn_id.encode(),
    ]
    assert await Cancellation(redis_client).is_cancelled(dead.conversation_id, dead.turn_id)
    assert await redis_client.xlen(KEYS.turns) == 0
