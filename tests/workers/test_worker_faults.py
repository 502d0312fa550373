"""A slow but live worker keeps its turn; a dead-lettered turn gets no reply after its error.

The real ``assistant worker`` process (a slow random model) holds a turn on its last allowed
delivery when it stops keeping the turn alive while its heartbeat still beats: the fault is
injected with Redis itself, by taking from the worker's Redis user the right to touch the
turn stream (ACL changes apply to open connections), so its keep-alive and its ack fail
while its events and heartbeat go through. Another worker then sees the turn idle past the
claim time. The old rule took the turn over as one more delivery, dead-lettered it
(``turn_failed`` to the client) and left the slow copy running, which then published its
complete reply after the error. Now the turn stays with its live holder, its reply is the
turn's only end, and the turn is acked without a dead letter once the fault is lifted.

The issue's own reproduction too: the holder stopped with SIGSTOP past the claim time (its
heartbeat expires: it looks dead), the turn dead-lettered by the other worker, then the
holder resumed with SIGCONT: nothing of the turn follows the ``turn_failed``, and the
stored reply is the failed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.bus.keys import DEFAULT_KEYS
from assistant.bus.schema import ErrorEvent, Event, FinalEvent, TurnRequest
from assistant.bus.streams import (
    TURN_FAILED,
    TURN_FAILED_MESSAGE,
    EventLog,
    TurnConsumer,
    TurnQueue,
)
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import MessageStatus, Role
from tests.workers.test_worker import checkpoint, new_turn, slow_checkpoint
from workers.busbench_worker import NullEngine, NullHandler
from workers.worker import Worker, WorkerOptions
from workers.worker_metrics import Metrics

__all__ = ["checkpoint", "slow_checkpoint"]  # module fixtures of test_worker, used here

pytestmark = pytest.mark.slow

KEYS = DEFAULT_KEYS
USER, PASSWORD = "worker-a", "worker-a-secret"
# Everything but the turn stream (and its dead letters): events, locks, heartbeats, metrics.
WITHOUT_TURNS = ["~asst:{*", "~asst:workers:*", "~asst:metrics:*", "~asst:activity:*"]


async def wait_until(check: Callable[[], Awaitable[bool]], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Repository]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"
    await migrate.upgrade_async(url)
    store = Repository(create_engine(url))
    yield store
    await store.close()


async def acl(redis: aioredis.Redis, *rules: str) -> None:
    await redis.execute_command("ACL", "SETUSER", USER, *rules)  # type: ignore[no-untyped-call]


@dataclass
class LastDelivery:
    """A turn on its last allowed delivery, held mid-reply by a real worker process."""

    redis: aioredis.Redis
    store: Repository
    turn: TurnRequest
    process: asyncio.subprocess.Process
    other: Worker

    async def of_turn(self) -> list[Event]:
        events = await EventLog(self.redis).read_from(self.turn.conversation_id, 0)
        return [e for e in events if e.turn_id]

    async def ended(self) -> bool:
        return any(isinstance(e, FinalEvent | ErrorEvent) for e in await self.of_turn())

    async def settled(self) -> bool:
        pending = await self.redis.xpending(KEYS.turns, KEYS.group)
        return int(pending["pending"]) == 0


@contextlib.asynccontextmanager
async def last_delivery(
    private_redis: EmbeddedRedis, store: Repository, checkpoint: Path, log: Path
) -> AsyncIterator[LastDelivery]:
    """The worker process takes a dead ghost's turn (its third delivery, the last) and
    drafts; ``other`` is an idle worker in this process, started by the test."""
    redis = aioredis.Redis.from_url(private_redis.url)
    await acl(redis, "on", f">{PASSWORD}", "~*", "&*", "+@all")
    ghost = TurnConsumer(redis, "ghost")  # a worker that died holding the turn, twice
    await ghost.ensure_group()
    turn = await new_turn(store, redis, "where is my order? " * 10, submit=False)
    await TurnQueue(redis).submit(turn)
    [first] = await ghost.claim()
    await redis.xclaim(
        KEYS.turns, KEYS.group, "ghost", 0, [first.stream_id], justid=True, retrycount=2
    )
    url = f"redis://{USER}:{PASSWORD}@{private_redis.host}:{private_redis.port}/0"
    env = {
        **os.environ,
        "ASSISTANT_REDIS_URL": url,
        "ASSISTANT_DATABASE_URL": store.engine.url.render_as_string(hide_password=False),
        "ASSISTANT_MODEL_PATH": str(checkpoint),
        "ASSISTANT_DEVICE": "cpu",
        "ASSISTANT_DECODING_MODE": "vanilla-diffusion",  # a reply of seconds
        "ASSISTANT_CLAIM_IDLE_S": "1",
        "ASSISTANT_LOG_FORMAT": "json",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assistant",
        "worker",
        env=env,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    other = Worker(
        redis,
        store,
        NullEngine(),
        None,
        options=WorkerOptions(
            consumer_name="other",
            min_idle_ms=1000,
            reclaim_every_s=0.2,
            keep_alive_every_s=0.2,
            claim_block_ms=100,
            heartbeat_every_s=0.5,
        ),
        metrics=Metrics(),
        handler=NullHandler,
    )
    scenario = LastDelivery(redis, store, turn, process, other)

    async def drafting() -> bool:
        return any(e.type == "draft" for e in await scenario.of_turn())

    try:
        await wait_until(drafting, limit_s=90)
        pending = await redis.xpending_range(KEYS.turns, KEYS.group, "-", "+", 1)
        assert pending[0]["times_delivered"] == 3 and pending[0]["consumer"] != b"ghost"
        yield scenario
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()
        await redis.aclose()


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_slow_live_holder_keeps_its_turn_and_nothing_follows_its_end(
    private_redis: EmbeddedRedis,
    store: Repository,
    slow_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """Keep-alive lost, heartbeat beating: the turn stays with its holder, one final, no
    dead letter."""
    async with last_delivery(
        private_redis, store, slow_checkpoint, tmp_path / "worker.log"
    ) as scenario:
        redis = scenario.redis
        await acl(redis, "resetkeys", *WITHOUT_TURNS)  # slow: it keeps its turn no longer
        async with running(scenario.other):
            await wait_until(scenario.ended, limit_s=90)
            await asyncio.sleep(3.0)  # room for anything that would follow the turn's end
            await acl(redis, "resetkeys", "~*")
            await wait_until(scenario.settled, limit_s=30)
        events = await scenario.of_turn()
        errors = [e for e in events if isinstance(e, ErrorEvent)]
        finals = [e for e in events if isinstance(e, FinalEvent)]
        assert errors == [], f"the client got turn_failed, then: {[e.type for e in events]}"
        assert len(finals) == 1 and events[-1] == finals[0]
        assert await redis.xlen(KEYS.dead) == 0
        turn = scenario.turn
        replies = [m for m in await store.history(turn.conversation_id) if m.role is Role.ASSISTANT]
        assert [m.status for m in replies] == [MessageStatus.COMPLETE]


async def test_stopped_holder_resumed_after_its_dead_letter_adds_nothing(
    private_redis: EmbeddedRedis,
    store: Repository,
    slow_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """SIGSTOP past the claim time, on the turn's last delivery: its heartbeat expires, the
    other worker dead-letters the turn; after SIGCONT the stopped copy publishes nothing
    after the ``turn_failed``, and the stored reply is the failed one, not an answer."""
    async with last_delivery(
        private_redis, store, slow_checkpoint, tmp_path / "worker.log"
    ) as scenario:
        scenario.process.send_signal(signal.SIGSTOP)
        async with running(scenario.other):
            await wait_until(scenario.ended, limit_s=60)
            scenario.process.send_signal(signal.SIGCONT)
            await asyncio.sleep(5.0)  # the resumed copy runs on until it sees the takeover
            await wait_until(scenario.settled, limit_s=30)
        assert scenario.process.returncode is None  # stopped, never killed
        events = await scenario.of_turn()
        assert isinstance(events[-1], ErrorEvent) and events[-1].code == TURN_FAILED
        assert not [e for e in events if isinstance(e, FinalEvent)]
        assert await scenario.redis.xlen(KEYS.dead) == 1
        turn = scenario.turn
        replies = [m for m in await store.history(turn.conversation_id) if m.role is Role.ASSISTANT]
        assert [(m.status, m.text) for m in replies] == [
            (MessageStatus.FAILED, TURN_FAILED_MESSAGE)
        ]
