"""The worker process: connect to Redis and SQL, load the model once, run turns until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes, for_model
from assistant.bus.connection import check_redis, connect
from assistant.bus.keys import Keys
from assistant.checkpoints import model_dir, uses_entity_slots
from assistant.core.config import Settings
from assistant.store.database import check_connection, create_engine
from assistant.store.repository import Repository
from workers.generator import load_generator
from workers.worker import Worker, WorkerOptions

log = structlog.get_logger(__name__)

TURNS_PER_ENGINE_ROW = 2


async def run_worker(settings: Settings, *, max_batch: int | None = None) -> None:
    """Serve turns until SIGINT/SIGTERM; turns in flight get a bounded time to finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await check_redis(settings.redis_url)
    engine = create_engine(settings.effective_database_url)
    redis = connect(settings.redis_url)
    generator = None
    try:
        await check_connection(engine)
        # A future Settings field may carry it; until then the argument or the default.
        batch = max_batch or settings.max_batch
        # In a thread: a model load takes seconds, and SIGTERM must still be heard meanwhile.
        generator, tokenizer = await asyncio.to_thread(load_generator, settings, batch)
        # The model's objects live for the whole process: freezing them keeps full GC passes
        # (measured ~0.17 s inside engine steps) from walking them again and again.
        gc.collect()
        gc.freeze()
        if stop.is_set():
            return
        worker = Worker(
            redis,
            Repository(engine),
            generator,
            tokenizer,
            options=WorkerOptions(
                # A turn also runs tools, reads history and writes its reply, and holds no
                # engine row meanwhile: holding twice as many turns as rows keeps the rows
                # busy (the engine queues the rest). Measured under 50 clients: with as
                # many turns as rows the engine thread idled 30% of the time while turns
                # waited in Redis.
                max_batch=batch * TURNS_PER_ENGINE_ROW,
                # Keep-alives must come well within the idle time, or live turns get stolen.
                min_idle_ms=settings.claim_idle_s * 1000,
                keep_alive_every_s=min(5.0, settings.claim_idle_s / 3),
                reclaim_every_s=min(5.0, settings.claim_idle_s / 2),
                entity_slots=uses_entity_slots(
                    model_dir(settings.model_path), settings.entity_slots
                ),
            ),
            keys=Keys(settings.key_prefix),
            # The name was checked when the command started (check_decoding_mode); a foreign
            # checkpoint runs it in its own attention pattern (assistant.agent.decoding).
            mode=for_model(
                decoding_modes()[settings.decoding_mode or DEFAULT_MODE],
                generator.engine.info.default_pattern,
            ),
        )
        log.info("worker ready", consumer=worker.name, redis=settings.redis_url)
        task = asyncio.create_task(worker.run())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        log.info("worker stopping")
        worker.stop()
        stopped.cancel()
        await task
    finally:
        if generator is not None:
            await generator.close()
        await redis.aclose()
        await engine.dispose()
