"""Clients made from a ``redis+sentinel://`` URL find the promoted replica after a failover.

A primary, a replica and three sentinels run from the bundled redis-server. Both kinds of
client the processes hold must reach the new primary on their own: the pooled client (every
command) and the one-connection client of ``Redis.client()``, which the gateways' event
reader uses and which redis-py's own sentinel connection left dialling the dead primary.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from assistant.bus.connection import check_redis, connect
from tests.system._sentinel import SentinelDeployment

pytestmark = pytest.mark.slow


async def test_pooled_and_one_connection_clients_reach_the_promoted_replica(
    sentinels: SentinelDeployment,
) -> None:
    await check_redis(sentinels.url)
    client = connect(sentinels.url)
    reader = client.client()
    try:
        await client.xadd("s", {"n": "1"})
        assert await client.execute_command("WAIT", 1, 2000) == 1  # the replica has it
        assert len((await reader.xread({"s": "0"}))[0][1]) == 1
        old = sentinels.primary_port()
        sentinels.primary.kill()  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while True:  # the callers' loops: fail, wait, try again
            try:
                found = await reader.xread({"s": "0"}, block=500)
                await client.xadd("s", {"n": "2"})
                break
            except Exception:
                assert time.monotonic() < deadline, "no client reached a new primary"
                await asyncio.sleep(0.2)
        assert sentinels.primary_port() != old
        assert len(found[0][1]) == 1  # the write acknowledged before the kill survived
        assert await reader.xlen("s") == await client.xlen("s") == 2
    finally:
        await reader.aclose()
        await client.aclose()
