"""Block steps that compute only what changed (Pattern.BLOCK_CACHE): exact where nothing is
reused, the approximation computed by hand elsewhere, and the cache pool's staged slots."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime.attention import KV, block_causal_mask, kv_concat, kv_slice
from dlm_runtime.engine import Draft, Engine, Event, KVPool, Pattern
from dlm_runtime.engine.batching import CacheWrite
from dlm_runtime.modeling import DLMModel
from dlm_runtime.policies import BlockState, DecodingPolicy, fast, fast_revise
from tests.runtime.test_engine import (
    collect,
    final,
    prefix_causal_without_cache,
    prompt,
    reply_block,
    req,
)
from tests.tiny_models import Slow

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def block_cache_by_hand(
    model: nn.Module, prompt_ids: list[int], policy: DecodingPolicy, seed: int
) -> tuple[list[int], int]:
    """The BLOCK_CACHE approximation with plain model calls: the causal K/V of prompt +
    finished blocks computed afresh per block; a block's first step runs all its positions,
    each later one the positions the step before committed (whose K/V are kept from then on)
    and those still masked. Returns the reply and the forwards its blocks took."""
    cfg: Any = model.config
    gen = torch.Generator().manual_seed(seed)
    reply: list[int] = []
    forwards = 0
    for length in policy.block_lengths():
        block = reply_block(cfg, policy, length, len(prompt_ids), len(reply))
        context = torch.tensor(prompt_ids + reply)
        n = int(context.shape[0])
        ranks = torch.arange(n)
        with torch.inference_mode():
            causal = block_causal_mask(ranks, ranks)
            past: KV = model(context[None], attention_mask=causal).new_key_values
            staged: KV | None = None
            rows = torch.arange(length)
            fresh = 0
            while not block.done:
                kv = past if staged is None else kv_concat(past, staged)
                out = model(block.x[rows][None], (rows + n)[None], None, kv)
                forwards += 1
                if fresh:
                    new = kv_slice(out.new_key_values, 0, fresh)
                    staged = new if staged is None else kv_concat(staged, new)
                # The full block's logits, with those of the rows not computed zeroed: a
                # greedy policy reads only the masked rows'.
                logits = torch.zeros(length, out.logits.shape[-1])
                logits[rows[fresh:]] = out.logits[0, fresh:]
                block.step(logits, generator=gen)
                just = torch.nonzero(block.committed_at == block.step_index - 1).flatten()
                rows = torch.cat([just, torch.nonzero(block.masked).flatten()])
                fresh = int(just.shape[0])
        tokens = block.x.tolist()
        if block.reply_done and block.end_index is not None:
            return reply + tokens[: block.end_index], forwards
        reply += tokens
    return reply, forwards


async def test_blocks_decoded_in_one_step_equal_prefix_causal(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """A block's first step reuses nothing: when every block commits at once (threshold near
    0), the reply and its forwards are PREFIX_CAUSAL's, alone and batched."""
    policy = fast(threshold=1e-9, block_size=6, max_new_tokens=20)
    prompts = [prompt(6, seed=1), prompt(11, seed=2), prompt(3, seed=3)]
    async with Engine(dlm, tok) as engine:
        got = await asyncio.gather(
            *(
                collect(engine, req(f"c{i}", p, policy, Pattern.BLOCK_CACHE))
                for i, p in enumerate(prompts)
            )
        )
        want = await asyncio.gather(
            *(
                collect(engine, req(f"p{i}", p, policy, Pattern.PREFIX_CAUSAL))
                for i, p in enumerate(prompts)
            )
        )
    for a, b in zip(got, want, strict=True):
        assert final(a).token_ids == final(b).token_ids
        assert final(a).usage.forward_passes == final(b).usage.forward_passes


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
async def test_first_step_is_the_plain_step(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, threshold: float
) -> None:
    """The first draft (first block, nothing committed yet) equals PREFIX_CAUSAL's exactly."""
    policy = fast(threshold=threshold, block_size=8, max_new_tokens=24)
    p = prompt(9, seed=4)
    async with Engine(dlm, tok) as engine:
        cached = await collect(engine, req("c", p, policy, Pattern.BLOCK_CACHE))
        plain = await collect(engine, req("p", p, policy, Pattern.PREFIX_CAUSAL))
    first, reference = cached[0], plain[0]
    assert isinstance(first, Draft) and isinstance(reference, Draft)
    assert (first.token_ids, first.committed) == (reference.token_ids, reference.committed)


@pytest.mark.parametrize(
    "policy",
    [
        fast(threshold=0.5, block_size=8, max_new_tokens=24),
        fast(threshold=0.8, block_size=5, max_new_tokens=23),
        fast(threshold=0.95, block_size=4, max_new_tokens=16),
    ],
    ids=["t0.5-b8", "t0.8-b5", "t0.95-b4"],
)
async def test_engine_equals_the_approximation_by_hand(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, policy: DecodingPolicy
) -> None:
    """Float32, alone and in a batch whose rows differ in length (so rows are swapped and
    moved with their staged K/V): the engine's reply and forwards are the hand-made ones'."""
    prompts = [prompt(6, seed=1), prompt(11, seed=2), prompt(2, seed=5)]
    requests = [
        req(f"c{i}", p, policy, Pattern.BLOCK_CACHE, seed=7 + i) for i, p in enumerate(prompts)
    ]
    async with Engine(dlm, tok) as engine:
        alone = [final(await collect(engine, r)) for r in requests]
        together = [final(e) for e in await asyncio.gather(*(collect(engine, r) for r in requests))]
    reused = False
    for i, p in enumerate(prompts):
        want, forwards = block_cache_by_hand(dlm, p, policy, seed=7 + i)
        for got in (alone[i], together[i]):
            assert got.token_ids == want
            assert got.usage.forward_passes == forwards
        blocks = -(-len(want) // policy.block_size)
        reused |= forwards > blocks
    assert reused, "no block took a second step: nothing was reused"


async def test_a_revising_policy_decodes_as_prefix_causal(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Revision reads committed positions' logits, so nothing is skipped for it."""
    policy = fast_revise(0.7, 0.3, block_size=4, max_new_tokens=16)
    p = prompt(7, seed=6)
    async with Engine(dlm, tok) as engine:
        got = final(await collect(engine, req("c", p, policy, Pattern.BLOCK_CACHE, seed=3)))
    assert got.token_ids == prefix_causal_without_cache(dlm, p, policy, seed=3)


async def test_cancelling_a_row_moves_the_next_with_its_staged_slots(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Rows are swapped as their queries' lengths change, and a cancelled row's place is
    taken by the last row: staged K/V go along, so the other requests decode as they do
    alone, and the cancelled row leaves the next step."""
    policy = fast(threshold=0.9, block_size=8, max_new_tokens=40)
    prompts = [prompt(5, seed=8), prompt(9, seed=9), prompt(4, seed=10)]
    requests = [req(f"r{i}", p, policy, Pattern.BLOCK_CACHE, seed=i) for i, p in enumerate(prompts)]
    slow = Slow(dlm, 0.002)
    async with Engine(slow, tok) as engine:
        alone = [final(await collect(engine, r)).token_ids for r in requests[1:]]
        streams = [await engine.submit(r) for r in requests]

        async def drain(i: int) -> list[Event]:
            events: list[Event] = []
            async for event in streams[i]:
                events.append(event)
                if i == 0 and isinstance(event, Draft) and event.step == 3:
                    assert engine.cancel("r0")
            return events

        results = await asyncio.gather(*(drain(i) for i in range(3)))
        batches = list(engine.stats.batches)
    assert final(results[0]).finish_reason == "cancelled"
    last = max(i for i, batch in enumerate(batches) if "r0" in batch)
    assert len(batches[last]) == 3 and set(batches[last + 1]) == {"r1", "r2"}
    assert [final(e).token_ids for e in results[1:]] == alone


def test_a_step_on_the_masked_rows_logits_equals_one_on_the_whole_block() -> None:
    policy = fast(threshold=0.6, block_size=6, max_new_tokens=12)
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    whole, part = (BlockState(policy, 6, 1, end_id=2, fill_id=0) for _ in range(2))
    for block in (whole, part):
        block.x[[0, 3]] = 9
    a = whole.step(logits)
    b = part.step(logits[[1, 2, 4, 5]], masked_only=True)
    assert a == b and whole.x.tolist() == part.x.tolist()
    revising = BlockState(fast_revise(0.6, 0.3, block_size=6), 6, 1, end_id=2, fill_id=0)
    with pytest.raises(ValueError, match="committed positions"):
        revising.step(logits, masked_only=True)


def fake_kv(values: list[float]) -> KV:
    """One layer whose K/V at output position i hold ``values[i]``, ``[1, 1, T, 1]``."""
    t = torch.tensor(values)[None, None, :, None]
    return [(t, t.clone())]


def cached(pool: KVPool, row: int, length: int) -> list[float]:
    view = pool.view(row + 1, length)
    assert view is not None
    values: list[float] = view[0][0][row, 0, :, 0].tolist()
    return values


def test_pool_stages_after_the_cache_and_carries_staged_slots() -> None:
    pool = KVPool(3)
    pool.write(fake_kv([1, 2, 3]), [CacheWrite(0, 0, 3)])
    pool.write(fake_kv([7, 8, 9]), [CacheWrite(0, 1, 2, staged_at=0)])
    pool.write(fake_kv([5, 6]), [CacheWrite(0, 1, 1, staged_at=2)])
    assert (pool.lengths[0], pool.staged[0]) == (3, 3)
    assert cached(pool, 0, 6) == [1, 2, 3, 8, 9, 6]
    assert pool.read(0)[0][0][0, 0, :, 0].tolist() == [1, 2, 3]  # the causal prefix only
    pool.swap(0, 2)
    assert (pool.lengths, pool.staged) == ([0, 0, 3], [0, 0, 3])
    assert cached(pool, 2, 6) == [1, 2, 3, 8, 9, 6]
    pool.move(2, 1)
    assert (pool.lengths, pool.staged) == ([0, 3, 0], [0, 3, 0])
    assert cached(pool, 1, 6) == [1, 2, 3, 8, 9, 6]
    # A staged write at 0 starts the block's slots afresh; a kept write goes over them.
    pool.write(fake_kv([4]), [CacheWrite(1, 0, 1, staged_at=0)], first_row=1)
    assert pool.staged[1] == 1 and cached(pool, 1, 4) == [1, 2, 3, 4]
    pool.write(fake_kv([10, 11]), [CacheWrite(1, 0, 2)], first_row=1)
    assert (pool.lengths[1], pool.staged[1]) == (5, 0)
    assert cached(pool, 1, 5) == [1, 2, 3, 10, 11]
    pool.write(fake_kv([12]), [CacheWrite(1, 0, 1, staged_at=0)], first_row=1)
    pool.clear(1)
    assert (pool.lengths[1], pool.staged[1]) == (0, 0)
