"""The embedded redis-server: start, persistence across restarts, clean stop, no orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from assistant.app.embedded_redis import EmbeddedRedis
from assistant.core.errors import UserError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_restart_keeps_port_and_data(private_redis: EmbeddedRedis) -> None:
    """Data written before a restart is there after it, at the same URL."""
    url = private_redis.url
    redis.Redis.from_url(url).set("k", "v")
    private_redis.restart()
    assert private_redis.url == url
    assert redis.Redis.from_url(url).get("k") == b"v"


def test_append_only_survives_a_crash(private_redis: EmbeddedRedis) -> None:
    """With append-only on, a write survives SIGKILL of the server."""
    client = redis.Redis.from_url(private_redis.url)
    client.set("k", "v")
    client.execute_command("BGREWRITEAOF")
    time.sleep(1.2)  # appendfsync everysec
    private_redis.kill()
    private_redis.start()
    assert redis.Redis.from_url(private_redis.url).get("k") == b"v"


def test_stop_ends_the_process(tmp_path: Path) -> None:
    """stop() leaves no redis-server behind."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    server.stop()
    assert _wait_dead(pid)


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    """A SIGKILLed parent takes its redis-server with it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from assistant.app.embedded_redis import EmbeddedRedis\n"
        "from assistant.core.log import configure_logging\n"
        "configure_logging('json', 'warning')\n"
        f"server = EmbeddedRedis(Path({str(tmp_path)!r}))\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())
    assert _alive(redis_pid)
    parent.kill()
    parent.wait()
    assert _wait_dead(redis_pid)


def test_binary_that_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    """A broken binary gives a UserError, not a hang."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'bad binary' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(UserError, match="bad binary"):
        EmbeddedRedis(tmp_path / "data", binary=str(fake)).start(timeout=3)
    with pytest.raises(UserError, match="cannot run"):
        EmbeddedRedis(tmp_path / "data", binary=str(tmp_path / "missing")).start(timeout=3)
