"""A submitted message waits until a replica holds it (assistant/bus/replication.py).

The replica is paused (SIGSTOP) to stand for one that has not copied the write yet: the
submit then reports ``NotReplicated`` instead of success, with the message queued on the
primary, so a resend (a no-op while the primary lives) is what the client is told to do.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from assistant.bus.keys import DEFAULT_KEYS as KEYS
from assistant.bus.replication import NotReplicated, ReplicaAcks, connected_replicas
from assistant.bus.streams import EventLog, TurnInFlight, TurnQueue
from tests.bus.test_streams import echo_of, turn
from tests.system._sentinel import HOST, SentinelDeployment, Server


def test_a_role_reply_counts_a_primarys_replicas_only() -> None:
    assert connected_replicas([b"master", 10, [[b"127.0.0.1", b"6380", b"10"]]]) == 1
    assert connected_replicas(["master", 0, []]) == 0
    assert connected_replicas([b"slave", b"127.0.0.1", 6379, b"connected", 10]) == 0
    assert connected_replicas(None) == 0


async def test_a_write_is_not_refused_for_a_replica_that_is_gone(
    redis_client: aioredis.Redis,
) -> None:
    """After a failover the promoted primary has no replica yet: a write the old count asked
    a replica for is accepted once ROLE, read again, lists none."""
    acks = ReplicaAcks(1)
    await acks.confirm(redis_client, 1, 1)
    await acks.confirm(redis_client, 1, 0)  # ROLE read again: a lone primary
    assert await acks.needed(redis_client) == 0
    with pytest.raises(ValueError):
        ReplicaAcks(-1)


async def test_a_lone_primary_never_waits(redis_client: aioredis.Redis) -> None:
    acks = ReplicaAcks(1, wait_ms=60_000)
    queue = TurnQueue(redis_client, replicas=acks)
    t = turn("lone")
    seq, _stream_id = await queue.submit_with_echo(t, echo_of(t), EventLog(redis_client))
    assert seq == 1 and await acks.needed(redis_client) == 0


@contextlib.contextmanager
def paused(server: Server | None) -> Iterator[None]:
    assert server is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@pytest.mark.slow
async def test_a_submit_returns_once_the_replica_has_it(sentinels: SentinelDeployment) -> None:
    assert sentinels.primary is not None and sentinels.replica is not None
    primary = aioredis.Redis(host=HOST, port=sentinels.primary.port)
    replica = aioredis.Redis(host=HOST, port=sentinels.replica.port)
    queue = TurnQueue(primary, replicas=ReplicaAcks(1, wait_ms=300))
    log = EventLog(primary)
    try:
        first = turn("r1")
        await queue.submit_with_echo(first, echo_of(first), log)
        # WAIT returned 1: the replica already holds the turn and its echo.
        assert await replica.xlen(KEYS.turns) == 1
        assert await EventLog(replica).last_seq("r1") == 1

        second = turn("r2")
        with paused(sentinels.replica), pytest.raises(NotReplicated):
            await queue.submit_with_echo(second, echo_of(second), log)
        # Written on the primary all the same: the resend the client is told to make is a
        # no-op there (the turn is queued with its echo).
        assert await primary.xlen(KEYS.turns) == 2
        with pytest.raises(TurnInFlight) as resent:
            await queue.submit_with_echo(second, echo_of(second), log)
        assert resent.value.duplicate

        # The background check: a write of its own, then WAIT, covers every earlier write.
        acks = ReplicaAcks(1, wait_ms=300)
        with paused(sentinels.replica), pytest.raises(NotReplicated):
            await acks.confirm_written(primary, KEYS.replication_probe)
        await acks.confirm_written(primary, KEYS.replication_probe)
        assert await replica.xlen(KEYS.turns) == 2
    finally:
        await primary.aclose()
        await replica.aclose()
