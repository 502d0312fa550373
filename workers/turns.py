"""One delivery of a turn, from claim to ack: history, agent loop, SQL rows and bus events.

``TurnHandler`` handles one delivery: skip or republish when an earlier delivery finished,
skip when a human owns the conversation, else rebuild the history from SQL and relay the
agent loop's events (``TurnRelay``). SQL writes are keyed by turn id (reply) and (turn,
round) (tool calls), so a redelivered turn stores nothing twice and runs no tool twice
(``ReplayingRunner`` reuses a finished call's stored result; a call an earlier delivery
started but never finished is run again only when its tool is read-only). Nor does it
publish twice: the relay reads what the event log already holds of the turn and publishes
only the rest (``workers.resume``). Acked only once the reply is stored and the final event
published. An exception is classified (``workers.failures``): a deterministic one ends the
turn at once with the fallback reply, stored and published like any reply; a transient one
leaves the turn pending, to be redelivered and, after ``max_deliveries``, dead-lettered
with an error event. A final, a handoff and a dead-lettered turn are also noted in the
tenant's activity stream, so the consoles' lists update even when no gateway relays the
conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from assistant.agent.decoding import DecodingMode, redraft_mode
from assistant.agent.loop import (
    FALLBACK_REPLY,
    AgentLoop,
    DraftUpdate,
    ToolCalled,
    ToolFinished,
    TurnFinished,
)
from assistant.agent.prompting import HistoryItem
from assistant.bus.activity import ActivityLog
from assistant.bus.schema import (
    DraftEvent,
    FinalEvent,
    HandoffEvent,
    ToolCallEvent,
    ToolResultEvent,
    TurnRequest,
)
from assistant.bus.streams import Cancellation, Delivery, EventLog, TurnConsumer, note_activity
from assistant.core.log import bind_turn
from assistant.store.repository import Repository
from assistant.store.tables import Message, MessageStatus, Owner, ToolCallStatus
from assistant.tools.base import ToolContext
from assistant.tools.registry import TOOLS
from assistant.tools.runner import ToolOutcome, ToolRunner
from dlm_runtime.engine import Draft, Final, GenerationRequest
from workers.failures import Failure, Retryable, classify
from workers.generator import Generator
from workers.history import (
    HistoryError,
    HistoryLoader,
    StoredToolCall,
    stored_call,
    tool_outcome,
)
from workers.publisher import TurnPublisher, final_event, load_published
from workers.worker_metrics import Metrics

log = structlog.get_logger(__name__)

HANDOFF_TOOL = "handoff_to_human"


def turn_seed(turn_id: str) -> int:
    """A seed fixed by the turn, so a redelivered turn decodes as the first delivery did."""
    return int(hashlib.sha256(turn_id.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class TurnState:
    """A delivery this worker holds, and what the cancellation poller needs of it."""

    delivery: Delivery
    task: asyncio.Task[None] | None = None
    request_id: str | None = None  # the engine request of the current round
    cancel_requested: bool = False
    # Rounds whose tool-call row this process created, and rounds whose tool it started:
    # kept across runs of the same delivery (the worker runs it again after a Redis outage),
    # so a row left "running" is known not to have run when created here and not started.
    rows_created: set[int] = field(default_factory=set)
    tools_started: set[int] = field(default_factory=set)

    @property
    def turn(self) -> TurnRequest:
        return self.delivery.turn

    def cancel(self, generator: Generator) -> None:
        self.cancel_requested = True
        if self.request_id is not None:
            generator.cancel(self.request_id)


INTERRUPTED = (
    "an earlier attempt of this call was interrupted and may have done it already; "
    "it is not repeated"
)


def read_only(name: str) -> bool:
    tool = TOOLS.get(name)
    return tool is not None and tool.read_only


class ReplayingRunner(ToolRunner):
    """Runs a tool, unless an earlier delivery of the turn finished or may have run this call.

    The relay sets ``stored`` to the (turn, round) row before the agent loop runs the call.
    A finished row gives its stored outcome back. A row still "running" was left by a
    delivery that stopped mid-call: a read-only tool runs again, any other does not (it may
    have opened the ticket already) unless this process knows it never started it; the
    model then reads that the call was interrupted, and the claims check keeps the reply
    from saying it was done.
    """

    def __init__(self, inner: ToolRunner, state: TurnState | None = None) -> None:
        super().__init__(inner.shop, inner.timeout_s)
        self.inner = inner
        self.rows_created: set[int] = state.rows_created if state else set()
        self.tools_started: set[int] = state.tools_started if state else set()
        self.stored: StoredToolCall | None = None
        self.replayed = False

    async def run(self, context: ToolContext, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        stored, self.stored = self.stored, None
        same = stored is not None and stored.name == name and stored.arguments == arguments
        self.replayed = same and stored is not None and stored.status != ToolCallStatus.RUNNING
        if stored is not None and self.replayed:
            log.info("tool result reused from an earlier delivery", tool=name, round=stored.round)
            return tool_outcome(stored)
        if stored is not None and same and self._may_have_run(stored) and not read_only(name):
            log.warning("interrupted tool call not repeated", tool=name, round=stored.round)
            self.replayed = True  # not run here: no tool metrics
            return ToolOutcome(name, dict(arguments), "error", error=INTERRUPTED)
        if stored is not None and stored.status != ToolCallStatus.RUNNING:
            # Decoding is seeded by the turn, so this needs another model or device.
            log.warning("redelivered turn called another tool", tool=name, stored=stored.name)
        if stored is not None:
            self.tools_started.add(stored.round)
        return await self.inner.run(context, name, arguments)

    def _may_have_run(self, stored: StoredToolCall) -> bool:
        """A running row: started by this process, or left by one this process cannot ask."""
        if stored.round in self.tools_started:
            return True
        return stored.round not in self.rows_created


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
        self.runner = ReplayingRunner(handler.runner, state)
        self.call_ids: dict[int, str] = {}
        self.call_running: dict[int, bool] = {}
        self.started = time.perf_counter()

    async def run(self, history: Sequence[HistoryItem]) -> TurnResult:
        # What an earlier delivery (or an earlier run of this one) already published.
        self.publisher.already = already = await load_published(self.handler.events, self.turn)
        if not already.empty:
            log.info(
                "resuming a turn: events already published are not sent again",
                tool_calls=sorted(already.tool_calls),
                tool_results=sorted(already.tool_results),
                draft_rounds=sorted(already.drafts),
            )
        loop = AgentLoop(
            self._submit,
            self.handler.tokenizer,
            self.runner,
            self.mode,
            max_rounds=self.handler.max_rounds,
            # Optional in the Generator protocol: test doubles and null engines have none.
            context=getattr(self.handler.generator, "context", None),
            entity_slots=self.handler.entity_slots,
            redraft=redraft_mode(self.mode),
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
        if _created:
            self.state.rows_created.add(event.round)
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
            handoff = HandoffEvent(
                conversation_id=turn.conversation_id, turn_id=turn.turn_id, owner="human"
            )
            if await self.publisher.publish(handoff):
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
        elif event.problem is not None:
            # The reply the user got is a fallback: counted, and in the stored stats and the
            # final event's usage as "problem".
            metrics.problem(event.problem)
        # The final supersedes any held draft: it is the whole reply.
        await self.publisher.publish(final_event(turn, message), drop_draft=True)
        await self.handler.note(turn, "final")
        if event.milliseconds_to_first_draft is not None:
            metrics.first_draft.observe(event.milliseconds_to_first_draft / 1000)
        metrics.final.observe(time.perf_counter() - self.started)
        metrics.generation(stats)
        return TurnResult(str(message.status), message.id)


class TurnError(Retryable):
    """A turn whose rows are not found (it will be retried, then dead-lettered)."""


class TurnHandler:
    """Handles one delivery of a turn from start to ack."""

    def __init__(
        self,
        *,
        store: Repository,
        events: EventLog,
        consumer: TurnConsumer,
        generator: Generator,
        tokenizer: Any,
        runner: ToolRunner,
        mode: DecodingMode,
        metrics: Metrics,
        activity: ActivityLog | None = None,
        draft_interval_s: float = 0.05,
        max_rounds: int = 3,
        final_lookback: int = 200,
        entity_slots: bool = True,
    ) -> None:
        self.store = store
        self.loader = HistoryLoader(store.engine)
        self.events = events
        self.consumer = consumer
        self.generator = generator
        self.tokenizer = tokenizer
        self.runner = runner
        self.mode = mode  # one per worker (ASSISTANT_DECODING_MODE): turns do not choose
        self.metrics = metrics
        self.activity = activity or ActivityLog(events.redis, keys=events.keys)
        self.draft_interval_s = draft_interval_s
        self.max_rounds = max_rounds
        self.final_lookback = final_lookback
        self.entity_slots = entity_slots

    async def handle(self, state: TurnState) -> TurnResult:
        """Process the turn and ack it; raises (no ack) when it should be redelivered.

        A deterministic failure (``workers.failures``) is not raised: another delivery
        would fail alike, so the turn ends here with the fallback reply, and is acked.
        """
        turn = state.turn
        with bind_turn(turn.conversation_id, turn.turn_id):
            log.info("turn started", attempt=state.delivery.attempt, mode=self.mode.name)
            try:
                result = await self._process(state)
            except Exception as exc:
                failure = classify(exc)
                self.metrics.failure(failure.kind, failure.reason)
                if failure.transient:
                    log.info("transient failure", reason=failure.reason, error=failure.detail)
                    raise
                log.error(
                    "turn failed deterministically; ending it with the fallback reply",
                    reason=failure.reason,
                    error=failure.detail,
                    attempt=state.delivery.attempt,
                    exc_info=True,
                )
                result = await self._end_with_fallback(turn, failure)
            await self.consumer.ack(state.delivery)
            self.metrics.turn_done(result.outcome)
            log.info("turn done", outcome=result.outcome, message_id=result.message_id)
            return result

    async def _end_with_fallback(self, turn: TurnRequest, failure: Failure) -> TurnResult:
        """Store and publish the fallback reply, with the failure's reason as its problem."""
        stats = {"mode": self.mode.name, "problem": failure.reason}
        message, created = await self.store.store_reply(
            turn.conversation_id, turn.turn_id, FALLBACK_REPLY, MessageStatus.FAILED, stats
        )
        if created:
            self.metrics.problem(failure.reason)
        else:
            log.info("reply was already stored by another delivery", message_id=message.id)
        # A final already in the log stays the turn's only one (EventLog.append).
        await self.events.append(turn.conversation_id, final_event(turn, message))
        await self.note(turn, "final")
        return TurnResult(str(message.status), message.id)

    async def note(self, turn: TurnRequest, kind: str) -> None:
        """The tenant's consoles update their list (a final, a handoff): see note_activity."""
        await note_activity(self.activity, turn.tenant_id, turn.conversation_id, kind)

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
        try:
            history = await self.loader.load(turn.conversation_id, turn.turn_id)
        except HistoryError as exc:
            raise TurnError(str(exc)) from exc
        return await TurnRelay(self, state, self.mode).run(history)

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
