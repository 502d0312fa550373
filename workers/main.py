"""The worker process: connects to Redis and SQL and serves until told to stop.

Consuming turns and running the agent loop on the diffusion engine arrive with the bus and
worker issue; today the worker checks its connections and waits for SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from assistant.config import Settings
from assistant.db.engine import check_connection, create_engine
from assistant.redis_conn import check_redis

log = structlog.get_logger(__name__)


async def run_worker(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await check_redis(settings.redis_url)
    engine = create_engine(settings.effective_database_url)
    try:
        await check_connection(engine)
        log.info("worker ready", redis=settings.redis_url)
        await stop.wait()
        log.info("worker stopping")
    finally:
        await engine.dispose()
