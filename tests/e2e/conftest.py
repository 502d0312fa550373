"""Browser tests: real ``assistant serve`` processes, the bundled model, Debian's chromium.

Playwright for Python drives ``/usr/bin/chromium`` through ``executable_path``; no Playwright
browser is ever downloaded. ``./run test`` installs the chromium package when it is missing;
without it (or without the ``playwright`` package) these tests skip and say why.
Screenshots go to ``$ASSISTANT_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assistant.app.embedded_redis import free_port
from tests.foundation._processes import run_cli, wait_http

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """Debian's chromium, or $ASSISTANT_CHROMIUM when set."""
    configured = os.environ.get("ASSISTANT_CHROMIUM")
    for candidate in (configured, *CHROMIUM_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    return found


def artifacts_dir() -> Path:
    """Where screenshots go: $ASSISTANT_TEST_ARTIFACTS, default test-artifacts/ in the repo."""
    path = Path(os.environ.get("ASSISTANT_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Server:
    """One running ``assistant serve``: its URL, data directory and demo keys."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    public_key: str
    operator_key: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.data_dir / "assistant.db"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.data_dir / "serve.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _demo_keys(data_dir: Path, timeout: float = 30.0) -> dict[str, Any]:
    path = data_dir / "demo-keys.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        if isinstance(data, dict) and data.get("public_key"):
            return data
        time.sleep(0.2)
    raise AssertionError(f"{path} with the demo keys did not appear")


def _operator_key(data_dir: Path, keys: dict[str, Any]) -> str:
    """The demo operator key, or one created with the CLI when the demo keys have none."""
    if keys.get("operator_key"):
        return str(keys["operator_key"])
    result = run_cli(
        "operators",
        "create",
        "northwind",
        "--name",
        "Test Operator",
        "--email",
        "operator@example.test",
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def serving(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Server]:
    """``assistant serve`` (gateway, worker, embedded Redis, SQLite), ``env`` added to its
    environment (for example another decoding mode), until the block ends."""
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = (data_dir / "serve.log").open("wb")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "ASSISTANT_LOG_FORMAT": "json", **env}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assistant",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
        except TimeoutError:
            text = (data_dir / "serve.log").read_text(errors="replace")[-4000:]
            pytest.fail(f"assistant serve did not become ready:\n{text}")
        keys = _demo_keys(data_dir)
        yield Server(
            process=process,
            port=port,
            data_dir=data_dir,
            public_key=str(keys["public_key"]),
            operator_key=_operator_key(data_dir, keys),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``assistant serve`` on its defaults, for one test module."""
    with serving(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium from the system package, one per test module.

    Module scope, not session: Playwright's sync API drives its own event loop, which must
    be gone before other modules' asyncio tests run in the same session.
    """
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is not installed (pip install -e '.[test]')",
    )
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "chromium is not installed: ./run test installs it with apt-get "
            "(apt-get install -y chromium), or set ASSISTANT_CHROMIUM"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    return artifacts_dir()
