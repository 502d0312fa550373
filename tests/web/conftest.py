"""Gateways in-process on free ports, against the session's Redis and a migrated SQLite file.

``Client`` is a thin test client over a real WebSocket: send a frame as keyword arguments,
receive frames as dicts, wait for a frame that matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.bus.ratelimit import Bucket
from assistant.core.config import Settings
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import KeyKind
from tests.conftest import _postgres_database
from web.gateway import Gateway
from web.service import GatewayOptions

# Short waits and roomy rate limits, so tests are fast and only the rate-limit test limits.
TEST_OPTIONS = GatewayOptions(
    hello_timeout_s=10.0,
    ip_bucket=Bucket(rate=1000, burst=1000),
    key_bucket=Bucket(rate=1000, burst=1000),
    cancel_wait_s=10.0,
    follow_block_ms=500,
)
RECV_TIMEOUT_S = 30.0


@pytest.fixture
def db_file_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite file; PostgreSQL where a test parametrizes it (indirect)."""
    if getattr(request, "param", "sqlite") == "postgres":
        for url in _postgres_database():
            migrate.upgrade(url)
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    migrate.upgrade(url)
    yield url


# Gateway tests that also run on PostgreSQL: @BOTH_DATABASES on the test.
BOTH_DATABASES = pytest.mark.parametrize(
    "db_file_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def store(db_file_url: str) -> AsyncIterator[Repository]:
    store = Repository(create_engine(db_file_url))
    yield store
    await store.close()


@pytest.fixture
def settings(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, db_file_url: str, tmp_path: Path
) -> Settings:
    """Settings of the gateways under test; redis_client flushes Redis first."""
    return Settings(
        redis_url=redis_server.url,
        database_url=db_file_url,
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=0,
        secret="test-secret",
    )


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def start_gateway(settings: Settings) -> AsyncIterator[GatewayFactory]:
    """Start gateways (keyword overrides of TEST_OPTIONS); all are closed at the end."""
    started: list[Gateway] = []

    async def start(**options: Any) -> Gateway:
        fields = {**TEST_OPTIONS.__dict__, **options}
        gateway = Gateway(settings, GatewayOptions(**fields))
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.server is not None:
            await gateway.close()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway()
    return gw


@dataclass
class Tenant:
    id: str
    public_key: str
    operator_key: str
    operator_id: int


async def make_tenant(store: Repository, name: str, origins: tuple[str, ...] = ()) -> Tenant:
    tenant = await store.create_tenant(name, origins)
    _row, public = await store.create_key(tenant.id, KeyKind.PUBLIC)
    operator, operator_key = await store.create_operator(tenant.id, f"Op {name}", f"op@{name}")
    return Tenant(tenant.id, public, operator_key, operator.id)


@pytest.fixture
async def tenant(store: Repository) -> Tenant:
    return await make_tenant(store, "shop")


class Client:
    """A WebSocket client speaking protocol v1 in tests."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT_S)
        frame: dict[str, Any] = json.loads(raw)
        self.seen.append(frame)
        return frame

    async def until(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Receive until a frame passes ``check``; return it (frames before stay in seen)."""
        async with asyncio.timeout(RECV_TIMEOUT_S):
            while True:
                frame = await self.recv()
                if check(frame):
                    return frame

    async def hello(self, key: str, **fields: Any) -> dict[str, Any]:
        await self.send(type="hello", key=key, **fields)
        return await self.recv()

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def client(
    gateway: Gateway,
    origin: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[Client]:
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    sent = {**({"Origin": origin} if origin else {}), **(headers or {})}
    async with connect(url, additional_headers=sent or None, max_size=None, **kwargs) as ws:
        yield Client(ws)


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


async def wait_until(check: Callable[[], Awaitable[bool]], limit_s: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after ``limit_s`` (a hang guard, not a threshold)."""
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
