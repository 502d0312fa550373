"""Redis failover under load: the primary SIGKILLed, a replica promoted by Sentinel.

A primary, a replica and three sentinels run from the same redis-server binary
(``_sentinel.py``). Two real gateway processes and one worker (the real worker loop with the
null handler: every turn answered at once, no model) reach Redis only through
``ASSISTANT_REDIS_URL=redis+sentinel://...``. Simulated clients hold conversations over
real WebSockets while the primary is killed; commands fail until the sentinels promote the
replica, then every process must find the new primary on its own. Afterwards: every
message a client sent was acknowledged once and answered once (a message refused while
Redis was away is sent again, as the pages do), no event arrived twice or out of order,
and every client got replies after the failover. A second run kills one of the gateways
with the primary, so that its clients reconnect and resume on the other while Redis has no
primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as connect_ws

from assistant.app.embedded_redis import free_port
from assistant.bus.connection import connect
from assistant.bus.keys import DEFAULT_KEYS
from assistant.demo.load import load_demo
from assistant.demo.shop import build_shop
from assistant.lab.loadtest.client import LoadOptions, SimulatedClient, say_hello
from assistant.lab.loadtest.scenario import make_scripts
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import KeyKind
from tests.foundation._processes import wait_http
from tests.system._sentinel import SentinelDeployment
from workers.busbench_worker import NullEngine, NullHandler
from workers.worker import Worker, WorkerOptions
from workers.worker_metrics import Metrics

pytestmark = pytest.mark.slow

CLIENTS = 6
TURNS = 12
THINK_S = 0.1


class ResendingClient(SimulatedClient):
    """A load client that sends a message again when the gateway could not take it.

    A message refused with ``internal`` (Redis unreachable mid-failover) was not
    acknowledged; the pages send it again with the same id, which keeps it idempotent.
    """

    hellos = 0

    async def _hello(self, url: str) -> ClientConnection:
        socket = await super()._hello(url)
        self.hellos += 1  # a socket opened and its conversation ready (resumed after the first)
        return socket

    def _receive(self, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if frame.get("type") == "error" and frame.get("code") == "internal" and ref in self._done:
            self.ledger.errors["internal"] += 1
            self._retry_in = 0.3
            return
        super()._receive(frame)


async def _prepare_database(url: str) -> str:
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    try:
        tenant_id, _ = await load_demo(engine)
        _row, plain = await Repository(engine).create_key(
            tenant_id, KeyKind.PUBLIC, label="failover"
        )
        return plain
    finally:
        await engine.dispose()


def _gateway_env(
    sentinels: SentinelDeployment, tmp_path: Path, database_url: str
) -> dict[str, str]:
    return {
        **os.environ,
        "ASSISTANT_REDIS_URL": sentinels.url,
        "ASSISTANT_DATABASE_URL": database_url,
        "ASSISTANT_DATA_DIR": str(tmp_path / "data"),
        "ASSISTANT_SECRET": "f" * 64,
        "ASSISTANT_LOG_FORMAT": "json",
        "ASSISTANT_RATE_IP": "100000/100000",
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def gateways(
    env: dict[str, str], log: Path, count: int
) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    ports = [free_port() for _ in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as output:
        for port in ports:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "assistant", "gateway", "--port", str(port)],
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield list(zip(ports, processes, strict=True))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def null_worker(url: str) -> AsyncIterator[Worker]:
    """The real worker loop on its own Sentinel client, answering each turn at once."""
    client = connect(url)
    worker = Worker(
        client,
        None,
        NullEngine(),
        None,
        options=WorkerOptions(consumer_name="w1", claim_block_ms=200),
        metrics=Metrics(),
        handler=NullHandler,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await client.aclose()


async def _gapless(redis: aioredis.Redis) -> list[str]:
    problems = []
    for key in await redis.keys(f"{DEFAULT_KEYS.prefix}:*:events"):
        seqs = [int(entry_id.decode().split("-")[0]) for entry_id, _ in await redis.xrange(key)]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            problems.append(f"{key.decode()} has gaps: {seqs}")
    return problems


async def _first_final_after(redis: aioredis.Redis, killed_at: float) -> float:
    """Seconds from the kill until a new final is written (on the promoted replica)."""
    before = await _finals(redis)
    for _ in range(600):
        if await _finals(redis) > before:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - killed_at


async def _finals(redis: aioredis.Redis) -> int:
    count = 0
    for key in await redis.keys(f"{DEFAULT_KEYS.prefix}:*:events"):
        count += sum(1 for _id, f in await redis.xrange(key) if f.get(b"type") == b"final")
    return count


@pytest.mark.parametrize("gateway_killed", [False, True], ids=["sockets-held", "gateway-killed"])
async def test_sentinel_failover_under_load_loses_and_duplicates_nothing(
    sentinels: SentinelDeployment, tmp_path: Path, gateway_killed: bool
) -> None:
    """The primary killed mid-load; with ``gateway_killed``, one of the two gateways too, at
    the same moment, so its clients reconnect and resume on the other while Redis has no
    primary (their hello and resume read Redis mid-failover)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'failover.db'}"
    key = await _prepare_database(database_url)
    env = _gateway_env(sentinels, tmp_path, database_url)
    old_primary = sentinels.primary_port()
    observer = connect(sentinels.url)
    try:
        async with null_worker(sentinels.url):
            with gateways(env, tmp_path / "gateways.log", 2) as running:
                ports = [port for port, _process in running]
                for port in ports:
                    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz")
                options = LoadOptions(
                    urls=tuple(f"ws://127.0.0.1:{port}/ws" for port in ports),
                    key=key,
                    think_s=THINK_S,
                    turn_timeout_s=40,
                    duration_s=45,
                )
                scripts = make_scripts(
                    CLIENTS, TURNS, build_shop().orders_in("heldout"), 0.0, seed=16
                )
                clients = [ResendingClient(i, s, options) for i, s in enumerate(scripts)]
                deadline = time.monotonic() + options.duration_s
                load = asyncio.gather(*(c.run(deadline) for c in clients))
                while await _finals(observer) < CLIENTS * 2:  # turns flow on every client
                    assert not load.done(), "the load ended before the fault"
                    await asyncio.sleep(0.1)
                finals_before = [dict(c.ledger.finals) for c in clients]
                sentinels.primary.kill()  # type: ignore[union-attr]
                if gateway_killed:
                    running[0][1].kill()
                    ports = ports[1:]
                killed_at = time.monotonic()
                failover_s = await _first_final_after(observer, killed_at)
                await load
                assert time.monotonic() - killed_at > 2, "the load ended too soon after the fault"
                for port in ports:  # ready again: Redis, and the worker's heartbeat, found
                    body = await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz", 10)
                    assert json.loads(body)["ready"] is True
        # On the promoted replica: every turn taken and acknowledged, no event log with a gap.
        assert await observer.xlen(DEFAULT_KEYS.turns) == 0
        assert await _gapless(observer) == []
    finally:
        new_primary = sentinels.primary_port()
        await observer.aclose()
    assert new_primary != old_primary, "the sentinels did not promote the replica"

    violations = [f"client {c.index}: {v}" for c in clients for v in c.ledger.violations()]
    assert violations == []
    for client, before in zip(clients, finals_before, strict=True):
        sent = len(client.ledger.turns)
        assert sent == TURNS, f"client {client.index} sent {sent} of {TURNS} messages"
        answered = [t for t in client.ledger.turns.values() if t.final_at is not None]
        assert len(answered) == TURNS, f"client {client.index}: {len(answered)} answered"
        # Resumed: replies came after the failover, not only before it.
        assert len(client.ledger.finals) > len(before), f"client {client.index} stalled"
        if gateway_killed and client.index % 2 == 0:  # the killed gateway's clients
            assert client.hellos >= 2, f"client {client.index} never reconnected"
    summary = {
        "acknowledged": sum(sum(c.ledger.acks.values()) for c in clients),
        "answered": sum(sum(c.ledger.finals.values()) for c in clients),
        "answered_before_the_kill": sum(sum(b.values()) for b in finals_before),
        "refused_during_failover": sum(c.ledger.errors["internal"] for c in clients),
        "failover_s": round(failover_s, 1),
        "reconnects": sum(c.hellos - 1 for c in clients),
    }
    print("failover:", summary)  # shown with -s
    assert summary["acknowledged"] == summary["answered"] == CLIENTS * TURNS


async def test_a_message_the_replica_never_copied_is_taken_again_and_answered(
    sentinels: SentinelDeployment, tmp_path: Path
) -> None:
    """The primary dies after taking a message and before its replica copied it (the replica
    is paused to hold that moment open). The promoted replica has neither the message's
    echo nor its turn, while the client was told nothing went wrong. The gateway waited for
    the replica (WAIT), saw it did not confirm, and takes the message again on its own until
    one does: the client, which sends it once, gets its reply from the promoted replica."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'failover.db'}"
    key = await _prepare_database(database_url)
    env = _gateway_env(sentinels, tmp_path, database_url)  # the default waits for 1 replica
    assert sentinels.replica is not None and sentinels.primary is not None
    replica_pid = sentinels.replica.process.pid
    with gateways(env, tmp_path / "gateways.log", 1) as running:
        [(port, _process)] = running
        # Alive (not ready: no worker yet, so that none answers the turn on the old primary).
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz")
        async with connect_ws(f"ws://127.0.0.1:{port}/ws") as socket:
            ready = await say_hello(
                socket, {"type": "hello", "v": 1, "key": key, "channel": "widget"}
            )
            assert ready["type"] == "ready"
            message = {"type": "user_message", "id": "m" * 16, "text": "Where is my order?"}
            os.kill(replica_pid, signal.SIGSTOP)
            try:
                # More than the sockets between them buffer: what follows stays in the
                # primary's memory, where the kill loses it (a replica that lags this much
                # is what a failover can lose; a paused one alone still gets every byte the
                # kernel took before the kill).
                await asyncio.to_thread(_fill, sentinels.primary.port, 32)
                await socket.send(json.dumps(message))
                echo = await _next_frame(socket, lambda f: f.get("type") == "user_message")
                await asyncio.sleep(1.0)  # the gateway's WAIT runs out meanwhile
                sentinels.primary.kill()
            finally:
                os.kill(replica_pid, signal.SIGCONT)
            assert echo["client_id"] == message["id"]
            # The worker starts after the kill: nothing answered the turn on the old primary.
            async with null_worker(sentinels.url):
                frames = await _frames_until_final(socket, 60)
                frames += await _frames_for(socket, 1.0)
    errors = [f for f in frames if f.get("type") == "error"]
    assert errors == []
    assert [f["type"] for f in frames if f.get("type") == "final"] == ["final"]
    # Taken again on the promoted replica, the echo comes again under the seq the lost one
    # had; the pages drop an event whose seq they have seen.


def _fill(port: int, megabytes: int) -> None:
    with redis.Redis(host="127.0.0.1", port=port) as client:
        for index in range(megabytes):
            client.set(f"filler:{index}", b"x" * 2**20)


async def _next_frame(socket: ClientConnection, wanted: Any, limit_s: float = 10) -> Any:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), limit_s))
        if wanted(frame):
            return frame


async def _frames_until_final(socket: ClientConnection, limit_s: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit_s
    while not frames or frames[-1].get("type") != "final":
        left = deadline - time.monotonic()
        try:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), max(0.01, left))))
        except TimeoutError:
            pytest.fail(f"no reply came after the failover; frames: {frames}")
    return frames


async def _frames_for(socket: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while (left := deadline - time.monotonic()) > 0:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), left)))
    return frames
