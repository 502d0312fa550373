"""The fault suite: real gateways, workers and Redis under load, killed one after another.

Two gateways and two workers run as separate processes against one append-only Redis and
one SQLite file, with the bundled model. Simulated clients hold scripted conversations
through the load generator while a worker is SIGKILLed, then a gateway, then Redis. After
the load: every user message is stored once, every turn has exactly one reply (or its
client got an error), no client hangs, and every conversation's event sequence is gapless.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from assistant.app.embedded_redis import EmbeddedRedis, free_port
from assistant.bus.connection import connect
from assistant.bus.keys import DEFAULT_KEYS
from assistant.demo.load import load_demo
from assistant.demo.shop import build_shop
from assistant.lab.loadtest.client import LoadOptions, run_load
from assistant.lab.loadtest.scenario import Summary, make_scripts, render
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import KeyKind, Message, Role
from tests.foundation._processes import wait_http

pytestmark = pytest.mark.slow

CLIENTS = 6
TURNS = 8  # long enough that the load outlasts the faults, which start once turns flow


@dataclass
class Deployment:
    redis: EmbeddedRedis
    database_url: str
    public_key: str
    gateways: list[tuple[int, subprocess.Popen[bytes]]]
    workers: list[subprocess.Popen[bytes]]
    env: dict[str, str]

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "assistant", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(f"ws://127.0.0.1:{port}/ws" for port, _ in self.gateways)


async def _prepare_database(url: str) -> str:
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    try:
        tenant_id, _ = await load_demo(engine)
        _row, plain = await Repository(engine).create_key(tenant_id, KeyKind.PUBLIC, label="faults")
        return plain
    finally:
        await engine.dispose()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    redis = EmbeddedRedis(tmp_path / "redis")  # append-only, as in production
    redis.start()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"
    public_key = asyncio.run(_prepare_database(database_url))
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "ASSISTANT_REDIS_URL": redis.url,
        "ASSISTANT_DATABASE_URL": database_url,
        "ASSISTANT_DATA_DIR": str(tmp_path),
        "ASSISTANT_SECRET": "f" * 64,
        "ASSISTANT_LOG_FORMAT": "json",
        "ASSISTANT_CLAIM_IDLE_S": "3",  # take a killed worker's turns over quickly
        "ASSISTANT_MAX_BATCH": "4",
    }
    found = Deployment(redis, database_url, public_key, [], [], env)
    try:
        for _ in range(2):
            port = free_port()
            found.gateways.append((port, found.spawn("gateway", "--port", str(port))))
        found.workers += [found.spawn("worker") for _ in range(2)]
        for port, _process in found.gateways:
            wait_http(f"http://127.0.0.1:{port}/readyz")
        yield found
    finally:
        for process in [p for _, p in found.gateways] + found.workers:
            if process.poll() is None:
                process.kill()
            process.wait()
        redis.stop()


async def _faults(
    deployment: Deployment, redis: aioredis.Redis, load: asyncio.Task[Summary]
) -> None:
    """Kill a worker, a gateway, then Redis, each once turns are flowing."""

    for _ in range(600):  # until conversations are under way
        if len(await redis.keys(f"{DEFAULT_KEYS.prefix}:*:events")) >= 3:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    deployment.workers[0].send_signal(signal.SIGKILL)
    deployment.workers.append(deployment.spawn("worker"))  # a replacement, as serve does
    await asyncio.sleep(3)
    deployment.gateways[0][1].send_signal(signal.SIGKILL)
    await asyncio.sleep(3)
    deployment.redis.kill()
    await asyncio.sleep(0.5)
    deployment.redis.start()
    assert not load.done(), "the load ended before the last fault: make it longer"


async def _check_store(deployment: Deployment, failed_turns: set[str]) -> list[str]:
    engine = create_engine(deployment.database_url)
    problems: list[str] = []
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Message))).all()
    finally:
        await engine.dispose()
    users = [r for r in rows if r.role == Role.USER]
    per_client = Counter((r.conversation_id, r.client_id) for r in users)
    problems += [f"user message {key} stored {n} times" for key, n in per_client.items() if n > 1]
    replies = Counter(r.turn_id for r in rows if r.role == Role.ASSISTANT)
    problems += [f"turn {t} has {n} replies" for t, n in replies.items() if n > 1]
    for user in users:
        if user.turn_id and replies[user.turn_id] == 0 and user.turn_id not in failed_turns:
            problems.append(f"turn {user.turn_id} has no reply and its client got no error")
    return problems


async def _gapless(redis: aioredis.Redis) -> list[str]:
    problems = []
    for key in await redis.keys(f"{DEFAULT_KEYS.prefix}:*:events"):
        seqs = [int(entry_id.decode().split("-")[0]) for entry_id, _ in await redis.xrange(key)]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            problems.append(f"{key.decode()} has gaps: {seqs}")
    return problems


@pytest.fixture
async def redis_client(deployment: Deployment) -> AsyncIterator[aioredis.Redis]:
    client = connect(deployment.redis.url)  # retries across the Redis restart
    yield client
    await client.aclose()


async def test_faults_under_load_lose_and_duplicate_nothing(
    deployment: Deployment, redis_client: aioredis.Redis
) -> None:
    """Worker, gateway and Redis killed under load: nothing lost, nothing twice, no gaps."""
    orders = build_shop().orders_in("heldout")
    scripts = make_scripts(CLIENTS, TURNS, orders, tutoring_share=0.3, seed=11)
    options = LoadOptions(
        urls=deployment.urls,
        key=deployment.public_key,
        think_s=1.0,
        turn_timeout_s=90,
        duration_s=300,
    )
    load = asyncio.create_task(run_load(scripts, options))
    await _faults(deployment, redis_client, load)
    summary = await load
    print(render(summary, "faults"))  # shown with -s or on failure
    assert summary.violations == []
    assert summary.turns == CLIENTS * TURNS
    assert await _check_store(deployment, await _failed_turns(redis_client)) == []
    assert await _gapless(redis_client) == []


async def _failed_turns(redis: aioredis.Redis) -> set[str]:
    """Turns whose clients were told they failed (their error events)."""
    failed: set[str] = set()
    for key in await redis.keys(f"{DEFAULT_KEYS.prefix}:*:events"):
        for _id, fields in await redis.xrange(key):
            if fields.get(b"type") == b"error" and fields.get(b"turn_id"):
                failed.add(fields[b"turn_id"].decode())
    return failed
