"""Load-adaptive parallelism: the pure chooser (dlm_runtime.parallelism), the device
calibration and the ADAPTIVE pattern in the engine, on a tiny random model, CPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime import load_model
from dlm_runtime.engine import Draft, Engine, Pattern
from dlm_runtime.engine.calibrate import measure_forward_cost, row_counts
from dlm_runtime.modeling import DLMModel
from dlm_runtime.parallelism import BLOCK_LENGTHS, CommitRate, ForwardCost, Parallelism
from dlm_runtime.policies import fast
from tests.runtime.test_engine import (
    collect,
    final,
    greedy_without_cache,
    prefix_causal_without_cache,
    prompt,
    req,
    run_all,
)
from tests.runtime.test_llada import write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LENGTHS = (1, 2, 4, 8)


def flat_cost(lengths: tuple[int, ...] = LENGTHS) -> ForwardCost:
    """Latency-bound everywhere: a forward costs the same whatever its positions."""
    return ForwardCost({(rows, q): 0.01 for rows in (1, 16) for q in lengths})


def compute_bound_cost() -> ForwardCost:
    """Every position costs the same and nothing else does: the causal step always wins."""
    return ForwardCost({(rows, q): 0.001 * rows * (q + 1) for rows in (1, 16) for q in LENGTHS})


def switching_cost() -> ForwardCost:
    """One row: latency-bound (full blocks); two rows or more: compute-bound (causal steps)."""
    table = {(1, q): 0.01 for q in LENGTHS}
    table.update({(2, q): 0.01 * q for q in LENGTHS})
    return ForwardCost(table)


# --- the chooser -------------------------------------------------------------------------------


def test_forward_cost_interpolates_between_measured_rows_and_scales_beyond() -> None:
    cost = ForwardCost({(1, 8): 0.01, (4, 8): 0.04, (1, 1): 0.005, (4, 1): 0.006})
    assert cost.positions == (1, 8)
    assert cost.seconds(1, 8) == pytest.approx(0.01)
    assert cost.seconds(2, 8) == pytest.approx(0.02)
    assert cost.seconds(8, 8) == pytest.approx(0.08)  # beyond the table: in proportion
    with pytest.raises(KeyError, match="4 positions"):
        cost.seconds(2, 4)


@pytest.mark.parametrize("bad", [{}, {(0, 1): 0.1}, {(1, 1): 0.0}, {(1, 1): float("inf")}])
def test_forward_cost_rejects_bad_tables(bad: dict[tuple[int, int], float]) -> None:
    with pytest.raises(ValueError):
        ForwardCost(bad)


def test_commit_rate_starts_from_the_prior_and_learns() -> None:
    rates = CommitRate(prior_share=0.5, prior_weight=4)
    assert rates.rate(1) == 1.0
    assert rates.rate(8) == pytest.approx(4.0)
    rates.observe(8, tokens=8, forwards=4)  # 2 per forward, as much weight as the prior
    assert rates.rate(8) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        rates.observe(8, tokens=8, forwards=0)


def test_parallelism_follows_the_cost_of_a_forward() -> None:
    latency_bound = Parallelism(flat_cost())
    assert latency_bound.block_length(8, rows=16) == 8
    assert latency_bound.block_length(3, rows=1) == 2  # no longer than the room left
    compute_bound = Parallelism(compute_bound_cost())
    assert compute_bound.block_length(8, rows=1) == 1
    switching = Parallelism(switching_cost())
    assert switching.plan([1, 2, 8], 8) == {1: 8, 2: 1, 8: 1}
    with pytest.raises(ValueError):
        switching.block_length(0)


def test_the_rows_running_now_are_the_default() -> None:
    chooser = Parallelism(switching_cost())
    chooser.rows = 1
    assert chooser.block_length(8) == 8
    chooser.rows = 5
    assert chooser.block_length(8) == 1


# --- calibration -------------------------------------------------------------------------------


def test_row_counts_are_powers_of_two_up_to_the_batch() -> None:
    assert row_counts(1) == [1]
    assert row_counts(6) == [1, 2, 4, 6]
    assert row_counts(16) == [1, 2, 4, 8, 16]


def test_calibration_measures_every_shape(dlm: DLMModel) -> None:
    cost = measure_forward_cost(dlm, torch.device("cpu"), max_rows=3, lengths=(1, 4), reps=1)
    assert set(cost.seconds_by_shape) == {(r, q) for r in (1, 2, 3) for q in (1, 4)}
    assert all(seconds > 0 for seconds in cost.seconds_by_shape.values())


# --- the engine --------------------------------------------------------------------------------


async def test_compute_bound_adaptive_decoding_is_autoregressive(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """With every extra position costly, each step is a causal one-token step: the reply is
    the autoregressive greedy reply, batched or not."""
    prompts = [prompt(4, seed=3), prompt(13, seed=4), prompt(1, seed=5)]
    policy = fast(threshold=0.6, block_size=8, max_new_tokens=30)
    async with Engine(dlm, tok, parallelism=Parallelism(compute_bound_cost())) as engine:
        results = await run_all(
            engine, [req(f"r{i}", p, policy, Pattern.ADAPTIVE) for i, p in enumerate(prompts)]
        )
    for i, p in enumerate(prompts):
        assert final(results[f"r{i}"]).token_ids == greedy_without_cache(dlm, p, 30)


async def test_latency_bound_adaptive_decoding_is_fast_diffusion(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """With positions free and whole blocks or causal steps to choose from, every block is
    the policy's whole block (it never commits less than a token per forward): the reply is
    prefix-causal fast diffusion's."""
    prompts = [prompt(6, seed=1), prompt(11, seed=2)]
    policy = fast(threshold=0.6, block_size=8, max_new_tokens=24)
    async with Engine(dlm, tok, parallelism=Parallelism(flat_cost((1, 8)))) as engine:
        results = await run_all(
            engine,
            [req(f"r{i}", p, policy, Pattern.ADAPTIVE, seed=7 + i) for i, p in enumerate(prompts)],
        )
    for i, p in enumerate(prompts):
        want = prefix_causal_without_cache(dlm, p, policy, seed=7 + i)
        assert final(results[f"r{i}"]).token_ids == want


async def test_block_length_follows_the_rows_running(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Alone, a request drafts whole blocks; beside three others it steps one token at a time
    (each draft commits one position and shows no mask)."""
    policy = fast(threshold=0.99, block_size=8, max_new_tokens=16)
    mask_id = int(dlm.config.mask_token_id)
    chooser = Parallelism(switching_cost())
    async with Engine(dlm, tok, parallelism=chooser) as engine:
        alone = await collect(engine, req("alone", prompt(5, seed=1), policy, Pattern.ADAPTIVE))
        many = await run_all(
            engine, [req(f"m{i}", prompt(5, seed=i), policy, Pattern.ADAPTIVE) for i in range(4)]
        )
    first = alone[0]
    assert isinstance(first, Draft) and mask_id in first.token_ids
    for events in many.values():
        draft = events[0]
        assert isinstance(draft, Draft)
        assert len(draft.committed) == 1 and mask_id not in draft.token_ids


async def test_blocks_teach_the_commit_rate(tok: PreTrainedTokenizerFast, dlm: DLMModel) -> None:
    chooser = Parallelism(flat_cost())
    policy = fast(threshold=0.6, block_size=4, max_new_tokens=24)
    async with Engine(dlm, tok, parallelism=chooser) as engine:
        await collect(engine, req("r", prompt(6, seed=2), policy, Pattern.ADAPTIVE))
    assert chooser.rates.rate(4) != chooser.rates.prior(4)


async def test_the_engine_calibrates_at_the_first_adaptive_request(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    policy = fast(threshold=0.6, block_size=4, max_new_tokens=8)
    async with Engine(dlm, tok, max_batch=2) as engine:
        assert engine.info.parallelism is None
        await collect(engine, req("r", prompt(6, seed=2), policy))
        assert engine.info.parallelism is None  # only an adaptive request needs it
        reply = final(await collect(engine, req("a", prompt(6, seed=2), policy, Pattern.ADAPTIVE)))
        assert reply.finish_reason in ("end", "length")
        parallelism = engine.info.parallelism
        assert parallelism is not None
        assert set(parallelism.cost.seconds_by_shape) == {
            (rows, q) for rows in (1, 2) for q in BLOCK_LENGTHS
        }


async def test_a_bidirectional_model_refuses_the_adaptive_pattern(
    tok: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    write_checkpoint(tmp_path, "tied-gqa")
    policy = fast(block_size=4, max_new_tokens=8)
    async with Engine(load_model(tmp_path), tok) as engine:
        with pytest.raises(ValueError, match="ADAPTIVE"):
            await engine.submit(req("r", [1, 2, 3, 4], policy, Pattern.ADAPTIVE))
    await asyncio.sleep(0)


def test_a_choice_is_remade_once_the_rates_have_moved() -> None:
    """Choices are cached per row count and remade after RECHOOSE_EVERY finished blocks."""
    from dlm_runtime.parallelism import RECHOOSE_EVERY

    chooser = Parallelism(ForwardCost({(1, 1): 0.01, (1, 8): 0.02}))
    assert chooser.block_length(8, rows=1) == 8  # prior: 3.6 tokens per 8-position forward
    for _ in range(RECHOOSE_EVERY - 1):
        chooser.rates.observe(8, tokens=8, forwards=8)  # really one token per forward
    assert chooser.block_length(8, rows=1) == 8  # still the cached choice
    chooser.rates.observe(8, tokens=8, forwards=8)
    assert chooser.block_length(8, rows=1) == 1
