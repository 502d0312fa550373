"""A primary, a replica and three sentinels from the same redis-server binary, for tests.

Each process gets a free loopback port and a directory of its own under the test's temp
dir, and dies with the test process. The sentinels watch the service ``SERVICE`` with a
quorum of 2, a primary counted down after ``DOWN_AFTER_MS`` without an answer, so a killed
primary is replaced within a few seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from assistant.app.embedded_redis import die_with_parent, find_redis_server, free_port

SERVICE = "mymaster"
HOST = "127.0.0.1"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class Server:
    role: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.directory / f"{self.role}.log"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass
class SentinelDeployment:
    root: Path
    binary: str = field(default_factory=find_redis_server)
    primary: Server | None = None
    replica: Server | None = None
    sentinels: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _spawn(self, role: str, args: list[str], port: int) -> Server:
        directory = self.root / role
        directory.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [self.binary, *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        server = Server(role, port, directory, process)
        _wait_ping(server)
        return server

    def _server_args(self, role: str, port: int) -> list[str]:
        directory = (self.root / role).resolve()
        return [
            "--bind", HOST, "--port", str(port), "--dir", str(directory),
            "--logfile", str(directory / f"{role}.log"),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self) -> None:
        port = free_port()
        self.primary = self._spawn("primary", self._server_args("primary", port), port)
        port = free_port()
        args = [*self._server_args("replica", port), "--replicaof", HOST, str(self.primary.port)]
        self.replica = self._spawn("replica", args, port)
        _wait_until(lambda: _info(self.replica, "master_link_status") == "up", "replica sync")
        for index in range(3):
            role = f"sentinel{index}"
            port = free_port()
            directory = self.root / role
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"  # sentinel rewrites it: a file of its own
            config.write_text(
                f"bind {HOST}\nport {port}\ndir {directory.resolve()}\n"
                f"logfile {(directory / f'{role}.log').resolve()}\n"
                f"sentinel monitor {SERVICE} {HOST} {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(self._spawn(role, [str(config.resolve()), "--sentinel"], port))
        # Every sentinel must know the replica and the other sentinels before a failover.
        _wait_until(self._sentinels_ready, "sentinels to see the replica and each other")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(host=HOST, port=sentinel.port, socket_timeout=1) as client:
                state = client.sentinel_master(SERVICE)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
        return True

    def primary_port(self) -> int:
        """The port the sentinels name as the primary now."""
        with redis.Redis(host=HOST, port=self.sentinels[0].port, socket_timeout=1) as client:
            _host, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server is not None:
                server.kill()


def _info(server: Server | None, name: str) -> str:
    assert server is not None
    with redis.Redis(host=HOST, port=server.port, socket_timeout=1) as client:
        return str(client.info("replication").get(name, ""))


def _wait_ping(server: Server, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.role} exited: see {server.log}")
        try:
            with redis.Redis(host=HOST, port=server.port, socket_timeout=0.5) as client:
                if client.ping():
                    return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.role} did not answer on port {server.port}")
        time.sleep(0.02)


def _wait_until(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
