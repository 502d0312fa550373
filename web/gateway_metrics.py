"""The gateway's own metrics on ``prometheus_client``, and /metrics: them, the process's
memory and file descriptors, and the workers' metrics relayed through Redis.

Each gateway is one process with its own port and its own ``CollectorRegistry`` (one per
``GatewayMetrics``), so prometheus_client's multi-process mode, for processes that share
one port, is not needed. The counters stay plain fields (the session bumps them on its
event loop) and are read by a collector of the registry at scrape time.
"""

from __future__ import annotations

import importlib
import inspect
import os
import resource
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from assistant.bus.keys import Keys

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Figures(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield CounterMetricFamily(
            "gateway_connections", "WebSocket connections accepted.", m.connections_total
        )
        yield GaugeMetricFamily(
            "gateway_connections_open", "WebSocket connections open now.", m.connections_open
        )
        yield CounterMetricFamily("gateway_frames_in", "Frames received from clients.", m.frames_in)
        yield CounterMetricFamily("gateway_frames_out", "Frames sent to clients.", m.frames_out)
        yield CounterMetricFamily(
            "gateway_drafts_coalesced",
            "Drafts replaced by a newer one before sending.",
            m.drafts_coalesced,
        )
        errors = CounterMetricFamily(
            "gateway_errors", "Error frames sent, by code.", labels=["code"]
        )
        for code, n in sorted(m.errors.items()):
            errors.add_metric([code], n)
        yield errors
        limited = CounterMetricFamily(
            "gateway_rate_limited_frames",
            "Frames (and /v1/ API requests) refused by a rate limit, by scope: ip (the "
            "client's address) or key (the API key's).",
            labels=["scope"],
        )
        for scope in ("ip", "key"):
            limited.add_metric([scope], m.rate_limited.get(scope, 0))
        yield limited


class _Process(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from process_stats().families()


@dataclass
class GatewayMetrics:
    connections_total: int = 0
    connections_open: int = 0
    frames_in: int = 0
    frames_out: int = 0
    drafts_coalesced: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)  # by scope
    registry: CollectorRegistry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Figures(self))
        self.registry.register(_Process())

    def coalesced(self, count: int) -> None:
        self.drafts_coalesced += count

    def render(self) -> str:
        """Prometheus text exposition of this gateway's registry."""
        return generate_latest(self.registry).decode()


class Limiter(Protocol):
    async def take(self, scope: str, ident: str, bucket: object, cost: float = 1) -> float: ...


class CountingLimiter:
    """A rate limiter that counts what it refuses (a wait over 0) in ``rate_limited``.

    Wraps the bus's limiter, so WebSocket frames and API requests are both counted.
    """

    def __init__(self, inner: Limiter, metrics: GatewayMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def take(self, scope: str, ident: str, bucket: object, cost: float = 1) -> float:
        wait = await self.inner.take(scope, ident, bucket, cost)
        if wait:
            self.metrics.rate_limited[scope] += 1
        return wait


@dataclass(frozen=True)
class ProcessStats:
    """This process's resources; None where the platform does not tell."""

    resident_bytes: int | None
    open_fds: int | None

    def families(self) -> list[Metric]:
        """Gauges in the names of the official client's process collector (pure)."""
        found: list[Metric] = []
        if self.resident_bytes is not None:
            found.append(
                GaugeMetricFamily(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    self.resident_bytes,
                )
            )
        if self.open_fds is not None:
            found.append(
                GaugeMetricFamily(
                    "process_open_fds", "Number of open file descriptors.", self.open_fds
                )
            )
        return found


def parse_vm_rss(status: str) -> int | None:
    """Bytes of the ``VmRSS:`` line of a /proc/<pid>/status text (pure)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


def resident_bytes(proc: Path = Path("/proc/self")) -> int | None:
    """Current resident memory from /proc; elsewhere the peak from getrusage (the best there is)."""
    try:
        found = parse_vm_rss((proc / "status").read_text())
    except OSError:
        found = None
    if found is not None:
        return found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def open_fds(proc: Path = Path("/proc/self")) -> int | None:
    try:
        return len(os.listdir(proc / "fd"))
    except OSError:
        return None


def process_stats() -> ProcessStats:
    return ProcessStats(resident_bytes(), open_fds())


async def workers_text(redis: aioredis.Redis, keys: Keys) -> str:
    """The workers' metrics published in Redis, or "" where this build cannot collect them."""
    try:
        module = importlib.import_module("assistant.bus.metrics_relay")
    except ImportError:
        return ""
    collect = getattr(module, "collect", None)
    if collect is None:
        return ""
    try:
        text = collect(redis, keys)
        if inspect.isawaitable(text):
            text = await text
    except Exception as exc:  # /metrics must answer even when Redis does not
        log.warning("cannot collect the workers' metrics", error=str(exc))
        return ""
    return str(text)


METRICS_PATHS = {"/metrics": "all", "/metrics/gateway": "gateway", "/metrics/workers": "workers"}


async def exposition(
    metrics: GatewayMetrics, redis: aioredis.Redis, keys: Keys, part: str = "all"
) -> str:
    """``all``: the gateway's own metrics and the workers'; ``gateway`` or ``workers``: one
    of them (Prometheus scrapes every gateway for its own, one of them for the workers')."""
    if part == "gateway":
        return metrics.render()
    workers = await workers_text(redis, keys)
    if part == "workers":
        return workers
    text = metrics.render()
    if workers:
        text += workers if workers.endswith("\n") else workers + "\n"
    return text
