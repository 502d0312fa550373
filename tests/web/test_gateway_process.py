"""The real gateway process (``python -m assistant gateway``): SIGTERM, and /metrics memory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from assistant.app.embedded_redis import free_port
from assistant.core.config import Settings
from assistant.lab.loadtest.client import gateway_rss_bytes
from tests.foundation._processes import wait_http
from tests.web.conftest import Client, Tenant
from web.protocol import CloseCode


@pytest.fixture
def gateway_process(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A gateway process on a free port against the tests' Redis and SQL; killed if it hangs."""
    port = free_port()
    env = {
        **os.environ,
        **settings.to_env(),
        "ASSISTANT_PORT": str(port),
        "ASSISTANT_LOG_FORMAT": "json",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    with (tmp_path / "gateway.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "gateway"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # Liveness: /readyz also wants a worker, and these tests run the gateway alone.
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_sigterm_closes_sockets_with_1012_and_exits_0(
    gateway_process: tuple[int, subprocess.Popen[bytes]], tenant: Tenant, tmp_path: Path
) -> None:
    """SIGTERM: a connected widget's socket closes with 1012 and the process exits with 0."""
    port, process = gateway_process
    url = f"ws://127.0.0.1:{port}/ws"
    rss = await asyncio.to_thread(gateway_rss_bytes, url)  # what the load test reads
    assert rss is not None and rss > 0
    async with connect(url) as ws:
        c = Client(ws)
        assert (await c.hello(tenant.public_key, channel="widget"))["type"] == "ready"
        process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                await c.recv()
        assert ws.close_code == CloseCode.SERVICE_RESTART
    code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, (tmp_path / "gateway.log").read_text()[-2000:]
