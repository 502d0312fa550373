"""The engine's per-step work outside the model, done with fewer tensor ops: the same inputs,
cache contents and tokens as the row-by-row code it replaced."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime.engine import BatchBuilder, Engine, KVPool, Query
from dlm_runtime.engine.batching import CacheWrite, causal_ranks, prefix_ranks
from dlm_runtime.engine.runner import TokenRunner
from dlm_runtime.engine.states import RequestState
from dlm_runtime.modeling import DLMModel
from dlm_runtime.policies import BlockState, fast, fast_revise
from tests.runtime.test_engine import collect, final, mixed_requests, run_all

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def row_by_row(
    queries: Sequence[Query], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, positions and mask as the builder made them one row at a time (the spec)."""
    lengths = [int(q.tokens.shape[0]) for q in queries]
    b, t = len(queries), max(lengths)
    s = max(q.cache_len for q in queries)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    pos = torch.zeros((b, t), dtype=torch.long)
    q_rank = torch.full((b, t), -1, dtype=torch.long)
    k_rank = torch.full((b, t), t + 1, dtype=torch.long)
    for i, (q, n) in enumerate(zip(queries, lengths, strict=True)):
        ids[i, :n] = q.tokens
        pos[i, :n] = torch.arange(n) + q.start if q.positions is None else q.positions
        q_rank[i, :n] = 0 if q.ranks is None else q.ranks
        k_rank[i, :n] = 0 if q.ranks is None else q.ranks
    mask = k_rank[:, None, :] <= q_rank[:, :, None]
    if s:
        valid = torch.arange(s)[None, :] < torch.tensor([q.cache_len for q in queries])[:, None]
        mask = torch.cat([valid[:, None, :] & (q_rank >= 0)[:, :, None], mask], dim=-1)
    return ids, pos, mask[:, None]


def random_query(rng: random.Random, cache: int) -> Query:
    n = rng.randint(1, 12)
    tokens = torch.tensor(rng.choices(range(20, 300), k=n))
    kind = rng.choice(["full", "causal", "prefix", "positions"])
    cached = rng.randint(0, cache)
    if kind == "causal":
        return Query(tokens, cached, cached, causal_ranks(n, torch.device("cpu")), n - 1)
    if kind == "prefix":
        pending = rng.randint(0, n - 1)
        ranks = prefix_ranks(pending, n - pending, torch.device("cpu"))
        return Query(tokens, cached, cached, ranks, logits_from=pending)
    if kind == "positions":  # a block-cache step: masked positions between committed ones
        where = sorted(rng.sample(range(16), n))
        return Query(tokens, cached, cached, None, positions=torch.tensor(where) + cached)
    return Query(tokens, cached, cached, None)


@pytest.mark.parametrize("seed", range(40))
def test_batch_inputs_equal_the_row_by_row_build(seed: int) -> None:
    """Padding, positions, ranks and cache masks come out as the per-row loop made them."""
    rng = random.Random(seed)
    cache = rng.choice([0, 5, 30])
    queries = [random_query(rng, cache) for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.3:  # rows of one shape: no padding
        queries = [queries[0]] * len(queries)
    builder = BatchBuilder(torch.device("cpu"), pad_id=7)
    batch = builder.build(queries, KVPool(len(queries)))
    if batch.position_ids is None:  # the plain call: unchanged, and not what this tests
        return
    ids, pos, mask = row_by_row(queries, pad_id=7)
    assert batch.attention_mask is not None
    assert torch.equal(batch.input_ids, ids)
    assert torch.equal(batch.position_ids, pos)
    assert torch.equal(batch.attention_mask, mask)


def one_by_one(w: CacheWrite) -> list[CacheWrite]:
    """``w`` as one-position writes, which take the indexed copy."""
    at = w.staged_at
    return [
        CacheWrite(w.row, w.start + j, 1, staged_at=None if at is None else at + j)
        for j in range(w.count)
    ]


@pytest.mark.parametrize("staged", [False, True])
@pytest.mark.parametrize("counts", [(6,), (9, 8), (4, 12)])
def test_cache_writes_by_slices_equal_the_indexed_copy(
    staged: bool, counts: tuple[int, ...]
) -> None:
    """One write (one request), or writes of 8 positions or more on average, are copied by
    slices; they fill the same slots as the indexed copy, whichever batch row they come from."""
    torch.manual_seed(0)
    kv = [(torch.randn(3, 2, 16, 4), torch.randn(3, 2, 16, 4)) for _ in range(2)]
    at = 2 if staged else None
    writes = [
        CacheWrite(row, start, count, staged_at=at)
        for row, start, count in zip((2, 3), (1, 0), counts, strict=False)
    ]
    slices, indexed = KVPool(4), KVPool(4)
    for pool in (slices, indexed):
        pool.write(kv, [CacheWrite(r, 0, 5) for r in range(1, 4)], first_row=1)
    slices.write(kv, writes, first_row=1)
    indexed.write(kv, [one for w in writes for one in one_by_one(w)], first_row=1)
    assert slices.lengths == indexed.lengths and slices.staged == indexed.staged
    a, b = slices.view(4, 20), indexed.view(4, 20)
    assert a is not None and b is not None
    for (k1, v1), (k2, v2) in zip(a, b, strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    base = 5 + (at or 0)
    assert torch.equal(a[0][0][2, :, base : base + counts[0]], kv[0][0][1, :, 1 : 1 + counts[0]])


async def test_one_forward_steps_move_no_cache_rows(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Rows are sorted by length only for a plan of several forwards; a step whose rows all go
    in one forward leaves them where they are, and every request's tokens stay as alone."""
    requests = mixed_requests()
    async with Engine(dlm, tok) as engine:
        alone = {r.request_id: final(await collect(engine, r)).token_ids for r in requests}
    steps: list[list[object]] = []  # per step: [forwards, swaps, lengths of its rows]
    async with Engine(dlm, tok) as engine:
        runner = engine.runner
        assert isinstance(runner, TokenRunner)
        step, forward, swap = engine._step, runner._forward_rows, engine._pool.swap

        def counted_step() -> None:
            steps.append([0, 0, []])
            step()

        def counted_forward(
            active: list[RequestState], first: int, queries: Sequence[Query], *rest: object
        ) -> None:
            steps[-1][0] += 1  # type: ignore[operator]
            steps[-1][2].extend(int(q.tokens.shape[0]) for q in queries)  # type: ignore[attr-defined]
            forward(active, first, queries, *rest)  # type: ignore[arg-type]

        def counted_swap(a: int, b: int) -> None:
            steps[-1][1] += 1  # type: ignore[operator]
            swap(a, b)

        engine._step = counted_step  # type: ignore[method-assign]
        runner._forward_rows = counted_forward  # type: ignore[assignment]
        engine._pool.swap = counted_swap  # type: ignore[method-assign]
        together = await run_all(engine, requests)
    assert {rid: final(ev).token_ids for rid, ev in together.items()} == alone
    single = [s for s in steps if s[0] == 1]
    assert all(s[1] == 0 for s in single)
    assert any(len(set(s[2])) > 1 for s in single)  # unsorted rows did share a forward
    assert any(s[1] for s in steps if s[0] > 1)  # and split plans still sort


@pytest.mark.parametrize("revise", [False, True])
def test_step_reports_done_and_revisions_as_the_block_state(revise: bool) -> None:
    """The step's block_done is the block's done after it; revisions are listed only when
    made; an all-masked step (no row copy) chooses as the masked-rows path would."""
    policy = (
        fast_revise(0.7, 0.3, block_size=8, max_new_tokens=8)
        if revise
        else fast(threshold=0.7, block_size=8, max_new_tokens=8)
    )
    gen = torch.Generator().manual_seed(3)
    block = BlockState(policy, 8, mask_id=1, end_id=2)
    revised = 0
    while not block.done:
        logits = torch.randn(8, 50, generator=gen) * 4
        before = block.x.clone()
        result = block.step(logits)
        assert result.block_done == block.done
        assert result.revised == [j for j in range(8) if before[j] != 1 and block.x[j] == 1]
        revised += len(result.revised)
        masked = before == 1
        if bool(masked.all()):  # the first step: argmax where confident, as row by row
            expected = torch.argmax(logits, dim=-1)
            assert all(int(block.x[j]) == int(expected[j]) for j in result.committed)
    assert revise or revised == 0


async def test_engine_counts_its_cpu_time_outside_the_model(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """busy_cpu_seconds holds forward_cpu_seconds; the difference per forward is the
    engine's own work, which the benchmark reports."""
    async with Engine(dlm, tok) as engine:
        await run_all(engine, mixed_requests()[:3])
    stats = engine.stats
    assert stats.busy_cpu_seconds > stats.forward_cpu_seconds > 0
    assert stats.cpu_overhead_per_forward == pytest.approx(
        (stats.busy_cpu_seconds - stats.forward_cpu_seconds) / stats.forward_passes
    )
