"""Load-adaptive self-speculation: the pure mask chooser (dlm_runtime.parallelism) and the
SPECULATIVE pattern with the policy param ``adaptive`` in the engine, which drafts with as
many masks as the load calls for and still replies as autoregressive decoding does."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime.engine import Engine, Pattern
from dlm_runtime.modeling import DLMModel
from dlm_runtime.parallelism import (
    RECHOOSE_EVERY,
    DraftRate,
    ForwardCost,
    Parallelism,
    speculative_positions,
)
from dlm_runtime.policies import DecodingPolicy, fast
from dlm_runtime.tokenizer import special_token_ids
from tests.runtime.test_engine import (
    ScriptedModel,
    agreeing,
    chain,
    collect,
    final,
    greedy_without_cache,
    prompt,
    req,
    run_all,
    sloppy_drafts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POSITIONS = (1, 2, 4, 8, 16, 32)


def flat_cost() -> ForwardCost:
    """Latency-bound: a forward costs the same whatever its positions."""
    return ForwardCost({(rows, q): 0.01 for rows in (1, 16) for q in POSITIONS})


def compute_bound_cost() -> ForwardCost:
    """Every position costs the same and nothing else does: a causal step always wins."""
    return ForwardCost({(rows, q): 0.001 * rows * q for rows in (1, 16) for q in POSITIONS})


def switching_cost() -> ForwardCost:
    """One row: latency-bound; two rows or more: compute-bound."""
    table = {(1, q): 0.01 for q in POSITIONS}
    table.update({(2, q): 0.01 * q for q in POSITIONS})
    return ForwardCost(table)


def adaptive(policy: DecodingPolicy) -> DecodingPolicy:
    return replace(policy, params={**policy.params, "adaptive": True})


# --- the chooser -------------------------------------------------------------------------------


def test_speculative_positions() -> None:
    assert speculative_positions(0) == 1  # a causal step
    assert speculative_positions(1) == 2
    assert speculative_positions(8) == 16  # the token, 7 drafted, 8 masks
    with pytest.raises(ValueError):
        speculative_positions(-1)


def test_forward_cost_interpolates_between_measured_positions() -> None:
    cost = ForwardCost({(1, 1): 0.01, (1, 8): 0.08, (2, 1): 0.02, (2, 8): 0.16})
    assert cost.seconds_at(1, 8) == pytest.approx(0.08)  # measured
    assert cost.seconds_at(1, 4) == pytest.approx(0.01 + 3 / 7 * 0.07)
    assert cost.seconds_at(2, 16) == pytest.approx(0.32)  # beyond: in proportion
    assert cost.seconds_at(4, 4) == pytest.approx(2 * cost.seconds_at(2, 4))  # rows too
    below = ForwardCost({(1, 4): 0.04})
    assert below.seconds_at(1, 2) == pytest.approx(0.04)  # no cheaper than the smallest
    with pytest.raises(ValueError):
        cost.seconds_at(1, 0)


def test_draft_rate_prior_is_geometric_in_the_acceptance() -> None:
    rates = DraftRate(prior_acceptance=0.5, prior_rejected=1.0)
    assert rates.rate(0) == rates.rate(1) == 1.0  # no draft: one token per forward
    assert rates.acceptance() == pytest.approx(0.5)
    # 2 masks: one drafted position, kept half the time; a rejection costs a draftless forward.
    assert rates.prior(2) == pytest.approx((1 + 0.5 + 0.5) / 1.5)
    priors = [rates.prior(m) for m in (2, 4, 8, 16)]
    assert priors == sorted(priors) and priors[-1] < 2.0  # 1 + p / (1 - p) at most
    # Drafts that stop at an unsure guess, not a rejection, cost no draftless forward.
    assert DraftRate(prior_acceptance=0.5, prior_rejected=0.0).prior(2) == pytest.approx(1.5)
    for bad in [{"prior_acceptance": 1.0}, {"prior_rejected": 1.5}, {"prior_weight": 0.0}]:
        with pytest.raises(ValueError):
            DraftRate(**bad)


def test_draft_rate_learns_the_acceptance_and_each_mask_count() -> None:
    rates = DraftRate(prior_acceptance=0.5, prior_weight=4)
    for _ in range(20):
        rates.observe(8, offered=7, drafted=7, kept=7)  # every draft kept whole
    assert rates.acceptance() > 0.9
    assert rates.rate(8) == pytest.approx((4 * rates.prior(8) + 20 * 8) / 24)
    assert rates.prior(4) > 3.0  # the acceptance carries over to counts not seen yet
    before = rates.acceptance()
    rates.observe(8, offered=0, drafted=0, kept=0)  # after a rejection: the count, not the odds
    assert rates.acceptance() == before
    assert rates.observations == 21
    share = rates.rejected_share()
    rates.observe(8, offered=7, drafted=3, kept=3)  # stopped at an unsure guess
    assert rates.rejected_share() < share
    rates.observe(8, offered=7, drafted=3, kept=1)  # stopped at a rejected token
    assert rates.acceptance() < before
    for bad in [(8, 8, 1, 1), (8, 7, 3, 4), (8, 3, 4, 0), (-1, 0, 0, 0), (1, 1, 0, 0)]:
        with pytest.raises(ValueError):
            rates.observe(*bad)


def test_draft_masks_follow_the_cost_of_a_forward() -> None:
    assert Parallelism(flat_cost()).draft_masks(8, rows=16) == 8
    assert Parallelism(flat_cost()).draft_masks(3, rows=1) == 3  # the policy's own block
    assert Parallelism(compute_bound_cost()).draft_masks(8, rows=1) == 0
    switching = Parallelism(switching_cost())
    assert switching.draft_masks(8, rows=1) == 8
    assert switching.draft_masks(8, rows=2) == 0
    switching.rows = 1
    assert switching.draft_masks(8) == 8
    switching.rows = 5
    assert switching.draft_masks(8) == 0
    # One mask drafts nothing (its guess sits where the bonus token goes): never chosen.
    assert Parallelism(flat_cost()).draft_masks(1) == 0
    assert Parallelism(flat_cost()).draft_masks(0) == 0
    with pytest.raises(ValueError):
        switching.draft_masks(-1)


def test_fewer_masks_win_in_between() -> None:
    """A forward that costs its positions past 4: 8 masks (16 positions) lose to 2 (4)."""
    cost = ForwardCost({(1, q): 0.01 * max(1, q / 4) for q in POSITIONS})
    chooser = Parallelism(cost, draft_rates=DraftRate(prior_acceptance=0.8))
    assert chooser.draft_masks(8, rows=1) == 2


def test_a_mask_choice_is_remade_once_the_rates_have_moved() -> None:
    chooser = Parallelism(ForwardCost({(1, 1): 0.01, (1, 16): 0.02}))
    assert chooser.draft_masks(8, rows=1) == 8  # prior: about 3.3 tokens per forward
    for _ in range(RECHOOSE_EVERY - 1):
        chooser.draft_rates.observe(8, offered=7, drafted=7, kept=0)  # really one per forward
    assert chooser.draft_masks(8, rows=1) == 8  # still the cached choice
    chooser.draft_rates.observe(8, offered=7, drafted=7, kept=0)
    assert chooser.draft_masks(8, rows=1) == 0


# --- the engine --------------------------------------------------------------------------------


@pytest.mark.parametrize("cost", ["flat", "compute-bound", "switching"])
async def test_adaptive_speculation_equals_autoregressive_with_concurrent_requests(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, cost: str
) -> None:
    """Whatever the masks chosen (whole blocks, none, or changing with the rows in flight),
    several concurrent adaptive speculative requests, beside other patterns, reply as the
    plain greedy loop does, and teach the chooser what their drafts emit."""
    table = {"flat": flat_cost, "compute-bound": compute_bound_cost, "switching": switching_cost}
    chooser = Parallelism(table[cost]())
    prompts = [prompt(3 + 4 * i, seed=60 + i) for i in range(5)]
    requests = [
        req(
            f"sp{i}",
            p,
            adaptive(fast(threshold=0.3, block_size=8, max_new_tokens=20)),
            Pattern.SPECULATIVE,
        )
        for i, p in enumerate(prompts)
    ]
    others = [
        req("pc", prompt(7, seed=1), fast(threshold=0.6, block_size=8, max_new_tokens=16)),
        req("ar", prompt(5, seed=2), fast(block_size=4, max_new_tokens=12), Pattern.AUTOREGRESSIVE),
    ]
    async with Engine(dlm, tok, max_batch=4, parallelism=chooser) as engine:
        results = await run_all(engine, [*requests, *others])
    for i, p in enumerate(prompts):
        assert final(results[f"sp{i}"]).token_ids == greedy_without_cache(dlm, p, 20)
    assert chooser.draft_rates.observations > 0


@pytest.mark.parametrize("rule_name", ["agreeing", "sloppy"])
async def test_adaptive_speculation_drafts_as_the_load_calls_for(
    tok: PreTrainedTokenizerFast, rule_name: str
) -> None:
    """Latency-bound, adaptive speculation drafts whole blocks (as plain speculation does);
    compute-bound, it never drafts: one causal step per token, as autoregressive decoding.
    The reply is the autoregressive one either way."""
    sp = special_token_ids(tok)
    rule = agreeing(sp.mask) if rule_name == "agreeing" else sloppy_drafts(sp.mask)
    model = ScriptedModel(tok, rule)
    policy = fast(threshold=0.5, block_size=8, max_new_tokens=40)
    p = prompt(6, seed=0)
    async with Engine(model, tok) as engine:
        ar = final(await collect(engine, req("ar", p, policy, Pattern.AUTOREGRESSIVE)))
        plain = final(await collect(engine, req("sp", p, policy, Pattern.SPECULATIVE)))
    want = chain(torch.arange(6, 46)).tolist()
    assert ar.token_ids == plain.token_ids == want
    for cost, forwards in [(flat_cost(), plain.usage.forward_passes), (compute_bound_cost(), 40)]:
        async with Engine(model, tok, parallelism=Parallelism(cost)) as engine:
            got = final(await collect(engine, req("ad", p, adaptive(policy), Pattern.SPECULATIVE)))
        assert got.token_ids == want
        assert got.usage.forward_passes == forwards


def test_a_forward_cost_slowed_by_a_busy_core_is_lowered_to_a_bigger_forwards() -> None:
    noisy = ForwardCost({(1, 1): 0.002, (1, 2): 0.007, (1, 4): 0.004, (2, 1): 0.001})
    fixed = noisy.monotone()
    assert fixed.seconds_by_shape == {(1, 1): 0.001, (1, 2): 0.004, (1, 4): 0.004, (2, 1): 0.001}
    assert fixed.monotone() is fixed
    flat = flat_cost()
    assert flat.monotone() is flat


async def test_the_engine_calibrates_at_the_first_adaptive_speculative_request(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    policy = fast(threshold=0.3, block_size=4, max_new_tokens=8)
    p = prompt(6, seed=2)
    async with Engine(dlm, tok, max_batch=2) as engine:
        plain = final(await collect(engine, req("sp", p, policy, Pattern.SPECULATIVE)))
        assert engine.info.parallelism is None  # plain speculation drafts its whole block
        got = final(await collect(engine, req("ad", p, adaptive(policy), Pattern.SPECULATIVE)))
        assert engine.info.parallelism is not None
    assert got.token_ids == plain.token_ids == greedy_without_cache(dlm, p, 8)


def test_fewer_masks_must_promise_a_margin() -> None:
    """Near a tie the longer draft stays: the costs and rates are estimates."""
    from dlm_runtime.parallelism import FEWER_MASKS_MARGIN

    rates = DraftRate(prior_acceptance=0.8)
    ratio = rates.rate(8) / rates.rate(4)  # 16 positions may cost this much more than 8
    for slower, want in [(1.0 + FEWER_MASKS_MARGIN / 2, 8), (1.0 + 2 * FEWER_MASKS_MARGIN, 4)]:
        cost = ForwardCost({(1, 8): 0.01, (1, 16): 0.01 * ratio * slower, (1, 1): 1.0})
        assert Parallelism(cost, draft_rates=rates).draft_masks(8, rows=1) == want


def test_time_outside_the_forward_favours_drafting() -> None:
    """Per-row work that every step pays whatever its masks makes drafting cheaper in
    proportion: rows compute-bound in the forward alone draft once it counts."""
    cost = ForwardCost({(32, q): 0.001 * q for q in POSITIONS})
    chooser = Parallelism(cost, draft_rates=DraftRate(prior_acceptance=0.9))
    assert chooser.draft_masks(8, rows=32) == 0
    chooser.set_row_overhead(0.001)  # remakes the cached choice
    assert chooser.draft_masks(8, rows=32) > 0
    chooser.set_row_overhead(0.00105)  # too small a move to matter
    assert chooser.row_overhead == 0.001
    with pytest.raises(ValueError):
        chooser.set_row_overhead(-1.0)


async def test_a_row_whose_drafts_are_always_rejected_rests_from_drafting(
    tok: PreTrainedTokenizerFast,
) -> None:
    """Latency-bound, where the shared draft rate says drafting pays, a reply none of whose
    drafts is ever kept stops drafting after a few rejections (causal steps, fewer masks
    computed) and emits the autoregressive reply all the same."""
    sp = special_token_ids(tok)
    masks_seen = [0]

    def always_wrong(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        masked = ids == sp.mask
        masks_seen[0] += int(masked.sum())
        right = agreeing(sp.mask)(ids, pos, call)
        return torch.where(masked, right + 1, right)

    model = ScriptedModel(tok, always_wrong)
    policy = fast(threshold=0.5, block_size=8, max_new_tokens=40)
    p = prompt(6, seed=0)
    want = chain(torch.arange(6, 46)).tolist()
    async with Engine(model, tok) as engine:
        plain = final(await collect(engine, req("sp", p, policy, Pattern.SPECULATIVE)))
    plain_masks, masks_seen[0] = masks_seen[0], 0
    async with Engine(model, tok, parallelism=Parallelism(flat_cost())) as engine:
        got = final(await collect(engine, req("ad", p, adaptive(policy), Pattern.SPECULATIVE)))
    assert plain.token_ids == got.token_ids == want
    assert got.usage.forward_passes <= plain.usage.forward_passes
    assert masks_seen[0] < plain_masks / 2
