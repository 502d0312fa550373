"""The gateway's own Prometheus counters, and /metrics: them, the process's memory and file
descriptors, and the workers' metrics."""

from __future__ import annotations

import importlib
import inspect
import os
import resource
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
import structlog

from assistant.bus.keys import Keys

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class GatewayMetrics:
    connections_total: int = 0
    connections_open: int = 0
    frames_in: int = 0
    frames_out: int = 0
    drafts_coalesced: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def coalesced(self, count: int) -> None:
        self.drafts_coalesced += count

    def render(self) -> str:
        """Prometheus text exposition (pure)."""
        lines = [
            "# HELP gateway_connections_total WebSocket connections accepted.",
            "# TYPE gateway_connections_total counter",
            f"gateway_connections_total {self.connections_total}",
            "# HELP gateway_connections_open WebSocket connections open now.",
            "# TYPE gateway_connections_open gauge",
            f"gateway_connections_open {self.connections_open}",
            "# HELP gateway_frames_in_total Frames received from clients.",
            "# TYPE gateway_frames_in_total counter",
            f"gateway_frames_in_total {self.frames_in}",
            "# HELP gateway_frames_out_total Frames sent to clients.",
            "# TYPE gateway_frames_out_total counter",
            f"gateway_frames_out_total {self.frames_out}",
            "# HELP gateway_drafts_coalesced_total Drafts replaced by a newer one before sending.",
            "# TYPE gateway_drafts_coalesced_total counter",
            f"gateway_drafts_coalesced_total {self.drafts_coalesced}",
            "# HELP gateway_errors_total Error frames sent, by code.",
            "# TYPE gateway_errors_total counter",
        ]
        lines += [f'gateway_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ProcessStats:
    """This process's resources; None where the platform does not tell."""

    resident_bytes: int | None
    open_fds: int | None

    def render(self) -> str:
        """Prometheus text in the names of the official client's process collector (pure)."""
        lines: list[str] = []
        if self.resident_bytes is not None:
            lines += [
                "# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {self.resident_bytes}",
            ]
        if self.open_fds is not None:
            lines += [
                "# HELP process_open_fds Number of open file descriptors.",
                "# TYPE process_open_fds gauge",
                f"process_open_fds {self.open_fds}",
            ]
        return "".join(line + "\n" for line in lines)


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


async def exposition(metrics: GatewayMetrics, redis: aioredis.Redis, keys: Keys) -> str:
    workers = await workers_text(redis, keys)
    text = metrics.render() + process_stats().render()
    if workers:
        text += workers if workers.endswith("\n") else workers + "\n"
    return text
