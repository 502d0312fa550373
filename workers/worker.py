"""The worker: takes turns from the consumer group, runs them on one engine, publishes events.

Shape of a worker process (one per accelerator):

- ``Worker.run`` claims up to (free batch slots) turns at a time, first its own pending ones,
  and every few seconds takes over turns idle for ``min_idle_ms`` whose delivery is over:
  their worker died (no heartbeat), or it is this worker and the turn's task failed; a slow
  worker with a live heartbeat keeps its turns. A dead-lettered turn's reply is stored as
  failed first (``_dead_lettered``). Each turn runs as its own asyncio task, so all of
  them share the engine's continuous batch.
- Two background tasks: ``keep_alive`` for the turns held (so nobody takes them over, and a
  turn another worker took over is dropped here), and a cancellation poller (~100 ms) that
  stops the engine request of a cancelled turn. Redis latency never sits in the engine loop.
- ``TurnHandler`` (``workers.turns``) handles one delivery, from claim to ack.
- ``stop()`` (SIGTERM): stop claiming, let turns in flight finish for ``grace_s``, then cancel
  the rest without acking them, so another worker (or this one restarted) takes them over.
- ``render_metrics()``: Prometheus text of this process's counters, gauges and histograms.
  A third background task publishes it to Redis every ``metrics_every_s`` (with a TTL of three
  intervals) for the gateways' /metrics, which merge all workers' texts
  (``assistant.bus.metrics_relay.collect``).
- A heartbeat (``assistant.bus.heartbeat``), renewed every ``heartbeat_every_s`` with a TTL of
  three intervals, says that this worker consumes turns: it is first written when ``run``
  starts (the model is loaded by then) and withdrawn as soon as the worker stops claiming.
  The gateways' /readyz is ready only while at least one worker's heartbeat lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from assistant.agent.decoding import DEFAULT_MODE, DecodingMode, decoding_modes
from assistant.bus import heartbeat
from assistant.bus import metrics_relay as bus_metrics
from assistant.bus.activity import ActivityLog
from assistant.bus.keys import DEFAULT_KEYS, Keys
from assistant.bus.schema import TurnRequest
from assistant.bus.streams import (
    TURN_FAILED_MESSAGE,
    Cancellation,
    Delivery,
    EventLog,
    TurnConsumer,
)
from assistant.core.log import bind_turn
from assistant.store.repository import Repository
from assistant.store.shop import SqlShop
from assistant.store.tables import MessageStatus
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import Shop
from workers.generator import DEFAULT_MAX_BATCH, Generator
from workers.turns import TurnHandler, TurnResult, TurnState
from workers.worker_metrics import METRICS, Metrics

log = structlog.get_logger(__name__)

__all__ = ["Handles", "Worker", "WorkerOptions", "default_consumer_name"]


@dataclass(frozen=True)
class WorkerOptions:
    max_batch: int = DEFAULT_MAX_BATCH
    consumer_name: str | None = None  # default: "<hostname>-<pid>"
    max_deliveries: int = 3
    min_idle_ms: int = 30_000  # a turn idle this long belongs to a dead worker
    reclaim_every_s: float = 5.0
    keep_alive_every_s: float = 5.0  # well within min_idle_ms
    cancel_poll_s: float = 0.1
    metrics_every_s: float = 2.0  # how often the metrics text is published to Redis
    heartbeat_every_s: float = heartbeat.HEARTBEAT_EVERY_S  # the heartbeat lives 3 of these
    withdraw_timeout_s: float = 1.0  # a stopping worker's removal of its keys (they expire)
    grace_s: float = 20.0  # how long a stopping worker lets its turns finish
    claim_block_ms: int = 500
    draft_interval_s: float = 0.05
    tool_timeout_s: float | None = None  # None: each tool's own timeout
    max_rounds: int = 3
    # Whether the model reads entities as placeholders (assistant.checkpoints.uses_entity_slots).
    entity_slots: bool = True


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation of this task that a Redis call swallowed.

    A cancel that lands in redis-py while it reconnects (after a Redis restart) can be
    lost: turned into a ``TimeoutError`` (an ``OSError`` on Python 3.11, which the loops
    log and retry) or absorbed outright. The task's pending cancel count still says so; a
    background loop that ran on would keep ``run`` waiting for it forever on a stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Handles(Protocol):
    """What the worker needs of a turn handler (``TurnHandler``; a benchmark's null one)."""

    async def handle(self, state: TurnState) -> TurnResult: ...


class Worker:
    """Claims turns up to the batch size and runs each as a task; see the module docstring."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: Repository | None,
        generator: Generator,
        tokenizer: Any,
        *,
        options: WorkerOptions | None = None,
        keys: Keys = DEFAULT_KEYS,
        shop: Shop | None = None,
        mode: DecodingMode | None = None,
        metrics: Metrics | None = None,
        handler: Callable[[Worker], Handles] | None = None,
    ) -> None:
        """``mode`` decodes every turn of this worker (default: ``DEFAULT_MODE``).

        ``handler`` builds another turn handler from the worker (its events, consumer and
        metrics) instead of the agent loop's ``TurnHandler``; ``store`` may then be None."""
        self.options = opts = options or WorkerOptions()
        if opts.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.redis = redis
        self.keys = keys
        self.generator = generator
        self.metrics = metrics or METRICS
        self.events = EventLog(redis, keys=keys)
        self.activity = ActivityLog(redis, keys=keys)
        self.store = store
        self.consumer = TurnConsumer(
            redis,
            opts.consumer_name or default_consumer_name(),
            keys=keys,
            max_deliveries=opts.max_deliveries,
            events=self.events,
            activity=self.activity,
            on_dead_letter=self._dead_lettered,
        )
        self.cancellation = Cancellation(redis, keys=keys)
        self.handler: Handles
        if handler is not None:
            self.handler = handler(self)
        elif store is None:
            raise ValueError("a worker needs a store unless it is given another handler")
        else:
            self.handler = self._turn_handler(store, tokenizer, shop, mode)
        handler_mode = getattr(self.handler, "mode", None)
        if isinstance(handler_mode, DecodingMode):  # labels the per-turn histograms
            self.metrics.mode = handler_mode.name
        self.turns: dict[str, TurnState] = {}  # by stream id
        self._turn_locks: dict[str, asyncio.Lock] = {}  # by turn id: one delivery at a time
        self._stopping = asyncio.Event()

    def _turn_handler(
        self,
        store: Repository,
        tokenizer: Any,
        shop: Shop | None,
        mode: DecodingMode | None,
    ) -> TurnHandler:
        opts = self.options
        return TurnHandler(
            store=store,
            events=self.events,
            consumer=self.consumer,
            generator=self.generator,
            tokenizer=tokenizer,
            runner=ToolRunner(shop or SqlShop(store.engine, store), opts.tool_timeout_s),
            mode=mode or decoding_modes()[DEFAULT_MODE],
            metrics=self.metrics,
            activity=self.activity,
            draft_interval_s=opts.draft_interval_s,
            max_rounds=opts.max_rounds,
            entity_slots=opts.entity_slots,
        )

    @property
    def name(self) -> str:
        return self.consumer.consumer

    def stop(self) -> None:
        """Stop claiming; ``run`` returns once the turns in flight are done (or the grace ends)."""
        self._stopping.set()

    async def run(self) -> None:
        await self.consumer.ensure_group()
        log.info("worker consuming", consumer=self.name, max_batch=self.options.max_batch)
        background = [
            asyncio.create_task(self._keep_alive_loop(), name="keep-alive"),
            asyncio.create_task(self._cancel_loop(), name="cancel-poller"),
            asyncio.create_task(self._metrics_loop(), name="metrics"),
        ]
        beat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        try:
            await self._claim_loop()
            await self._stop_heartbeat(beat)
            await self._drain()
            await self._leave_group()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._stop_heartbeat(beat)
            await self._withdraw_metrics()
            log.info("worker stopped", consumer=self.name)

    # claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        opts = self.options
        next_reclaim = 0.0
        while not self._stopping.is_set():
            free = opts.max_batch - len(self.turns)
            if free <= 0:
                tasks = [s.task for s in self.turns.values() if s.task is not None]
                await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                deliveries: list[Delivery] = []
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + opts.reclaim_every_s
                    # Its own turns in flight are slow, not failed: never taken over here.
                    deliveries = await self.consumer.reclaim_idle(
                        opts.min_idle_ms, count=free, running=set(self.turns)
                    )
                    self.metrics.queue_depth = int(await self.redis.xlen(self.keys.turns))
                if not deliveries:
                    deliveries = await self.consumer.claim(free, block_ms=opts.claim_block_ms)
            except (RedisError, OSError) as exc:
                log.warning("cannot claim turns; retrying", error=str(exc))
                await self._sleep_unless_stopping(1.0)
                continue
            for delivery in deliveries:
                self._start(delivery)

    async def _dead_lettered(self, turn: TurnRequest) -> None:
        """A dead-lettered turn is counted, and its reply stored as failed before its client
        is told, so a copy still running (its holder looked dead) finds a reply stored and
        stores no answer after the error; the event log refuses that copy's final as well."""
        self.metrics.dead_lettered()
        if self.store is None:
            return
        try:
            await self.store.store_reply(
                turn.conversation_id,
                turn.turn_id,
                TURN_FAILED_MESSAGE,
                MessageStatus.FAILED,
                {"problem": "dead_letter"},
            )
        except Exception as exc:  # no such conversation, SQL unreachable: the client is told
            with bind_turn(turn.conversation_id, turn.turn_id):
                log.warning("cannot store the failed reply of a dead letter", error=str(exc))

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _start(self, delivery: Delivery) -> None:
        if delivery.stream_id in self.turns:
            return  # already being worked on here
        state = TurnState(delivery)
        self.turns[delivery.stream_id] = state
        self.metrics.active_turns = len(self.turns)
        self.metrics.claimed(delivery.attempt, delivery.turn.created_at)
        state.task = asyncio.create_task(
            self._run_turn(state), name=f"turn-{delivery.turn.turn_id}"
        )

    async def _run_turn(self, state: TurnState) -> None:
        turn = state.turn
        lock = self._turn_locks.setdefault(turn.turn_id, asyncio.Lock())
        try:
            # The same turn queued twice waits for the first delivery, then finds it done.
            async with lock:
                await self._handle(state)
        except asyncio.CancelledError:
            with bind_turn(turn.conversation_id, turn.turn_id):
                log.info("turn left unfinished; it stays pending for another delivery")
            raise
        except Exception:
            self.metrics.turn_errors += 1
            with bind_turn(turn.conversation_id, turn.turn_id):
                log.exception("turn failed; it will be redelivered", attempt=state.delivery.attempt)
        finally:
            self.turns.pop(state.delivery.stream_id, None)
            self.metrics.active_turns = len(self.turns)
            if not lock.locked() and not any(
                s.turn.turn_id == turn.turn_id for s in self.turns.values()
            ):
                self._turn_locks.pop(turn.turn_id, None)

    async def _handle(self, state: TurnState) -> None:
        """Handle the turn; when Redis became unreachable meanwhile, wait and run it again.

        An outage longer than the client's retries is no fault of the turn: rather than leave
        it to be taken over ``min_idle_ms`` later as another delivery (one more towards the
        dead letter), the worker that still holds it runs it again once Redis answers. Stored
        rows are keyed by turn id and a stored reply is only republished, so nothing doubles.
        """
        while True:
            try:
                await self.handler.handle(state)
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if self._stopping.is_set():
                    raise
                self.metrics.turn_errors += 1
                with bind_turn(state.turn.conversation_id, state.turn.turn_id):
                    log.warning("Redis unreachable mid-turn; running it again", error=str(exc))
                await self._wait_for_redis()

    async def _wait_for_redis(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self.redis.ping()
                return
            except (RedisError, OSError):
                await self._sleep_unless_stopping(delay)
                delay = min(2.0, delay * 2)

    async def _drain(self) -> None:
        tasks = [s.task for s in self.turns.values() if s.task is not None]
        if not tasks:
            return
        log.info("waiting for turns in flight", count=len(tasks), grace_s=self.options.grace_s)
        _done, pending = await asyncio.wait(tasks, timeout=self.options.grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("turns left pending for another worker", count=len(pending))

    async def _leave_group(self) -> None:
        """Remove this consumer from the group if it holds nothing (names are per process).

        With turns still pending it stays: deleting it would drop them from the group.
        """
        try:
            rows = await self.redis.xpending_range(
                self.keys.turns, self.keys.group, "-", "+", 1, consumername=self.name
            )
            if not rows:
                await self.redis.xgroup_delconsumer(self.keys.turns, self.keys.group, self.name)
        except (RedisError, OSError) as exc:
            log.warning("could not leave the consumer group", error=str(exc))

    # background ----------------------------------------------------------------------------

    async def _keep_alive_loop(self) -> None:
        while True:
            _raise_if_cancelled()
            await asyncio.sleep(self.options.keep_alive_every_s)
            states = list(self.turns.values())
            if not states:
                continue
            try:
                lost = await self.consumer.keep_alive([s.delivery for s in states])
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()
                log.warning("keep-alive failed", error=str(exc))
                continue
            for delivery in lost:  # another worker has it now: stop, never ack it here
                state = self.turns.get(delivery.stream_id)
                if state is not None and state.task is not None:
                    state.task.cancel()

    async def _metrics_loop(self) -> None:
        """Publish the metrics text for the gateways' /metrics; it lives 3 intervals."""
        every = self.options.metrics_every_s
        while True:
            try:
                self.metrics.queue_depth = int(await self.redis.xlen(self.keys.turns))
                self.metrics.dead_letter_stream_length = int(await self.redis.xlen(self.keys.dead))
                await bus_metrics.publish(
                    self.redis, self.keys, self.name, self.metrics.render(), ttl_s=3 * every
                )
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()
                log.warning("metrics publish failed", error=str(exc))
            _raise_if_cancelled()
            await asyncio.sleep(every)

    async def _heartbeat_loop(self) -> None:
        """Say that this worker consumes turns; the key lives 3 intervals unless renewed."""
        every = self.options.heartbeat_every_s
        while True:
            try:
                await heartbeat.announce(self.redis, self.keys, self.name, ttl_s=3 * every)
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()
                log.warning("heartbeat failed", error=str(exc))
            _raise_if_cancelled()
            await asyncio.sleep(every)

    async def _stop_heartbeat(self, beat: asyncio.Task[None]) -> None:
        """Stop announcing and remove the heartbeat: a stopping worker takes no new turns."""
        if beat.done():
            return
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        try:
            # Bounded: with Redis gone the client's retries would hold up the stop, and the
            # key expires by itself within its TTL anyway.
            async with asyncio.timeout(self.options.withdraw_timeout_s):
                await heartbeat.withdraw(self.redis, self.keys, self.name)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not withdraw the heartbeat", error=str(exc) or type(exc).__name__)
        log.info("worker no longer announced", consumer=self.name)

    async def _withdraw_metrics(self) -> None:
        try:
            async with asyncio.timeout(self.options.withdraw_timeout_s):  # it expires anyway
                await bus_metrics.withdraw(self.redis, self.keys, self.name)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not withdraw the metrics", error=str(exc) or type(exc).__name__)

    async def _cancel_loop(self) -> None:
        failing = False  # an outage is logged when it starts and ends, not every poll
        while True:
            _raise_if_cancelled()
            await asyncio.sleep(self.options.cancel_poll_s)
            states = [s for s in self.turns.values() if not s.cancel_requested]
            if not states:
                continue
            try:
                stop = await self.cancellation.cancelled(
                    (s.turn.conversation_id, s.turn.turn_id) for s in states
                )
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()
                if not failing:
                    log.warning("cancellation poll failed; retrying quietly", error=str(exc))
                failing = True
                continue
            if failing:
                log.info("cancellation poll works again")
                failing = False
            for state in states:
                if state.turn.turn_id in stop:
                    with bind_turn(state.turn.conversation_id, state.turn.turn_id):
                        log.info("cancelling turn")
                    state.cancel(self.generator)
