"""``assistant serve`` brings the whole system up and takes all of it down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from assistant.app.embedded_redis import free_port
from tests.foundation._processes import descendants, wait_all_dead, wait_http
from tests.web.conftest import Client

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
        ready = json.loads(wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120))
        assert ready == {"ready": True, "redis": "ok", "database": "ok", "workers": "ok"}
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
        ready = json.loads(wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120))
        assert ready["ready"] is True
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0


def _first_ready(port: int, timeout: float = 180.0) -> dict[str, object]:
    """Poll /readyz until it first answers 200 (503 while no worker consumes); its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                body: dict[str, object] = json.loads(r.read())
                return body
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.loads(exc.read())["ready"] is False
        except OSError:
            pass  # the gateway is not listening yet
        time.sleep(0.05)
    raise AssertionError("/readyz never became ready")


async def _ask(port: int, public_key: str) -> dict[str, object]:
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        c = Client(ws)
        assert (await c.hello(public_key, channel="widget"))["type"] == "ready"
        await c.send(type="user_message", id="m-first", text="where is my order?")
        return await c.until(lambda f: f["type"] == "final")


def test_first_green_readyz_means_a_worker_consumes(tmp_path: Path) -> None:
    """At the first 200 from /readyz the worker has loaded its model and consumes turns, so a
    message sent right then is answered; serve printed its URLs only after that, too."""
    port = free_port()
    console = tmp_path / "serve.log"
    with console.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "assistant", "serve", "--port", str(port)),
                *("--data-dir", str(tmp_path), "--log-format", "json"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = _first_ready(port)
        assert ready == {"ready": True, "redis": "ok", "database": "ok", "workers": "ok"}
        # Logged by the worker once its consumer loop runs, i.e. after the model loaded.
        assert '"worker consuming"' in console.read_text()
        public_key = json.loads((tmp_path / "demo-keys.json").read_text())["public_key"]
        final = asyncio.run(_ask(port, str(public_key)))
        assert final["text"]
        # serve polls the workers' heartbeats before it prints the URLs: on a busy machine
        # the first reply can come back before that poll has run.
        deadline = time.monotonic() + 60
        while "The assistant is running" not in console.read_text():
            assert time.monotonic() < deadline, "serve never printed its URLs"
            time.sleep(0.1)
        text = console.read_text()
        waiting = text.index("Waiting for a worker to load the model")
        consuming = text.index('"worker consuming"')
        urls = text.index("The assistant is running")
        assert waiting < consuming < urls
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
