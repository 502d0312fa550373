"""The worker on a real Redis and a real SQLite file, with a tiny random model or a script.

The random model writes garbage, but every turn must still end with one stored reply and one
final event. Tool behaviour is driven by a scripted generator and fake shops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import torch
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from transformers import PreTrainedTokenizerFast

from assistant.agent.claims import (
    HANDOFF_FALLBACK,
    ORDER_FALLBACK,
    TICKET_FALLBACK,
    VERDICT_FALLBACK,
)
from assistant.agent.prompting import SUPPORT_SYSTEM, model_messages
from assistant.app.embedded_redis import EmbeddedRedis
from assistant.bus import heartbeat
from assistant.bus.activity import ActivityLog
from assistant.bus.connection import connect
from assistant.bus.keys import DEFAULT_KEYS, GROUP
from assistant.bus.metrics_relay import collect
from assistant.bus.schema import (
    DraftEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    HandoffEvent,
    ToolResultEvent,
    TurnRequest,
)
from assistant.bus.streams import Cancellation, EventLog, InFlight, TurnInFlight, TurnQueue
from assistant.core.config import Settings
from assistant.demo.shop import build_shop
from assistant.lab.corpus.build import added_words
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import Channel, MessageStatus, Owner, Role, ToolCallStatus
from assistant.tools.shop import Article, MemoryShop, ShopData
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.engine import Draft, Engine, Final, GenerationRequest, Usage
from dlm_runtime.loading import load_model, save_model
from dlm_runtime.modeling import DLMModel
from dlm_runtime.policies import fixed_schedule
from dlm_runtime.tokenizer import (
    TOOL_CALL_CLOSE_TOKEN,
    TOOL_CALL_OPEN_TOKEN,
    encode_chat,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    train_tokenizer,
)
from tests.metrics_text import value
from tests.tiny_models import Slow, tiny_config
from workers.generator import EngineGenerator, Generator, load_generator
from workers.history import HistoryLoader
from workers.publisher import TurnPublisher
from workers.worker import Worker, WorkerOptions
from workers.worker_metrics import Metrics, render_metrics

KEYS = DEFAULT_KEYS


# model, engine and script -------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from two threads, and OpenMP stalls when a core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model and its tokenizer, written as a checkpoint directory."""
    texts = [SUPPORT_SYSTEM, "Your order has shipped.", '{"name": "search_kb"}', "hello"] * 20
    tok = train_tokenizer(texts, vocab_size=400, added_words=added_words())
    torch.manual_seed(0)
    config = tiny_config(tok)
    path = tmp_path_factory.mktemp("model")
    save_model(DLMModel(config), path)
    save_tokenizer(tok, path)
    return path


@pytest.fixture(scope="module")
def loaded(checkpoint: Path) -> Iterator[tuple[EngineGenerator, PreTrainedTokenizerFast]]:
    """The worker's own loading path: one engine for the module."""
    generator, tokenizer = load_generator(Settings(model_path=str(checkpoint), device="cpu"))
    yield generator, tokenizer
    asyncio.run(generator.close())


LONG = DecodingMode(
    "long", Pattern.PREFIX_CAUSAL, fixed_schedule(steps=128, gen_length=128, block_length=32)
)


@pytest.fixture
async def slow_generator(
    checkpoint: Path, loaded: tuple[EngineGenerator, PreTrainedTokenizerFast]
) -> AsyncIterator[EngineGenerator]:
    """An engine that needs seconds for a reply: 128 steps of at least 20 ms."""
    engine = Engine(Slow(load_model(checkpoint), 0.02), loaded[1], max_batch=4)
    generator = EngineGenerator(engine)
    yield generator
    await generator.close()


class Script:
    """Stands in for the engine: round ``r`` of any turn outputs ``outputs[r]`` (its causal
    redraft, ``<id>:<r>:redraft``, the same)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, outputs: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.outputs = list(outputs)

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        round_ = int(request.request_id.removesuffix(":redraft").rsplit(":", 1)[1])
        ids = self.tokenizer.encode(self.outputs[round_], add_special_tokens=False)
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        yield Draft(request.request_id, 1, ids, text, [], list(range(len(ids))), [], 0)
        yield Final(request.request_id, ids, text, "end", Usage(2, 2, len(ids), 1.0))

    def cancel(self, request_id: str) -> bool:
        return False


def tool_call(name: str, **arguments: str) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"{TOOL_CALL_OPEN_TOKEN}{body}{TOOL_CALL_CLOSE_TOKEN}"


# SQL, Redis and the worker --------------------------------------------------------------------


@pytest.fixture
def migrated_url(sqlite_url: str) -> str:
    migrate.upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[Repository]:
    store = Repository(create_engine(migrated_url))
    yield store
    await store.close()


def make_worker(
    redis: aioredis.Redis,
    store: Repository,
    generator: Generator,
    tokenizer: PreTrainedTokenizerFast,
    *,
    shop: Any = None,
    mode: DecodingMode | None = None,
    **options: Any,
) -> Worker:
    settings: dict[str, Any] = {
        "consumer_name": "test-worker",
        "min_idle_ms": 1000,
        "reclaim_every_s": 0.1,
        "keep_alive_every_s": 0.1,
        "claim_block_ms": 100,
        "grace_s": 10.0,
        "max_deliveries": 2,
        "tool_timeout_s": 0.3,
        **options,
    }
    return Worker(
        redis,
        store,
        generator,
        tokenizer,
        options=WorkerOptions(**settings),
        shop=shop,
        mode=mode,
        metrics=Metrics(),
    )


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)


async def wait_until(check: Callable[[], Awaitable[bool]], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def new_turn(
    store: Repository,
    redis: aioredis.Redis,
    text: str = "hello",
    *,
    conversation_id: str | None = None,
    tenant_id: str | None = None,
    submit: bool = True,
    channel: Channel = Channel.WIDGET,
) -> TurnRequest:
    if conversation_id is None or tenant_id is None:
        tenant = await store.create_tenant(f"shop-{uuid.uuid4().hex[:8]}")
        conversation = await store.create_conversation(tenant.id, channel)
        tenant_id, conversation_id = tenant.id, conversation.id
    turn_id = uuid.uuid4().hex
    message, _ = await store.add_user_message(conversation_id, text, f"m-{turn_id}", turn_id)
    turn = TurnRequest(
        turn_id=turn_id,
        conversation_id=conversation_id,
        tenant_id=tenant_id,
        channel=channel.value,
        user_message_id=message.id,
    )
    if submit:
        await TurnQueue(redis).submit(turn)
    return turn


async def events_of(redis: aioredis.Redis, conversation_id: str) -> list[Event]:
    return await EventLog(redis).read_from(conversation_id, 0)


def finals(events: Sequence[Event]) -> list[FinalEvent]:
    return [e for e in events if isinstance(e, FinalEvent)]


async def has_final(redis: aioredis.Redis, turn: TurnRequest) -> bool:
    return bool(finals(await events_of(redis, turn.conversation_id)))


async def settled(redis: aioredis.Redis) -> bool:
    """Every turn acked: the stream is empty and nothing is pending."""
    if int(await redis.xlen(KEYS.turns)) > 0:
        return False
    try:
        pending = await redis.xpending(KEYS.turns, GROUP)
    except ResponseError:  # no group yet: the worker has not started
        return False
    return int(pending["pending"]) == 0


async def replies(store: Repository, conversation_id: str) -> int:
    return await store.count_messages(conversation_id, Role.ASSISTANT)


# tests ---------------------------------------------------------------------------------------


async def test_one_turn_end_to_end(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """Drafts, then one final with gapless seqs; one stored reply; the turn is acked."""
    worker = make_worker(redis_client, store, *loaded)
    turn = await new_turn(store, redis_client, "where is my order?")
    assert await heartbeat.alive(redis_client, KEYS) == []  # not announced before it runs
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
        assert await heartbeat.alive(redis_client, KEYS) == ["test-worker"]

        async def published() -> bool:
            return "assistant_worker_turns_total{" in await collect(redis_client, KEYS)

        await wait_until(published)  # the worker's metrics reach Redis for the gateways
        scraped = await collect(redis_client, KEYS)
        assert 'assistant_worker_active_turns{worker="test-worker"} ' in scraped
    assert await collect(redis_client, KEYS) == ""  # a stopped worker withdraws them
    assert await heartbeat.alive(redis_client, KEYS) == []  # and its heartbeat
    events = await events_of(redis_client, turn.conversation_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], FinalEvent) and len(finals(events)) == 1
    assert any(isinstance(e, DraftEvent) for e in events)
    assert all(isinstance(e, DraftEvent) for e in events[:-1])
    assert all(e.turn_id == turn.turn_id for e in events)
    history = await store.history(turn.conversation_id)
    assert [m.role for m in history] == [Role.USER, Role.ASSISTANT]
    reply = history[-1]
    assert reply.id == events[-1].message_id and reply.text == events[-1].text
    assert reply.turn_id == turn.turn_id and reply.stats and reply.stats["tokens"] > 0
    assert await InFlight(redis_client).holder(turn.conversation_id) is None
    assert await redis_client.xinfo_consumers(KEYS.turns, GROUP) == []  # it left the group
    metrics = worker.metrics.render()
    mode = worker.metrics.mode
    assert mode == "fast-diffusion"  # the worker's decoding mode labels the histograms
    for name in (
        "time_to_first_draft_seconds",
        "time_to_final_seconds",
        "queue_wait_seconds",
        "reply_forward_passes_per_token",
        "reply_tokens_per_second",
    ):
        assert value(metrics, f"assistant_worker_{name}_count", mode=mode) == 1, name
    assert value(metrics, "assistant_worker_turns_total", outcome="complete") == 1
    assert value(metrics, "assistant_worker_redeliveries_total") == 0
    assert render_metrics().startswith("# HELP assistant_worker_queue_depth")


async def test_same_turn_delivered_twice(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A turn queued again after it finished stores nothing twice and adds no final."""
    tokenizer = loaded[1]
    script = Script(tokenizer, [tool_call("search_kb", topic="returns"), "Here you go."])
    shop = CountingShop(build_shop())
    worker = make_worker(redis_client, store, script, tokenizer, shop=shop)
    turn = await new_turn(store, redis_client, "returns?")
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
        before = await events_of(redis_client, turn.conversation_id)
        await redis_client.xadd(KEYS.turns, turn.to_fields())  # type: ignore[arg-type]
        await wait_until(lambda: settled(redis_client))
    assert await events_of(redis_client, turn.conversation_id) == before
    assert await replies(store, turn.conversation_id) == 1
    assert len(await store.tool_calls(turn.turn_id)) == 1
    assert shop.article_calls == 1
    assert worker.metrics.turns == {"complete": 1, "duplicate": 1}


async def test_delivery_overtaken_by_another_adds_nothing_after_the_final(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """Another delivery's final lands mid-generation: this one's later drafts are dropped."""
    tokenizer = loaded[1]
    worker = make_worker(redis_client, store, Paced(tokenizer, "Late.", steps=40), tokenizer)
    turn = await new_turn(store, redis_client, "hello")

    async def drafting() -> bool:
        return bool(await events_of(redis_client, turn.conversation_id))

    async with running(worker):
        await wait_until(drafting)
        other = FinalEvent(
            conversation_id=turn.conversation_id,
            turn_id=turn.turn_id,
            message_id="from-the-other-delivery",
            text="Early.",
        )
        other_seq = await EventLog(redis_client).append(turn.conversation_id, other)
        await wait_until(lambda: settled(redis_client))
    events = await events_of(redis_client, turn.conversation_id)
    assert events[-1] == other.with_seq(other_seq) and len(finals(events)) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_stored_reply_without_final_is_republished(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A delivery that died between storing the reply and publishing it: the final goes out."""
    turn = await new_turn(store, redis_client)
    message, _ = await store.store_reply(
        turn.conversation_id, turn.turn_id, "Stored earlier.", stats={"tokens": 3}
    )
    worker = make_worker(redis_client, store, *loaded)
    async with running(worker):
        await wait_until(lambda: settled(redis_client))
    (final,) = await events_of(redis_client, turn.conversation_id)
    assert isinstance(final, FinalEvent) and final.seq == 1
    assert (final.message_id, final.text, final.usage) == (
        message.id,
        "Stored earlier.",
        {"tokens": 3},
    )
    assert await replies(store, turn.conversation_id) == 1


class CountingShop(MemoryShop):
    """The demo store, counting how often a tool really ran."""

    def __init__(self, data: ShopData) -> None:
        super().__init__(data)
        self.article_calls = 0

    async def article(self, tenant_id: str, topic: str) -> Article | None:
        self.article_calls += 1
        return await super().article(tenant_id, topic)


class FailingReplyRepository(Repository):
    """Fails the first reply write, as if the worker died right before it."""

    failures = 1

    async def store_reply(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        return await super().store_reply(*args, **kwargs)


async def test_redelivery_reuses_the_stored_tool_result(
    redis_client: aioredis.Redis,
    migrated_url: str,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A turn that failed after its tool call is redelivered: the tool does not run again."""
    store = FailingReplyRepository(create_engine(migrated_url))
    try:
        tokenizer = loaded[1]
        script = Script(tokenizer, [tool_call("search_kb", topic="returns"), "Here you go."])
        shop = CountingShop(build_shop())
        worker = make_worker(redis_client, store, script, tokenizer, shop=shop)
        turn = await new_turn(store, redis_client, "returns?")
        async with running(worker):
            await wait_until(lambda: has_final(redis_client, turn))
            await wait_until(lambda: settled(redis_client))
        assert worker.metrics.turn_errors == 1
        assert shop.article_calls == 1
        calls = await store.tool_calls(turn.turn_id)
        assert len(calls) == 1 and calls[0].status is ToolCallStatus.OK
        assert await replies(store, turn.conversation_id) == 1
        assert len(finals(await events_of(redis_client, turn.conversation_id))) == 1
    finally:
        await store.close()


async def test_cancel_mid_generation(
    redis_client: aioredis.Redis,
    store: Repository,
    slow_generator: EngineGenerator,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A cancelled turn stops at once, is stored as cancelled and ends with a cancelled final."""
    worker = make_worker(redis_client, store, slow_generator, loaded[1], mode=LONG)
    turn = await new_turn(store, redis_client)

    async def drafting() -> bool:
        return any(
            isinstance(e, DraftEvent) for e in await events_of(redis_client, turn.conversation_id)
        )

    async with running(worker):
        await wait_until(drafting)
        started = time.monotonic()
        assert await Cancellation(redis_client).request(turn.conversation_id) == turn.turn_id
        await wait_until(lambda: has_final(redis_client, turn))
        stopped_in = time.monotonic() - started
        await wait_until(lambda: settled(redis_client))
    final = finals(await events_of(redis_client, turn.conversation_id))
    assert len(final) == 1 and final[0].status == "cancelled"
    assert stopped_in < 1.5  # the whole reply would take over 2.5 s
    (reply,) = [m for m in await store.history(turn.conversation_id) if m.role is Role.ASSISTANT]
    assert reply.status is MessageStatus.CANCELLED
    assert worker.metrics.turns == {"cancelled": 1}


async def test_stop_leaves_unfinished_turns_pending(
    redis_client: aioredis.Redis,
    store: Repository,
    slow_generator: EngineGenerator,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A stopping worker waits out its grace, then leaves the turn pending, unacked."""
    worker = make_worker(redis_client, store, slow_generator, loaded[1], mode=LONG, grace_s=0.3)
    turn = await new_turn(store, redis_client)
    async with running(worker):
        await wait_until(lambda: asyncio.sleep(0, result=bool(worker.turns)))
    pending = await redis_client.xpending(KEYS.turns, GROUP)
    assert pending["pending"] == 1 and await redis_client.xlen(KEYS.turns) == 1
    # The consumer stays in the group, or its pending turn would be dropped with it.
    assert [c["name"] for c in await redis_client.xinfo_consumers(KEYS.turns, GROUP)] == [
        b"test-worker"
    ]
    assert await replies(store, turn.conversation_id) == 0


async def test_human_owner_gets_no_reply(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A conversation a human took over: the turn is acked and nothing is generated."""
    turn = await new_turn(store, redis_client, submit=False)
    await store.set_owner(turn.conversation_id, Owner.HUMAN)
    await TurnQueue(redis_client).submit(turn)
    worker = make_worker(redis_client, store, *loaded)
    async with running(worker):
        await wait_until(lambda: settled(redis_client))
    assert await replies(store, turn.conversation_id) == 0
    assert await events_of(redis_client, turn.conversation_id) == []
    assert worker.metrics.turns == {"skipped": 1}


async def test_handoff_tool_gives_the_conversation_to_a_human(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """handoff_to_human (SQL shop) sets the owner, publishes a handoff, still replies."""
    tokenizer = loaded[1]
    script = Script(
        tokenizer, [tool_call("handoff_to_human", reason="customer_request"), "A colleague."]
    )
    worker = make_worker(redis_client, store, script, tokenizer)
    turn = await new_turn(store, redis_client, "a human please")
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
    events = await events_of(redis_client, turn.conversation_id)
    assert [e.type for e in events if not isinstance(e, DraftEvent)] == [
        "tool_call",
        "tool_result",
        "handoff",
        "final",
    ]
    assert next(e for e in events if isinstance(e, HandoffEvent)).owner == "human"
    conversation = await store.get_conversation(turn.conversation_id)
    assert conversation is not None and conversation.owner is Owner.HUMAN
    assert await replies(store, turn.conversation_id) == 1


async def activity_kinds(redis: aioredis.Redis, turn: TurnRequest) -> list[str]:
    notes = await ActivityLog(redis).read_after(turn.tenant_id, "0-0")
    assert {n.conversation_id for n in notes} <= {turn.conversation_id}
    return [n.kind for n in notes]


async def test_worker_notes_activity_for_handoff_and_final(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """With no gateway relaying, the tenant's activity stream gets the handoff and the final."""
    tokenizer = loaded[1]
    script = Script(tokenizer, [tool_call("handoff_to_human", reason="customer_request"), "Ok."])
    worker = make_worker(redis_client, store, script, tokenizer)
    turn = await new_turn(store, redis_client, "a human please")
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
    assert await activity_kinds(redis_client, turn) == ["handoff", "final"]


class BrokenShop(MemoryShop):
    """Tools misbehave: garbage from one, an exception from another, a hang from the third."""

    async def find_order(self, tenant_id: str, number: str, email: str) -> Any:
        return "garbage"

    async def article(self, tenant_id: str, topic: str) -> Article | None:
        raise RuntimeError("search index is down")

    async def open_ticket(self, *args: Any) -> str:
        await asyncio.sleep(30)
        return "T-1"


async def test_failing_tools_are_recorded_and_the_turn_still_replies(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """Garbage, an exception and a timeout are stored as errors; the turn ends with a reply."""
    tokenizer = loaded[1]
    script = Script(
        tokenizer,
        [
            tool_call("lookup_order", order_id="NW-1", email="a@b.co"),
            tool_call("search_kb", topic="returns"),
            tool_call("create_ticket", category="other"),
            "Sorry, our systems are slow today.",
        ],
    )
    worker = make_worker(redis_client, store, script, tokenizer, shop=BrokenShop(build_shop()))
    turn = await new_turn(store, redis_client, "help")
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
    calls = await store.tool_calls(turn.turn_id)
    assert [(c.name, c.status) for c in calls] == [
        ("lookup_order", ToolCallStatus.ERROR),
        ("search_kb", ToolCallStatus.ERROR),
        ("create_ticket", ToolCallStatus.TIMEOUT),
    ]
    assert all(c.error and c.finished_at for c in calls)
    assert "search index is down" in (calls[1].error or "")
    events = await events_of(redis_client, turn.conversation_id)
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [r.status for r in results] == ["error", "error", "timeout"]
    (final,) = finals(events)
    assert final.status == "complete" and final.text == "Sorry, our systems are slow today."
    assert worker.metrics.tool_errors == {"lookup_order": 1, "search_kb": 1, "create_ticket": 1}


@pytest.mark.parametrize(
    ("channel", "outputs", "problem", "honest"),
    [
        # The search ran (and was the wrong tool): no ticket was opened.
        (
            Channel.WIDGET,
            [tool_call("search_kb", topic="tickets"), "I've opened ticket T-12345."],
            "ticket",
            TICKET_FALLBACK,
        ),
        (Channel.WIDGET, ["A human agent will take over shortly."], "handoff", HANDOFF_FALLBACK),
        (Channel.WIDGET, ["Your order has shipped and is in transit."], "order", ORDER_FALLBACK),
        (Channel.TUTOR, ["Correct! Well done."], "verdict", VERDICT_FALLBACK),
    ],
    ids=["ticket", "handoff", "order", "verdict"],
)
async def test_every_claim_kind_without_its_tool_is_replaced_end_to_end(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
    channel: Channel,
    outputs: list[str],
    problem: str,
    honest: str,
) -> None:
    """A ticket, a handoff, order facts or a verdict with no tool behind them never reach the
    client: the stored reply, the final's usage and the metrics all carry the turn's problem."""
    tokenizer = loaded[1]
    worker = make_worker(redis_client, store, Script(tokenizer, outputs), tokenizer)
    turn = await new_turn(store, redis_client, "my order arrived broken", channel=channel)
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
    (final,) = finals(await events_of(redis_client, turn.conversation_id))
    assert final.status == "complete" and final.text == honest
    assert final.usage["problem"] == f"unsupported_claim:{problem}"
    reply = (await store.history(turn.conversation_id))[-1]
    assert reply.text == honest and reply.stats and reply.stats["problem"] == final.usage["problem"]
    assert worker.metrics.problems == {f"unsupported_claim:{problem}": 1}
    problems = value(
        worker.metrics.render(),
        "assistant_worker_reply_problems_total",
        problem=f"unsupported_claim:{problem}",
    )
    assert problems == 1


async def test_poison_turn_is_dead_lettered(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """A turn that always fails is dead-lettered; the client and the console hear of it."""
    turn = TurnRequest(
        turn_id=uuid.uuid4().hex,
        conversation_id="no-such-conversation",
        tenant_id="t",
        channel="widget",
        user_message_id="m",
    )
    await TurnQueue(redis_client).submit(turn)
    worker = make_worker(redis_client, store, *loaded, min_idle_ms=300)
    async with running(worker):
        await wait_until(lambda: settled(redis_client))
    (error,) = await events_of(redis_client, turn.conversation_id)
    assert isinstance(error, ErrorEvent) and error.code == "turn_failed"
    assert await redis_client.xlen(KEYS.dead) == 1
    assert await activity_kinds(redis_client, turn) == ["turn_failed"]
    assert worker.metrics.turn_errors == 2
    metrics = worker.metrics.render()
    assert value(metrics, "assistant_worker_dead_letters_total") == 1
    assert value(metrics, "assistant_worker_redeliveries_total") >= 1  # the second delivery
    assert value(metrics, "assistant_worker_queue_wait_seconds_count") == 1  # the first only


async def test_drafts_are_throttled_to_the_latest(redis_client: aioredis.Redis) -> None:
    """A burst of drafts yields the first at once and the latest after the interval."""
    turn = TurnRequest(
        turn_id="t1", conversation_id="c1", tenant_id="t", channel="widget", user_message_id="m"
    )
    publisher = TurnPublisher(EventLog(redis_client), turn, interval_s=0.05)

    def draft(step: int) -> DraftEvent:
        return DraftEvent(conversation_id="c1", turn_id="t1", text=f"d{step}", step=step)

    for step in range(1, 11):
        await publisher.draft(draft(step))
    await asyncio.sleep(0.2)  # the held d10 goes out after 50 ms; d11 then goes at once
    for step in range(11, 14):
        await publisher.draft(draft(step))
    await publisher.publish(
        FinalEvent(conversation_id="c1", turn_id="t1", message_id="x", text="done"),
        drop_draft=True,
    )
    await publisher.close()
    events = await events_of(redis_client, "c1")
    assert [(e.type, getattr(e, "step", None)) for e in events] == [
        ("draft", 1),
        ("draft", 10),
        ("draft", 11),
        ("final", None),
    ]


@pytest.fixture(scope="module")
def slow_checkpoint(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bigger random model that never ends early: seconds per reply in vanilla diffusion."""
    tok = train_tokenizer(
        [SUPPORT_SYSTEM, "Your order has shipped.", "hello"] * 20,
        vocab_size=400,
        added_words=added_words(),
    )
    sp = special_token_ids(tok)
    torch.manual_seed(1)
    config = tiny_config(tok, hidden_size=256, intermediate_size=512, num_hidden_layers=8)
    model = DLMModel(config)
    assert model.lm_head is not None
    with torch.no_grad():
        model.lm_head.weight[sp.end] = 0.0  # its logit is 0, below the best of 400 random ones
    path = tmp_path_factory.mktemp("slow-model")
    save_model(model, path)
    save_tokenizer(tok, path)
    return path


@pytest.mark.slow
async def test_killed_worker_process_turn_is_finished_by_another(
    private_redis: EmbeddedRedis,
    store: Repository,
    migrated_url: str,
    slow_checkpoint: Path,
) -> None:
    """``assistant worker`` SIGKILLed mid-turn: another worker takes over; one stored reply."""
    redis = aioredis.Redis.from_url(private_redis.url)
    env = {
        **os.environ,
        "ASSISTANT_REDIS_URL": private_redis.url,
        "ASSISTANT_DATABASE_URL": migrated_url,
        "ASSISTANT_MODEL_PATH": str(slow_checkpoint),
        "ASSISTANT_DEVICE": "cpu",
        # Vanilla diffusion recomputes the whole sequence every step: a slow reply.
        "ASSISTANT_DECODING_MODE": "vanilla-diffusion",
        "ASSISTANT_LOG_FORMAT": "json",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assistant",
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        turn = await new_turn(store, redis, "where is my order? " * 10)

        async def drafting() -> bool:
            return any(
                isinstance(e, DraftEvent) for e in await events_of(redis, turn.conversation_id)
            )

        await wait_until(drafting, limit_s=40)
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
        assert not await has_final(redis, turn), "the reply finished before the kill"
        script = Script(load_tokenizer(slow_checkpoint), ["Recovered."])
        worker = make_worker(redis, store, script, script.tokenizer, min_idle_ms=500)
        async with running(worker):
            await wait_until(lambda: has_final(redis, turn))
            await wait_until(lambda: settled(redis))
        events = await events_of(redis, turn.conversation_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        (final,) = finals(events)
        assert final.text == "Recovered."
        assert await replies(store, turn.conversation_id) == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await redis.aclose()


class Paced:
    """A null engine that drafts ``text`` for ``steps`` steps of ``step_s`` each, then ends."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerFast, text: str, steps: int = 5, step_s: float = 0.02
    ) -> None:
        self.ids = tokenizer.encode(text, add_special_tokens=False)
        self.text = text
        self.steps = steps
        self.step_s = step_s

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        rid, ids = request.request_id, self.ids
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.step_s)
            yield Draft(rid, step, ids, self.text, [], list(range(len(ids))), [], 0)
        yield Final(rid, ids, self.text, "end", Usage(self.steps, self.steps, len(ids), 1.0))

    def cancel(self, request_id: str) -> bool:
        return False


def short_retry_client(url: str) -> aioredis.Redis:
    """A client that gives up on a dead server after ~0.2 s (connect() rides out seconds)."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@pytest.mark.parametrize(
    ("client", "down_s"),
    [
        pytest.param(connect, 0.5, id="within-client-retries"),
        pytest.param(short_retry_client, 2.0, id="beyond-client-retries"),
    ],
)
async def test_redis_restart_while_workers_run(
    private_redis: EmbeddedRedis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
    client: Callable[[str], aioredis.Redis],
    down_s: float,
) -> None:
    """Redis (append-only) restarted under load: workers reconnect; no turn lost or doubled.

    Within the clients' retries a restart is invisible; beyond them, commands fail: the
    producer resubmits (as a gateway's client would) and the workers run cut-off turns again.
    """
    tokenizer = loaded[1]
    producer = client(private_redis.url)
    worker_clients = [client(private_redis.url) for _ in range(2)]
    workers = [
        make_worker(
            redis,
            store,
            Paced(tokenizer, "Back again."),
            tokenizer,
            consumer_name=f"w{i}",
            max_deliveries=10,  # a restart must not use up a turn's deliveries
        )
        for i, redis in enumerate(worker_clients)
    ]
    turns: list[TurnRequest] = []

    async def submit(count: int) -> None:
        for _ in range(count):
            turn = await new_turn(store, producer, submit=False)
            while True:
                try:
                    await TurnQueue(producer).submit(turn)
                    break
                except TurnInFlight as exc:
                    assert exc.duplicate
                    break  # an earlier try got it queued
                except (RedisConnectionError, RedisTimeoutError):
                    await asyncio.sleep(0.1)
            turns.append(turn)
            await asyncio.sleep(0.02)

    async def all_final() -> bool:
        return all([await has_final(producer, t) for t in turns])

    try:
        async with running(workers[0]), running(workers[1]):
            await submit(6)
            await wait_until(lambda: asyncio.sleep(0, result=any(w.turns for w in workers)))
            submitting = asyncio.create_task(submit(14))
            await asyncio.to_thread(private_redis.stop)  # SIGTERM: the append-only file is synced
            await asyncio.sleep(down_s)  # clients meet a refused connection meanwhile
            await asyncio.to_thread(private_redis.start)
            await submitting
            await wait_until(all_final, limit_s=40)
            await wait_until(lambda: settled(producer))
        for turn in turns:
            events = await events_of(producer, turn.conversation_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), turn.turn_id
            (final,) = finals(events)
            assert final.text == "Back again." and events[-1] == final
            assert await replies(store, turn.conversation_id) == 1
        assert await producer.xlen(KEYS.dead) == 0
    finally:
        for redis in (producer, *worker_clients):
            await redis.aclose()


async def test_conversation_longer_than_the_context_gets_a_reply(
    redis_client: aioredis.Redis,
    store: Repository,
    loaded: tuple[EngineGenerator, PreTrainedTokenizerFast],
) -> None:
    """The oldest exchanges are left out of the prompt instead of the turn failing."""
    generator, tokenizer = loaded
    first = await new_turn(store, redis_client, "hello", submit=False)
    chatter = "Your order has shipped and will arrive soon, " * 8
    for i in range(30):
        turn_id = f"old-{i}-{uuid.uuid4().hex[:6]}"
        await store.add_user_message(first.conversation_id, chatter, f"m-{turn_id}", turn_id)
        await store.store_reply(first.conversation_id, turn_id, chatter)
    history = await HistoryLoader(store.engine).load(first.conversation_id, turn_id)
    assert len(encode_chat(tokenizer, model_messages("widget", history))) > (
        generator.context or 0
    )  # the whole history alone would not fit
    turn = await new_turn(
        store,
        redis_client,
        "where is my order?",
        conversation_id=first.conversation_id,
        tenant_id=first.tenant_id,
    )
    worker = make_worker(redis_client, store, *loaded)
    async with running(worker):
        await wait_until(lambda: has_final(redis_client, turn))
        await wait_until(lambda: settled(redis_client))
    (final,) = finals(await events_of(redis_client, turn.conversation_id))
    assert final.turn_id == turn.turn_id and final.text
    assert worker.metrics.turn_errors == 0 and await redis_client.xlen(KEYS.dead) == 0
