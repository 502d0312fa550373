"""The worker: takes turns from the consumer group, runs them on one engine, publishes events.

Shape of a worker process (one per accelerator):

- ``Worker.run`` claims up to (free batch slots) turns at a time, first its own pending ones,
  and every few seconds takes over turns idle for ``min_idle_ms`` (their worker died). Each
  turn runs as its own asyncio task, so all of them share the engine's continuous batch.
- Two background tasks: ``keep_alive`` for the turns held (so nobody takes them over, and a
  turn another worker took over is dropped here), and a cancellation poller (~100 ms) that
  stops the engine request of a cancelled turn. Redis latency never sits in the engine loop.
- ``TurnHandler`` handles one delivery: skip or republish when an earlier delivery finished,
  skip when a human owns the conversation, else rebuild the history from SQL and relay the
  agent loop's events (``TurnRelay``). SQL writes are keyed by turn id (reply) and (turn,
  round) (tool calls), so a redelivered turn stores nothing twice and runs no tool twice
  (``ReplayingRunner`` reuses a finished call's stored result). Acked only once the reply is
  stored and the final event published; an exception leaves the turn pending, to be
  redelivered and, after ``max_deliveries``, dead-lettered with an error event. A final, a
  handoff and a dead-lettered turn are also noted in the tenant's activity stream, so the
  consoles' lists update even when no gateway relays the conversation.
- ``stop()`` (SIGTERM): stop claiming, let turns in flight finish for ``grace_s``, then cancel
  the rest without acking them, so another worker (or this one restarted) takes them over.
- ``render_metrics()``: Prometheus text of this process's counters, gauges and histograms.
  A third background task publishes it to Redis every ``metrics_every_s`` (with a TTL of three
  intervals) for the gateways' /metrics, which merge all workers' texts
  (``assistant.bus.metrics_relay.collect``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
import torch
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from assistant.agent.decoding import DEFAULT_MODE, DecodingMode, decoding_modes
from assistant.agent.loop import (
    AgentLoop,
    DraftUpdate,
    ToolCalled,
    ToolFinished,
    TurnFinished,
)
from assistant.agent.prompting import HistoryItem
from assistant.bus import metrics_relay as bus_metrics
from assistant.bus.activity import ActivityLog
from assistant.bus.keys import DEFAULT_KEYS, Keys
from assistant.bus.schema import (
    DraftEvent,
    Event,
    FinalEvent,
    HandoffEvent,
    ToolCallEvent,
    ToolResultEvent,
    TurnRequest,
)
from assistant.bus.streams import Cancellation, Delivery, EventLog, TurnConsumer, note_activity
from assistant.checkpoints import model_dir
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.core.log import bind_turn
from assistant.store.repository import Store
from assistant.store.sql_backend import SqlBackend
from assistant.store.tables import Message, MessageStatus, Owner, ToolCallStatus
from assistant.tools.runner import (
    DEFAULT_TIMEOUT_S,
    StoreBackend,
    ToolContext,
    ToolOutcome,
    ToolRunner,
)
from dlm_runtime.engine import Draft, Engine, Final, GenerationRequest
from dlm_runtime.loading import CheckpointError, load_model
from dlm_runtime.tokenizer import load_tokenizer
from workers.history import HistoryLoader, StoredToolCall, stored_call, tool_outcome
from workers.worker_metrics import METRICS, Metrics, render_metrics

log = structlog.get_logger(__name__)

__all__ = ["METRICS", "Worker", "WorkerOptions", "render_metrics"]

HANDOFF_TOOL = "handoff_to_human"
DEFAULT_MAX_BATCH = 8


# generation ------------------------------------------------------------------------------


class Generator(Protocol):
    """What the worker needs of an engine: submit a request, cancel one by id."""

    def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]: ...

    def cancel(self, request_id: str) -> bool: ...


class EngineGenerator:
    """The diffusion engine behind the :class:`Generator` protocol."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        stream = await self.engine.submit(request)
        try:
            async for event in stream:
                yield event
        finally:
            # Closed now, not when collected: the engine drops an abandoned request at once.
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    def cancel(self, request_id: str) -> bool:
        return self.engine.cancel(request_id)

    @property
    def context(self) -> int | None:
        """Positions the model sees: the prompt plus the reply must fit in them."""
        return self.engine.info.context

    async def close(self) -> None:
        await self.engine.close()


def pick_device(setting: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; anything else is a torch device name."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(setting)
    except RuntimeError:
        raise UserError(
            f"unknown device {setting!r}: use auto, cpu, cuda or cuda:N (ASSISTANT_DEVICE)"
        ) from None


def load_generator(
    settings: Settings, max_batch: int = DEFAULT_MAX_BATCH
) -> tuple[EngineGenerator, Any]:
    """Load the model and tokenizer once and start one engine; return it and the tokenizer."""
    path = model_dir(settings.model_path)
    device = pick_device(settings.device)
    # bfloat16 halves memory and time on accelerators; CPUs are faster and exact in float32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = load_tokenizer(path)
        model = load_model(path, device=device, dtype=dtype)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the model from {path}: {exc} (point ASSISTANT_MODEL_PATH or "
            "--model-path at a checkpoint directory)"
        ) from None
    log.info("model loaded", path=str(path), device=str(device), dtype=str(dtype))
    return EngineGenerator(Engine(model, tokenizer, max_batch=max_batch)), tokenizer


def turn_seed(turn_id: str) -> int:
    """A seed fixed by the turn, so a redelivered turn decodes as the first delivery did."""
    return int(hashlib.sha256(turn_id.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


# one turn --------------------------------------------------------------------------------


@dataclass
class TurnState:
    """A delivery this worker holds, and what the cancellation poller needs of it."""

    delivery: Delivery
    task: asyncio.Task[None] | None = None
    request_id: str | None = None  # the engine request of the current round
    cancel_requested: bool = False

    @property
    def turn(self) -> TurnRequest:
        return self.delivery.turn

    def cancel(self, generator: Generator) -> None:
        self.cancel_requested = True
        if self.request_id is not None:
            generator.cancel(self.request_id)


class TurnPublisher:
    """Appends one turn's events in order; drafts are throttled, other events never dropped.

    At most one draft per ``interval_s``: a draft arriving sooner is held, replaced by any
    newer one, and appended when the interval is over, so the last shown is the latest.
    """

    def __init__(self, events: EventLog, turn: TurnRequest, interval_s: float) -> None:
        self.events = events
        self.conversation_id = turn.conversation_id
        self.interval_s = interval_s
        self._lock = asyncio.Lock()  # one append at a time keeps seq order = event order
        self._last_draft = -float("inf")
        self._pending: DraftEvent | None = None
        self._flush: asyncio.Task[None] | None = None
        self.published: list[Event] = []
        self.turn_ended = False  # the log refused an event: the turn's final is already in it

    async def draft(self, event: DraftEvent) -> None:
        if self._pending is None and time.monotonic() - self._last_draft >= self.interval_s:
            async with self._lock:
                await self._append_draft(event)
            return
        self._pending = event
        if self._flush is None:
            delay = max(0.0, self._last_draft + self.interval_s - time.monotonic())
            self._flush = asyncio.create_task(self._flush_later(delay))

    async def publish(self, event: Event, *, drop_draft: bool = False) -> None:
        """Append a non-draft event, after the held draft (or instead of it: ``drop_draft``)."""
        async with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None and not drop_draft:
                await self._append_draft(pending)
            await self._append(event)

    async def close(self) -> None:
        """Wait for a scheduled draft (it sleeps at most one interval)."""
        if self._flush is not None:
            # Its failure (Redis gone) must not hide why the turn itself ended.
            with contextlib.suppress(Exception):
                await self._flush

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            self._flush = None
            pending, self._pending = self._pending, None
            if pending is not None:
                try:
                    await self._append_draft(pending)
                except (RedisError, OSError) as exc:
                    # Nobody awaits this task any more; a later draft or the final follows.
                    log.warning("held draft not published", error=str(exc))

    async def _append_draft(self, event: DraftEvent) -> None:
        self._last_draft = time.monotonic()
        await self._append(event)

    async def _append(self, event: Event) -> None:
        seq = await self.events.append(self.conversation_id, event)
        if seq:
            self.published.append(event.with_seq(seq))
        elif not self.turn_ended:
            self.turn_ended = True
            log.info("another delivery already finished this turn; its events are dropped")


class ReplayingRunner(ToolRunner):
    """Runs a tool, unless an earlier delivery of the turn finished this very call.

    The relay sets ``stored`` to the (turn, round) row before the agent loop runs the call.
    """

    def __init__(self, inner: ToolRunner) -> None:
        super().__init__(inner.backend, inner.timeout_s)
        self.inner = inner
        self.stored: StoredToolCall | None = None
        self.replayed = False

    async def run(self, context: ToolContext, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        stored, self.stored = self.stored, None
        self.replayed = (
            stored is not None
            and stored.status != ToolCallStatus.RUNNING
            and stored.name == name
            and stored.arguments == arguments
        )
        if stored is not None and self.replayed:
            log.info("tool result reused from an earlier delivery", tool=name, round=stored.round)
            return tool_outcome(stored)
        if stored is not None and stored.status != ToolCallStatus.RUNNING:
            # Decoding is seeded by the turn, so this needs another model or device.
            log.warning("redelivered turn called another tool", tool=name, stored=stored.name)
        return await self.inner.run(context, name, arguments)


@dataclass(frozen=True)
class TurnResult:
    outcome: str  # complete | cancelled | failed | skipped | duplicate
    message_id: str | None = None


class TurnRelay:
    """Runs the agent loop for one turn and turns its events into SQL rows and bus events."""

    def __init__(
        self,
        handler: TurnHandler,
        state: TurnState,
        mode: DecodingMode,
    ) -> None:
        self.handler = handler
        self.state = state
        self.turn = state.turn
        self.mode = mode
        self.publisher = TurnPublisher(handler.events, self.turn, handler.draft_interval_s)
        self.runner = ReplayingRunner(handler.runner)
        self.call_ids: dict[int, str] = {}
        self.call_running: dict[int, bool] = {}
        self.started = time.perf_counter()

    async def run(self, history: Sequence[HistoryItem]) -> TurnResult:
        loop = AgentLoop(
            self._submit,
            self.handler.tokenizer,
            self.runner,
            self.mode.policy,
            mode=self.mode.engine_mode,
            max_rounds=self.handler.max_rounds,
            attention=self.mode.attention,
            # Optional in the Generator protocol: test doubles and null engines have none.
            context=getattr(self.handler.generator, "context", None),
            entity_slots=self.handler.entity_slots,
        )
        context = ToolContext(self.turn.tenant_id, self.turn.conversation_id)
        request_id = f"{self.turn.turn_id}-{uuid.uuid4().hex[:8]}"
        result: TurnResult | None = None
        events = loop.run(
            self.turn.channel, history, context, request_id, turn_seed(self.turn.turn_id)
        )
        try:
            async for event in events:
                if isinstance(event, DraftUpdate):
                    await self._draft(event)
                elif isinstance(event, ToolCalled):
                    await self._tool_called(event)
                elif isinstance(event, ToolFinished):
                    await self._tool_finished(event)
                else:
                    result = await self._finished(event)
        finally:
            # Closing the loop closes its engine stream, which frees the batch slot at once.
            if isinstance(events, AsyncGenerator):
                await events.aclose()
            await self.publisher.close()
        if result is None:
            raise RuntimeError("the agent loop ended without a TurnFinished")
        return result

    async def _submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        """The generator's stream, made cancellable by the poller and here."""
        generator = self.handler.generator
        self.state.request_id = request.request_id
        cancelled = False
        stream = generator.submit(request)
        try:
            async for event in stream:
                # A cancel may come while no request was known yet (between rounds, or before
                # the engine registered it): repeat it once the request is running.
                if self.state.cancel_requested and not cancelled:
                    cancelled = True
                    generator.cancel(request.request_id)
                yield event
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    async def _draft(self, event: DraftUpdate) -> None:
        turn = self.turn
        await self.publisher.draft(
            DraftEvent(
                conversation_id=turn.conversation_id,
                turn_id=turn.turn_id,
                text=event.text,
                step=event.step,
                round=event.round,
                revised=event.revised,
            )
        )

    async def _tool_called(self, event: ToolCalled) -> None:
        turn = self.turn
        row, _created = await self.handler.store.start_tool_call(
            turn.conversation_id, turn.turn_id, event.round, event.name, event.arguments
        )
        self.call_ids[event.round] = row.id
        self.call_running[event.round] = row.status == ToolCallStatus.RUNNING
        self.runner.stored = stored_call(row)
        await self.publisher.publish(
            ToolCallEvent(
                conversation_id=turn.conversation_id,
                turn_id=turn.turn_id,
                name=event.name,
                arguments=event.arguments,
                round=event.round,
                call_id=row.id,
            )
        )

    async def _tool_finished(self, event: ToolFinished) -> None:
        turn, outcome = self.turn, event.outcome
        call_id = self.call_ids.get(event.round, "")
        self.runner.stored = None  # the loop may settle a call without running it
        if call_id and self.call_running.get(event.round, False):
            await self.handler.store.finish_tool_call(
                call_id,
                ToolCallStatus(outcome.status),
                result=outcome.result,
                error=outcome.error,
                finished_at=outcome.finished_at,
            )
        if not self.runner.replayed:
            self.handler.metrics.tool(outcome)
        self.runner.replayed = False
        await self.publisher.publish(
            ToolResultEvent(
                conversation_id=turn.conversation_id,
                turn_id=turn.turn_id,
                name=outcome.name,
                status=outcome.status,
                result=outcome.result if outcome.status == "ok" else None,
                error=outcome.error,
                ms=round(outcome.milliseconds, 1),
                round=event.round,
                call_id=call_id,
            )
        )
        if outcome.name == HANDOFF_TOOL and outcome.status == "ok":
            await self.publisher.publish(
                HandoffEvent(
                    conversation_id=turn.conversation_id, turn_id=turn.turn_id, owner="human"
                )
            )
            await self.handler.note(turn, "handoff")

    async def _cancel_requested(self) -> bool:
        events = self.handler.events
        try:
            return await Cancellation(events.redis, keys=events.keys).is_cancelled(
                self.turn.conversation_id, self.turn.turn_id
            )
        except (RedisError, OSError):
            return False  # the poller decides then; a reply is not lost over a failed check

    async def _finished(self, event: TurnFinished) -> TurnResult:
        turn, metrics = self.turn, self.handler.metrics
        stats: dict[str, Any] = {**event.usage.as_dict(), "mode": self.mode.name}
        if event.problem is not None:
            stats["problem"] = event.problem
        status = MessageStatus(event.status)
        if status is MessageStatus.COMPLETE and await self._cancel_requested():
            # Stop pressed while the reply was finishing: the poller (~100 ms) had not seen it
            # yet, but the user asked before the reply was stored, so it counts as stopped.
            status = MessageStatus.CANCELLED
        message, created = await self.handler.store.store_reply(
            turn.conversation_id, turn.turn_id, event.text, status, stats
        )
        if not created:
            log.info("reply was already stored by another delivery", message_id=message.id)
        # The final supersedes any held draft: it is the whole reply.
        await self.publisher.publish(final_event(turn, message), drop_draft=True)
        await self.handler.note(turn, "final")
        if event.milliseconds_to_first_draft is not None:
            metrics.first_draft.observe(event.milliseconds_to_first_draft / 1000)
        metrics.final.observe(time.perf_counter() - self.started)
        metrics.generation(stats)
        return TurnResult(str(message.status), message.id)


def final_event(turn: TurnRequest, message: Message) -> FinalEvent:
    """The final event of a stored reply."""
    usage = dict(message.stats or {})
    return FinalEvent(
        conversation_id=turn.conversation_id,
        turn_id=turn.turn_id,
        message_id=message.id,
        text=message.text,
        status=str(message.status),
        usage=usage,
    )


class TurnError(Exception):
    """A turn that cannot be handled (it will be retried, then dead-lettered)."""


class TurnHandler:
    """Handles one delivery of a turn from start to ack."""

    def __init__(
        self,
        *,
        store: Store,
        events: EventLog,
        consumer: TurnConsumer,
        generator: Generator,
        tokenizer: Any,
        runner: ToolRunner,
        modes: Mapping[str, DecodingMode],
        default_mode: str,
        metrics: Metrics,
        activity: ActivityLog | None = None,
        draft_interval_s: float = 0.05,
        max_rounds: int = 3,
        final_lookback: int = 200,
        entity_slots: bool = True,
    ) -> None:
        if default_mode not in modes:
            raise ValueError(f"default mode {default_mode!r} is not one of {sorted(modes)}")
        self.store = store
        self.loader = HistoryLoader(store.engine)
        self.events = events
        self.consumer = consumer
        self.generator = generator
        self.tokenizer = tokenizer
        self.runner = runner
        self.modes = modes
        self.default_mode = default_mode
        self.metrics = metrics
        self.activity = activity or ActivityLog(events.redis, keys=events.keys)
        self.draft_interval_s = draft_interval_s
        self.max_rounds = max_rounds
        self.final_lookback = final_lookback
        self.entity_slots = entity_slots

    async def handle(self, state: TurnState) -> TurnResult:
        """Process the turn and ack it; raises (no ack) when it should be redelivered."""
        turn = state.turn
        with bind_turn(turn.conversation_id, turn.turn_id):
            log.info("turn started", attempt=state.delivery.attempt, mode=turn.mode)
            result = await self._process(state)
            await self.consumer.ack(state.delivery)
            self.metrics.turn_done(result.outcome)
            log.info("turn done", outcome=result.outcome, message_id=result.message_id)
            return result

    async def note(self, turn: TurnRequest, kind: str) -> None:
        """The tenant's consoles update their list (a final, a handoff): see note_activity."""
        await note_activity(self.activity, turn.tenant_id, turn.conversation_id, kind)

    def mode(self, name: str | None) -> DecodingMode:
        if name is None or name == "":
            return self.modes[self.default_mode]
        mode = self.modes.get(name)
        if mode is None:  # a client's typo must not fail the turn
            log.warning("unknown decoding mode; using the default", mode=name)
            return self.modes[self.default_mode]
        return mode

    async def _process(self, state: TurnState) -> TurnResult:
        turn = state.turn
        conversation = await self.store.get_conversation(turn.conversation_id, turn.tenant_id)
        if conversation is None:
            raise TurnError(f"conversation {turn.conversation_id} of this tenant does not exist")
        stored = await self.loader.reply(turn.turn_id)
        if stored is not None:
            await self._republish_final(turn, stored)
            return TurnResult("duplicate", stored.id)
        calls = await self.store.tool_calls(turn.turn_id)
        handed_off_here = any(c.name == HANDOFF_TOOL for c in calls)
        # A handoff made by this very turn's earlier delivery still gets its reply.
        if conversation.owner != Owner.BOT and not handed_off_here:
            log.info("conversation is not the bot's; no reply", owner=str(conversation.owner))
            return TurnResult("skipped")
        history = await self.loader.load(turn.conversation_id, turn.turn_id)
        return await TurnRelay(self, state, self.mode(turn.mode)).run(history)

    async def _republish_final(self, turn: TurnRequest, message: Message) -> None:
        """Publish the stored reply's final unless the event log already has it."""
        last = await self.events.last_seq(turn.conversation_id)
        recent = await self.events.read_from(
            turn.conversation_id, max(0, last - self.final_lookback)
        )
        if any(isinstance(e, FinalEvent) and e.turn_id == turn.turn_id for e in recent):
            log.info("redelivered turn was already finished")
            return
        log.info("redelivered turn: publishing the stored final")
        await self.events.append(turn.conversation_id, final_event(turn, message))
        await self.note(turn, "final")


# the worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerOptions:
    max_batch: int = DEFAULT_MAX_BATCH
    consumer_name: str | None = None  # default: "<hostname>-<pid>"
    default_mode: str = DEFAULT_MODE
    max_deliveries: int = 3
    min_idle_ms: int = 30_000  # a turn idle this long belongs to a dead worker
    reclaim_every_s: float = 5.0
    keep_alive_every_s: float = 5.0  # well within min_idle_ms
    cancel_poll_s: float = 0.1
    metrics_every_s: float = 2.0  # how often the metrics text is published to Redis
    grace_s: float = 20.0  # how long a stopping worker lets its turns finish
    claim_block_ms: int = 500
    draft_interval_s: float = 0.05
    tool_timeout_s: float = DEFAULT_TIMEOUT_S
    max_rounds: int = 3
    # Whether the model reads entities as placeholders (assistant.checkpoints.uses_entity_slots).
    entity_slots: bool = True


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
        store: Store | None,
        generator: Generator,
        tokenizer: Any,
        *,
        options: WorkerOptions | None = None,
        keys: Keys = DEFAULT_KEYS,
        backend: StoreBackend | None = None,
        modes: Mapping[str, DecodingMode] | None = None,
        metrics: Metrics | None = None,
        handler: Callable[[Worker], Handles] | None = None,
    ) -> None:
        """``handler`` builds another turn handler from the worker (its events, consumer and
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
        self.consumer = TurnConsumer(
            redis,
            opts.consumer_name or default_consumer_name(),
            keys=keys,
            max_deliveries=opts.max_deliveries,
            events=self.events,
            activity=self.activity,
        )
        self.cancellation = Cancellation(redis, keys=keys)
        self.handler: Handles
        if handler is not None:
            self.handler = handler(self)
        elif store is None:
            raise ValueError("a worker needs a store unless it is given another handler")
        else:
            self.handler = self._turn_handler(store, tokenizer, backend, modes)
        self.turns: dict[str, TurnState] = {}  # by stream id
        self._turn_locks: dict[str, asyncio.Lock] = {}  # by turn id: one delivery at a time
        self._stopping = asyncio.Event()

    def _turn_handler(
        self,
        store: Store,
        tokenizer: Any,
        backend: StoreBackend | None,
        modes: Mapping[str, DecodingMode] | None,
    ) -> TurnHandler:
        opts = self.options
        return TurnHandler(
            store=store,
            events=self.events,
            consumer=self.consumer,
            generator=self.generator,
            tokenizer=tokenizer,
            runner=ToolRunner(backend or SqlBackend(store.engine, store), opts.tool_timeout_s),
            modes=modes or decoding_modes(),
            default_mode=opts.default_mode,
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
        try:
            await self._claim_loop()
            await self._drain()
            await self._leave_group()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
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
                    deliveries = await self.consumer.reclaim_idle(opts.min_idle_ms, count=free)
                    self.metrics.queue_depth = int(await self.redis.xlen(self.keys.turns))
                if not deliveries:
                    deliveries = await self.consumer.claim(free, block_ms=opts.claim_block_ms)
            except (RedisError, OSError) as exc:
                log.warning("cannot claim turns; retrying", error=str(exc))
                await self._sleep_unless_stopping(1.0)
                continue
            for delivery in deliveries:
                self._start(delivery)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _start(self, delivery: Delivery) -> None:
        if delivery.stream_id in self.turns:
            return  # already being worked on here
        state = TurnState(delivery)
        self.turns[delivery.stream_id] = state
        self.metrics.active_turns = len(self.turns)
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
            await asyncio.sleep(self.options.keep_alive_every_s)
            states = list(self.turns.values())
            if not states:
                continue
            try:
                lost = await self.consumer.keep_alive([s.delivery for s in states])
            except (RedisError, OSError) as exc:
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
                await bus_metrics.publish(
                    self.redis, self.keys, self.name, self.metrics.render(), ttl_s=3 * every
                )
            except (RedisError, OSError) as exc:
                log.warning("metrics publish failed", error=str(exc))
            await asyncio.sleep(every)

    async def _withdraw_metrics(self) -> None:
        try:
            await bus_metrics.withdraw(self.redis, self.keys, self.name)
        except (RedisError, OSError) as exc:
            log.warning("could not withdraw the metrics", error=str(exc))

    async def _cancel_loop(self) -> None:
        failing = False  # an outage is logged when it starts and ends, not every poll
        while True:
            await asyncio.sleep(self.options.cancel_poll_s)
            states = [s for s in self.turns.values() if not s.cancel_requested]
            if not states:
                continue
            try:
                stop = await self.cancellation.cancelled(
                    (s.turn.conversation_id, s.turn.turn_id) for s in states
                )
            except (RedisError, OSError) as exc:
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
