"""Workers' Prometheus metrics, passed through Redis to whichever gateway serves /metrics.

A worker has no HTTP port of its own: every couple of seconds it ``publish``es its rendered
text under ``keys.metrics(name)`` with a TTL of a few intervals, and adds its name to
``keys.metrics_index``. ``collect`` reads every live worker's text and ``merge``s them into
one exposition: each sample gets a ``worker="<name>"`` label, so the same series of two
workers do not clash, and each metric family keeps a single HELP and TYPE. A worker that
stopped publishing (it died) disappears when its key expires; its name is then pruned from
the index by the next ``collect``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import redis.asyncio as aioredis
import structlog

from assistant.bus.keys import Keys

log = structlog.get_logger(__name__)

WORKER_LABEL = "worker"

# name, optional {labels}, the value and an optional timestamp. Label values may hold escaped
# quotes and braces, but the value never holds a brace: the greedy match ends at the last one.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?")
_META = re.compile(r"#\s+(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s+(.*))?")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelled(line: str, worker: str) -> str | None:
    """``line`` with the worker label added first, or None when it is not a sample."""
    match = _SAMPLE.fullmatch(line)
    if match is None:
        return None
    name, labels, value, timestamp = match.groups()
    try:
        float(value)  # also NaN, +Inf and -Inf, as Prometheus writes them
    except ValueError:
        return None
    label = f'{WORKER_LABEL}="{_escape(worker)}"'
    inner = labels[1:-1].strip().rstrip(",") if labels else ""
    return f"{name}{{{label}{',' + inner if inner else ''}}} {value}{timestamp or ''}"


def _members(family: str) -> tuple[str, ...]:
    """Sample names of a family: itself, and a histogram's or summary's series."""
    return (family, f"{family}_bucket", f"{family}_sum", f"{family}_count")


def merge(texts: Mapping[str, str]) -> str:
    """One exposition from several processes' texts (process name -> text). Pure.

    Families appear in the order first seen; a family's samples follow each other, all
    processes' together, under the HELP and TYPE of the first process that declared them.
    A sample before any HELP/TYPE forms a family of its own name. Unparsable lines are
    dropped, so one bad text cannot make the whole page unreadable to the scraper.
    """
    meta: dict[str, dict[str, str]] = {}  # family -> {"HELP": ..., "TYPE": ...}
    samples: dict[str, list[str]] = {}  # family -> lines, in order
    for worker, text in sorted(texts.items()):
        family: str | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                found = _META.fullmatch(line)
                if found is not None:
                    kind, family, rest = found.groups()
                    meta.setdefault(family, {}).setdefault(kind, rest or "")
                    samples.setdefault(family, [])
                continue  # other comments carry nothing a scraper needs
            labelled = _labelled(line, worker)
            if labelled is None:
                log.warning("unparsable metrics line dropped", worker=worker, line=line[:120])
                continue
            name = labelled.split("{", 1)[0]
            owner = family if family is not None and name in _members(family) else name
            samples.setdefault(owner, []).append(labelled)
    out: list[str] = []
    for family, lines in samples.items():
        info = meta.get(family, {})
        if "HELP" in info:
            out.append(f"# HELP {family} {info['HELP']}".rstrip())
        if "TYPE" in info:
            out.append(f"# TYPE {family} {info['TYPE']}")
        out.extend(lines)
    return "\n".join(out) + "\n" if out else ""


async def publish(
    redis: aioredis.Redis, keys: Keys, process_name: str, text: str, ttl_s: float
) -> None:
    """Store one process's metrics text for ``ttl_s`` seconds and list the process."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.metrics(process_name), text, px=int(ttl_s * 1000))
        pipe.sadd(keys.metrics_index, process_name)
        await pipe.execute()


async def withdraw(redis: aioredis.Redis, keys: Keys, process_name: str) -> None:
    """Remove a stopping process's metrics at once instead of waiting for the TTL."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.metrics(process_name))
        pipe.srem(keys.metrics_index, process_name)
        await pipe.execute()


async def collect(redis: aioredis.Redis, keys: Keys) -> str:
    """All live workers' metrics as one Prometheus text exposition ("" when none)."""
    names = sorted(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in await redis.smembers(keys.metrics_index)
    )
    if not names:
        return ""
    # GETs in a pipeline, not MGET: on a cluster the keys live in different slots.
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(keys.metrics(name))
        values = await pipe.execute()
    texts: dict[str, str] = {}
    gone: list[str] = []
    for name, value in zip(names, values, strict=True):
        if value is None:
            gone.append(name)
        else:
            texts[name] = value.decode() if isinstance(value, bytes) else str(value)
    if gone:
        # A worker that publishes again right after this re-adds itself on its next publish.
        await redis.srem(keys.metrics_index, *gone)
    return merge(texts)
