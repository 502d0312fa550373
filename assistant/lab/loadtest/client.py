"""``assistant loadtest``: simulated clients holding scripted conversations over real WebSockets.

Each client speaks protocol v1 (docs/protocol.md) like the widget does: ``hello``, a user
message, wait for its ``final`` (or an ``error`` about it), think, the next message. A socket
that drops (a gateway killed or restarted) is reopened with ``resume_from`` and the
unacknowledged message resent with the same client id, so the ledger can tell whether the
system kept its exactly-once promise through the fault. Loopback only, bounded in clients
and time: it is a test tool, not a way to flood someone else's server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from assistant.core.errors import UserError
from assistant.lab.loadtest.scenario import Ledger, Script, Step, Summary, summarise

log = structlog.get_logger(__name__)

MAX_CLIENTS = 2000
MAX_DURATION_S = 3600.0
RECONNECT_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise UserError(f"{url!r} is not a ws:// or wss:// URL")
    host = parts.hostname or ""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserError(f"the load generator only targets loopback addresses, not {host!r}")


@dataclass(frozen=True)
class LoadOptions:
    urls: tuple[str, ...]  # gateways, used round-robin by clients and on reconnect
    key: str
    think_s: float = 2.0  # pause after a reply before the next message
    turn_timeout_s: float = 60.0  # a turn with no final by then counts as hanging
    duration_s: float = 600.0  # hard stop for the whole run

    def __post_init__(self) -> None:
        if not self.urls:
            raise UserError("give at least one gateway URL")
        for url in self.urls:
            check_loopback(url)
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise UserError(f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds")


class SimulatedClient:
    """One conversation: its socket, its script and its ledger."""

    def __init__(self, index: int, script: Script, options: LoadOptions) -> None:
        self.index = index
        self.script = script
        self.options = options
        self.ledger = Ledger()
        self.conversation_id: str | None = None
        self.token: str | None = None
        self.last_seq = 0
        self._socket: ClientConnection | None = None
        self._url_index = index
        self._done: dict[str, asyncio.Event] = {}  # client message id -> final or error seen
        self._exercise = asyncio.Event()
        self._turn_client: dict[str, str] = {}
        self._retry_in: float | None = None  # the gateway asked to resend after this long

    async def run(self, deadline: float) -> None:
        try:
            for step in self.script.steps:
                if time.monotonic() >= deadline:
                    return
                await self._do(step, deadline)
        finally:
            if self._socket is not None:
                await self._socket.close()

    async def _do(self, step: Step, deadline: float) -> None:
        if step.next_exercise:
            self._exercise.clear()
            await self._send_reliably({"type": "next_exercise"}, self._exercise, deadline)
            return
        client_id = uuid.uuid4().hex[:16]
        frame: dict[str, Any] = {"type": "user_message", "id": client_id, "text": step.text}
        done = self._done[client_id] = asyncio.Event()
        self.ledger.sent(client_id, time.monotonic())
        turn_deadline = min(deadline, time.monotonic() + self.options.turn_timeout_s)
        await self._send_reliably(frame, done, turn_deadline)
        if done.is_set():
            await asyncio.sleep(max(0.0, min(self.options.think_s, deadline - time.monotonic())))

    async def _send_reliably(
        self, frame: dict[str, Any], done: asyncio.Event, deadline: float
    ) -> None:
        """Send ``frame`` and wait for ``done``; after a dropped socket, reconnect and resend."""
        while not done.is_set() and time.monotonic() < deadline:
            socket = await self._connected(deadline)
            if socket is None:
                return
            try:
                await socket.send(json.dumps(frame))
                await self._read_until(socket, done, deadline)
            except ConnectionClosed:
                self._socket = None  # resend: the client id makes it idempotent
            if self._retry_in is not None:
                await asyncio.sleep(min(self._retry_in, max(0.0, deadline - time.monotonic())))
                self._retry_in = None

    async def _read_until(
        self, socket: ClientConnection, done: asyncio.Event, deadline: float
    ) -> None:
        while not done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                raw = await asyncio.wait_for(socket.recv(), remaining)
            except TimeoutError:
                return
            self._receive(json.loads(raw))
            if self._retry_in is not None:
                return

    def _receive(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        seq = frame.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                # Resume overlap is the gateway's job to avoid; the ledger reports it.
                self.ledger.seqs.append(seq)
                return
            self.last_seq = seq
        self.ledger.record(frame, now)
        kind = frame.get("type")
        if kind == "user_message" and frame.get("turn_id"):
            self._turn_client[str(frame["turn_id"])] = str(frame.get("client_id", ""))
        elif kind == "final":
            client_id = self._turn_client.get(str(frame.get("turn_id", "")))
            if client_id in self._done:
                self._done[client_id].set()
        elif kind == "error":
            ref = frame.get("ref")
            code = frame.get("code")
            if isinstance(ref, str) and ref in self._done and code in ("busy", "rate_limited"):
                self._retry_in = float(frame.get("retry_after") or 1.0)
            elif isinstance(ref, str) and ref in self._done:
                self._done[ref].set()
            elif code == "turn_failed":
                for event in self._done.values():
                    event.set()
        elif kind == "exercise":
            self._exercise.set()

    async def _connected(self, deadline: float) -> ClientConnection | None:
        if self._socket is not None:
            return self._socket
        for attempt, delay in enumerate((0.0, *RECONNECT_DELAYS_S * 20)):
            if time.monotonic() + delay >= deadline:
                return None
            await asyncio.sleep(delay * (0.5 + random.random()))
            url = self.options.urls[(self._url_index + attempt) % len(self.options.urls)]
            try:
                self._socket = await self._hello(url)
                return self._socket
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.debug("reconnecting", client=self.index, url=url, error=str(exc))
        return None

    async def _hello(self, url: str) -> ClientConnection:
        socket = await connect(url, open_timeout=10, max_size=2**20)
        hello: dict[str, Any] = {
            "type": "hello",
            "v": 1,
            "key": self.options.key,
            "channel": "tutor" if self.script.kind == "tutoring" else "widget",
        }
        if self.conversation_id is not None:
            hello |= {
                "conversation_id": self.conversation_id,
                "conversation_token": self.token,
                "resume_from": self.last_seq,
            }
        ready = await say_hello(socket, hello)
        if ready.get("type") != "ready":
            await socket.close()
            raise UserError(f"the gateway refused the hello: {ready}")
        self.conversation_id = ready["conversation_id"]
        self.token = ready["conversation_token"]
        if self.last_seq == 0:
            self.last_seq = int(ready.get("last_seq", 0))
        return socket


async def run_load(scripts: Sequence[Script], options: LoadOptions) -> Summary:
    """Run every script as its own client at once; return the summary when all are done."""
    if not 0 < len(scripts) <= MAX_CLIENTS:
        raise UserError(f"--clients must be between 1 and {MAX_CLIENTS}")
    clients = [SimulatedClient(i, script, options) for i, script in enumerate(scripts)]
    started = time.monotonic()
    deadline = started + options.duration_s

    async def one(client: SimulatedClient) -> None:
        # Spread the first messages over the think time, as real visitors arrive.
        await asyncio.sleep(random.Random(client.index).random() * options.think_s)
        await client.run(deadline)

    await asyncio.gather(*(one(client) for client in clients))
    return summarise([client.ledger for client in clients], time.monotonic() - started)


async def say_hello(socket: ClientConnection, hello: dict[str, Any]) -> dict[str, Any]:
    """Send ``hello`` until it is not rate-limited; return the answer (``ready`` or error)."""
    while True:
        await socket.send(json.dumps(hello))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if answer.get("code") != "rate_limited":
            return answer
        # Many clients on one address: wait as told, as a polite client does.
        await asyncio.sleep(float(answer.get("retry_after", 1.0)))


async def hold_idle(urls: Sequence[str], key: str, count: int) -> list[ClientConnection]:
    """Open ``count`` authenticated connections that then say nothing (a capacity check)."""
    sockets: list[ClientConnection] = []
    hello = {"type": "hello", "v": 1, "key": key, "channel": "widget"}
    for index in range(count):
        socket = await connect(urls[index % len(urls)], open_timeout=10)
        ready = await say_hello(socket, hello)
        if ready.get("type") != "ready":
            await socket.close()
            raise UserError(f"idle connection {index} was refused: {ready}")
        sockets.append(socket)
    return sockets


def gateway_rss_bytes(ws_url: str) -> int | None:
    """The gateway's resident memory from its /metrics, or None if it does not say."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes"):
            return int(float(line.split()[-1]))
    return None


async def run_with_idle(
    scripts: Sequence[Script], options: LoadOptions, idle: int
) -> tuple[Summary, dict[str, int | None]]:
    """Hold ``idle`` silent connections while the scripts run; RSS of the first gateway.

    Returns the summary and the gateway's resident memory before anything connected, with
    the idle connections open, and after the load (while they are still open).
    """
    url = options.urls[0]
    memory: dict[str, int | None] = {"rss_start": await asyncio.to_thread(gateway_rss_bytes, url)}
    sockets = await hold_idle(options.urls[:1], options.key, idle) if idle else []
    try:
        memory["rss_idle"] = await asyncio.to_thread(gateway_rss_bytes, url)
        summary = await run_load(scripts, options) if scripts else summarise([], 0.0)
        memory["rss_after_load"] = await asyncio.to_thread(gateway_rss_bytes, url)
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    return summary, memory
