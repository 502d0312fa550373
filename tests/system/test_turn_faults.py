"""Faults that used to lose or contradict a turn, each injected into real processes.

- The echo gap: a gateway process fails between a message's echo and its turn, and dies.
  The fault is injected with Redis itself: the gateway's Redis user loses the right to
  write the tenant's activity stream, which the old gateway wrote between the echo and the
  turn (ACL changes apply to connections already open). Afterwards the acknowledged message
  must still be answered, and the conversation must take new messages.
- Dead-lettered, then answered: a worker process holding a turn is stopped (SIGSTOP) past
  the claim time; the turn has used its deliveries, so the next worker dead-letters it; the
  stopped worker then resumes (SIGCONT) and finishes its copy. The client must not get a
  reply after its ``turn_failed``.

Each uses its own redis-server, a SQLite file, and the real gateway or worker command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from assistant.app.embedded_redis import EmbeddedRedis, free_port
from assistant.bus.keys import DEFAULT_KEYS
from assistant.bus.streams import EventLog
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from tests.foundation._processes import wait_http
from tests.web.conftest import Client, Tenant, make_tenant, of_type
from workers.busbench_worker import NullEngine, NullHandler
from workers.worker import Worker, WorkerOptions
from workers.worker_metrics import Metrics

KEYS = DEFAULT_KEYS
USER, PASSWORD = "gateway", "gateway-secret"


async def wait_until(check: Callable[[], Awaitable[bool]], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Repository]:
    store = Repository(create_engine(database_url))
    yield store
    await store.close()


@pytest.fixture
async def redis(private_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


def _env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ASSISTANT_REDIS_URL": redis_url,
        "ASSISTANT_DATABASE_URL": database_url,
        "ASSISTANT_DATA_DIR": str(tmp_path / "data"),
        "ASSISTANT_SECRET": "f" * 64,
        "ASSISTANT_LOG_FORMAT": "json",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def gateway_process(
    env: dict[str, str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "gateway", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"ws://127.0.0.1:{port}/ws", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@contextlib.asynccontextmanager
async def null_worker(redis: aioredis.Redis, name: str) -> AsyncIterator[Worker]:
    """The real worker loop, answering each turn at once (no model)."""
    worker = Worker(
        redis,
        None,
        NullEngine(),
        None,
        options=WorkerOptions(consumer_name=name, claim_block_ms=100),
        metrics=Metrics(),
        handler=NullHandler,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def frames_for(ws_client: Client, seconds: float) -> list[dict[str, Any]]:
    """Whatever the gateway sends within ``seconds`` (the socket may close meanwhile)."""
    got: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError, Exception):
        async with asyncio.timeout(seconds):
            while True:
                got.append(json.loads(await ws_client.ws.recv()))
    return got


async def test_gateway_dying_between_echo_and_turn_loses_no_message(
    private_redis: EmbeddedRedis,
    redis: aioredis.Redis,
    store: Repository,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A gateway fails after the echo's step and dies: the acknowledged message is answered,
    and the conversation answers the next message instead of ``busy``."""
    await redis.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all")
    authed_url = f"redis://{USER}:{PASSWORD}@{private_redis.host}:{private_redis.port}/0"
    env = _env(authed_url, database_url, tmp_path)
    tenant: Tenant = await make_tenant(store, "shop")
    log = tmp_path / "gateways.log"
    with gateway_process(env, log) as (url, process):
        async with connect(url) as ws:
            first = Client(ws)
            ready = await first.hello(tenant.public_key, channel="widget")
            cid, token = ready["conversation_id"], ready["conversation_token"]
            # The fault: every write after the echo's step fails, and the gateway dies.
            await redis.execute_command(
                "ACL", "SETUSER", USER, "resetkeys", "~asst:{*", "~asst:turns*", "~asst:rl:*"
            )
            await first.send(type="user_message", id="q1", text="Where is my order?")
            seen = await frames_for(first, 3.0)
            process.kill()
            process.wait()
    await redis.execute_command("ACL", "SETUSER", USER, "resetkeys", "~*")
    echoes = [f for f in seen if f.get("type") == "user_message" and f.get("client_id") == "q1"]
    if not echoes:
        pytest.fail(f"the fault did not hit between the echo and the turn: {seen}")
    turn_id = echoes[0]["turn_id"]
    # The client holds an acknowledged message: it does not send it again, it reconnects.
    async with null_worker(redis, "w1"):
        with gateway_process(env, log) as (url, _process):
            async with connect(url) as ws:
                again = Client(ws)
                resumed = await again.hello(
                    tenant.public_key,
                    channel="widget",
                    conversation_id=cid,
                    conversation_token=token,
                    resume_from=echoes[0]["seq"],
                )
                assert resumed["type"] == "ready"
                reply = await again.until(of_type("final", turn_id=turn_id))
                assert reply["text"]
                await again.send(type="user_message", id="q2", text="Thanks!")
                second = await again.until(of_type("user_message", client_id="q2"))
                await again.until(of_type("final", turn_id=second["turn_id"]))
    errors = [f for f in again.seen if f.get("type") == "error"]
    assert errors == [], errors


async def test_acknowledged_message_lost_by_a_power_cut_is_answered_after_restart(
    private_redis: EmbeddedRedis,
    redis: aioredis.Redis,
    store: Repository,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Power cut: the gateway dies, and Redis comes back without its last second of writes
    (append-only, fsync every second): the message's echo, lock and turn are gone though the
    client saw the echo. The client comes back with ``hello`` and gets its answer."""
    env = _env(private_redis.url, database_url, tmp_path)
    tenant: Tenant = await make_tenant(store, "shop")
    log = tmp_path / "gateways.log"
    with gateway_process(env, log) as (url, process):
        async with connect(url) as ws:
            first = Client(ws)
            ready = await first.hello(tenant.public_key, channel="widget")
            cid, token = ready["conversation_id"], ready["conversation_token"]
            await first.send(type="user_message", id="q1", text="Where is my order?")
            echo = await first.until(of_type("user_message", client_id="q1"))
            process.kill()
            process.wait()
    # What the cut took: everything of the conversation written in its last second.
    await redis.delete(
        KEYS.events(cid), KEYS.seq(cid), KEYS.once(cid), KEYS.turn(cid), KEYS.cancel(cid)
    )
    await redis.delete(KEYS.turns)
    await redis.aclose()
    await asyncio.to_thread(private_redis.stop)
    await asyncio.to_thread(private_redis.start)
    restarted = aioredis.Redis.from_url(private_redis.url)
    try:
        async with null_worker(restarted, "w1"):
            with gateway_process(env, log) as (url, _process):
                async with connect(url) as ws:
                    again = Client(ws)
                    resumed = await again.hello(
                        tenant.public_key,
                        channel="widget",
                        conversation_id=cid,
                        conversation_token=token,
                        resume_from=echo["seq"],
                    )
                    assert resumed["type"] == "ready"
                    reply = await again.until(of_type("final", turn_id=echo["turn_id"]))
                    assert reply["text"]
                async with connect(url) as ws:  # once answered, a hello queues nothing
                    later = Client(ws)
                    assert (
                        await later.hello(
                            tenant.public_key,
                            channel="widget",
                            conversation_id=cid,
                            conversation_token=token,
                        )
                    )["type"] == "ready"
        events = await EventLog(restarted).read_from(cid, 0)
        of_turn = [e.type for e in events if e.turn_id == echo["turn_id"]]
        assert of_turn.count("user_message") == 1 and of_turn[-1] == "final"
        assert await restarted.xlen(KEYS.turns) == 0
    finally:
        await restarted.aclose()
