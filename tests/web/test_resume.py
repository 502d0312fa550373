"""Two gateways and a real worker: a reply followed on one gateway, resumed on the other.

A tiny random model (it writes garbage) slowed to a few ms per forward pass, so a reply
takes long enough to drop the socket in the middle of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch

from assistant.agent.prompting import SUPPORT_SYSTEM
from assistant.bus.streams import EventLog
from assistant.core.config import Settings
from assistant.lab.corpus.build import added_words
from assistant.store.repository import Repository
from assistant.store.tables import MessageStatus, Role
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.engine import Engine
from dlm_runtime.loading import load_model, save_model
from dlm_runtime.modeling import DLMModel
from dlm_runtime.policies import fixed_schedule
from dlm_runtime.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from tests.tiny_models import Slow, tiny_config
from tests.web.conftest import GatewayFactory, Tenant, client, of_type
from workers.generator import EngineGenerator
from workers.worker import Worker, WorkerOptions
from workers.worker_metrics import Metrics

pytestmark = pytest.mark.slow

LONG = DecodingMode(
    "long", Pattern.PREFIX_CAUSAL, fixed_schedule(steps=64, gen_length=64, block_length=16)
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    texts = [SUPPORT_SYSTEM, "Your order has shipped.", '{"name": "search_kb"}', "hello"] * 20
    tok = train_tokenizer(texts, vocab_size=400, added_words=added_words())
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    save_model(DLMModel(tiny_config(tok)), path)
    save_tokenizer(tok, path)
    yield path
    torch.set_num_threads(before)


@contextlib.asynccontextmanager
async def running_worker(
    redis: aioredis.Redis, store: Repository, checkpoint: Path
) -> AsyncIterator[Worker]:
    tokenizer = load_tokenizer(checkpoint)
    generator = EngineGenerator(Engine(Slow(load_model(checkpoint), 0.01), tokenizer, max_batch=2))
    worker = Worker(
        redis,
        store,
        generator,
        tokenizer,
        options=WorkerOptions(
            consumer_name="gateway-test-worker",
            claim_block_ms=100,
            draft_interval_s=0.01,
            grace_s=5.0,
        ),
        mode=LONG,
        metrics=Metrics(),
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(generator.close(), 30)


async def test_resume_on_another_gateway_gets_every_event_once(
    start_gateway: GatewayFactory,
    settings: Settings,
    tenant: Tenant,
    store: Repository,
    redis_client: aioredis.Redis,
    checkpoint: Path,
) -> None:
    """Start on gateway A, drop the socket mid-reply, resume on B: each event once, in order."""
    gateway_a, gateway_b = await start_gateway(), await start_gateway()
    async with running_worker(redis_client, store, checkpoint):
        async with client(gateway_a) as a:
            ready = await a.hello(tenant.public_key)
            cid, token = ready["conversation_id"], ready["conversation_token"]
            await a.send(type="user_message", id="q1", text="Where is my order?")
            for _ in range(3):
                await a.until(of_type("draft"))
            seen_on_a = [f for f in a.seen if "seq" in f]
            a.ws.transport.abort()  # dropped, not closed: no goodbye
        async with client(gateway_b) as b:
            resumed = await b.hello(
                tenant.public_key,
                conversation_id=cid,
                conversation_token=token,
                resume_from=seen_on_a[-1]["seq"],
            )
            assert resumed["type"] == "ready" and resumed["conversation_id"] == cid
            final = await b.until(of_type("final"))
            seen_on_b = [f for f in b.seen if "seq" in f]
    assert final["status"] == "complete"
    seqs = [f["seq"] for f in seen_on_a + seen_on_b]
    log = await EventLog(redis_client).read_from(cid, 0)
    assert seqs == [e.seq for e in log]  # every event exactly once, in order
    assert [f["type"] for f in seen_on_a + seen_on_b] == [e.type for e in log]
    assert seen_on_b[0]["type"] == "draft"  # the drop really was mid-reply
    replies = [m for m in await store.history(cid) if m.role is Role.ASSISTANT]
    assert [(m.id, m.status) for m in replies] == [(final["message_id"], MessageStatus.COMPLETE)]


async def test_message_in_flight_cancels_with_a_real_worker(
    start_gateway: GatewayFactory,
    tenant: Tenant,
    store: Repository,
    redis_client: aioredis.Redis,
    checkpoint: Path,
) -> None:
    """A second message mid-reply: the first reply ends cancelled, the second completes."""
    gateway = await start_gateway()
    async with running_worker(redis_client, store, checkpoint), client(gateway) as c:
        ready = await c.hello(tenant.public_key)
        await c.send(type="user_message", id="q1", text="Where is my order?")
        first = await c.until(of_type("user_message", client_id="q1"))
        await c.until(of_type("draft", turn_id=first["turn_id"]))
        await c.send(type="user_message", id="q2", text="Never mind, hello!")
        cancelled = await c.until(of_type("final", turn_id=first["turn_id"]))
        second = await c.until(of_type("user_message", client_id="q2"))
        done = await c.until(of_type("final", turn_id=second["turn_id"]))
    assert (cancelled["status"], done["status"]) == ("cancelled", "complete")
    statuses = [
        m.status for m in await store.history(ready["conversation_id"]) if m.role is Role.ASSISTANT
    ]
    assert statuses == [MessageStatus.CANCELLED, MessageStatus.COMPLETE]
