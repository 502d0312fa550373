"""``assistant serve`` brings the whole system up and takes all of it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.app.embedded_redis import free_port
from tests.foundation._processes import descendants, wait_all_dead, wait_http

pytestmark = pytest.mark.slow


@pytest.fixture
def running_system(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, set[int]]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assistant",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = json.loads(wait_http(f"http://127.0.0.1:{port}/readyz"))
        assert ready == {"ready": True, "redis": "ok", "database": "ok"}
        # Gateway, worker and redis-server.
        deadline = time.monotonic() + 10
        while len(children := descendants(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield process, port, children
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_interrupt_stops_everything(
    running_system: tuple[subprocess.Popen[bytes], int, set[int]],
) -> None:
    """Ctrl-C (SIGINT) exits 0 and leaves no gateway, worker or redis-server behind."""
    process, port, children = running_system
    assert len(children) >= 3
    assert wait_http(f"http://127.0.0.1:{port}/healthz") == b"ok\n"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert wait_all_dead(children) == set()


def test_killed_supervisor_leaves_no_orphans(
    running_system: tuple[subprocess.Popen[bytes], int, set[int]],
) -> None:
    """If serve itself is SIGKILLed, its children still end."""
    process, _port, children = running_system
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert wait_all_dead(children) == set()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _child(supervisor: int, marker: str) -> int:
    """The pid of the supervisor's child whose command line contains ``marker``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in descendants(supervisor):
            if marker in _cmdline(pid):
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no child process running {marker!r}")


def test_killed_children_are_started_again(
    running_system: tuple[subprocess.Popen[bytes], int, set[int]],
) -> None:
    """A SIGKILLed gateway and redis-server come back; the system is ready again."""
    process, port, _children = running_system
    for marker in ("assistant gateway", "redis-server"):
        victim = _child(process.pid, marker)
        os.kill(victim, signal.SIGKILL)
        assert wait_all_dead({victim}) == set()
        replacement = _child(process.pid, marker)
        assert replacement != victim
        ready = json.loads(wait_http(f"http://127.0.0.1:{port}/readyz"))
        assert ready["ready"] is True
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
