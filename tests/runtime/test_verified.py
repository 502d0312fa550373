"""Verified fast diffusion (Pattern.VERIFIED): the causal mode checks each finished block."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime.engine import Engine, Pattern
from dlm_runtime.modeling import DLMModel
from dlm_runtime.policies import fast, fast_verify
from dlm_runtime.tokenizer import special_token_ids
from tests.runtime.test_engine import (
    ScriptedModel,
    chain,
    collect,
    final,
    greedy_without_cache,
    prefix_causal_without_cache,
    prompt,
    req,
    run_all,
    sloppy_drafts,
    spec_rule,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("threshold", "block"), [(0.2, 4), (0.5, 8), (0.9, 3)])
async def test_floor_one_equals_autoregressive_on_random_weights(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, threshold: float, block: int
) -> None:
    """verify_floor 1 (causal argmax only) is the greedy autoregressive reply, in a batch."""
    prompts = [prompt(5, seed=21), prompt(12, seed=22), prompt(1, seed=23)]
    policy = fast_verify(threshold, verify_floor=1.0, block_size=block, max_new_tokens=30)
    async with Engine(dlm, tok) as engine:
        results = await run_all(
            engine, [req(f"v{i}", p, policy, Pattern.VERIFIED) for i, p in enumerate(prompts)]
        )
    for i, p in enumerate(prompts):
        assert final(results[f"v{i}"]).token_ids == greedy_without_cache(dlm, p, 30)


async def test_floor_zero_equals_prefix_causal(tok: PreTrainedTokenizerFast, dlm: DLMModel) -> None:
    """verify_floor 0 keeps every token: the PREFIX_CAUSAL reply with the same forwards."""
    prompts = [prompt(6, seed=1), prompt(11, seed=2)]
    plain = fast(threshold=0.5, block_size=8, max_new_tokens=24)
    policy = fast_verify(threshold=0.5, verify_floor=0.0, block_size=8, max_new_tokens=24)
    async with Engine(dlm, tok) as engine:
        results = await run_all(
            engine,
            [req(f"v{i}", p, policy, Pattern.VERIFIED, seed=7 + i) for i, p in enumerate(prompts)]
            + [
                req(f"p{i}", p, plain, Pattern.PREFIX_CAUSAL, seed=7 + i)
                for i, p in enumerate(prompts)
            ],
        )
    for i, p in enumerate(prompts):
        got, ref = final(results[f"v{i}"]), final(results[f"p{i}"])
        assert got.token_ids == prefix_causal_without_cache(dlm, p, plain, seed=7 + i)
        assert got.token_ids == ref.token_ids
        assert got.usage.forward_passes == ref.usage.forward_passes


@pytest.mark.parametrize("rule_name", ["agreeing", "sloppy", "unsure"])
@pytest.mark.parametrize("block", [1, 3, 8])
@pytest.mark.parametrize("max_new", [1, 2, 9, 17])
@pytest.mark.parametrize("end_offset", [None, 0, 4, 11])
async def test_floor_one_matches_autoregressive_on_scripted_blocks(
    tok: PreTrainedTokenizerFast,
    rule_name: str,
    block: int,
    max_new: int,
    end_offset: int | None,
) -> None:
    """Blocks kept whole, cut and redrafted, ended by the end token or the reply budget: the
    autoregressive reply and text."""
    sp = special_token_ids(tok)
    p = prompt(6, seed=block)
    end_at = None if end_offset is None else len(p) + 1 + end_offset
    model = ScriptedModel(tok, spec_rule(rule_name, sp.mask, end_at, sp.end))
    policy = fast_verify(
        0.5, verify_floor=1.0, block_size=min(block, max_new), max_new_tokens=max_new
    )
    async with Engine(model, tok) as engine:
        ar = final(await collect(engine, req("ar", p, policy, Pattern.AUTOREGRESSIVE)))
        events = await collect(engine, req("v", p, policy, Pattern.VERIFIED))
    got = final(events)
    assert got.token_ids == ar.token_ids
    assert got.finish_reason == ar.finish_reason
    # Drafts' stable prefixes never held a token revised later, or the text would differ.
    assert got.text == ar.text


async def test_wrong_blocks_are_corrected_and_good_ones_cost_few_forwards(
    tok: PreTrainedTokenizerFast,
) -> None:
    """Confident but wrong diffusion guesses are replaced by the causal choice (floor 1);
    with floor 0 they stay. Agreeing blocks take about one forward each."""
    mask = special_token_ids(tok).mask
    p = prompt(6, seed=0)
    want = chain(torch.arange(6, 46)).tolist()
    strict = fast_verify(0.5, verify_floor=1.0, block_size=8, max_new_tokens=40)
    lax = fast_verify(0.5, verify_floor=0.0, block_size=8, max_new_tokens=40)
    async with Engine(ScriptedModel(tok, sloppy_drafts(mask)), tok) as engine:
        fixed = final(await collect(engine, req("s", p, strict, Pattern.VERIFIED)))
        kept = final(await collect(engine, req("l", p, lax, Pattern.VERIFIED)))
    assert fixed.token_ids == want
    assert kept.token_ids != want
    async with Engine(ScriptedModel(tok, spec_rule("agreeing", mask, None, -1)), tok) as engine:
        good = final(await collect(engine, req("g", p, strict, Pattern.VERIFIED)))
    assert good.token_ids == want
    assert good.usage.forward_passes <= 40 // 8 + 1  # one step per block, one final verify


async def test_a_confident_last_block_skips_its_verify_forward(
    tok: PreTrainedTokenizerFast,
) -> None:
    """verify_trust below 1: a last block drafted confidently ends without its own causal
    forward (one forward fewer, the same reply when the drafts agree); a wrong but confident
    last block is kept unverified, which is what the setting trades."""
    sp = special_token_ids(tok)
    p = prompt(6, seed=3)
    end_at = len(p) + 1 + 11
    ends = ScriptedModel(tok, spec_rule("agreeing", sp.mask, end_at, sp.end))
    verified = fast_verify(0.5, verify_floor=1.0, block_size=8, max_new_tokens=40)
    trusted = fast_verify(0.5, verify_floor=1.0, block_size=8, max_new_tokens=40, verify_trust=0.5)
    async with Engine(ends, tok) as engine:
        always = final(await collect(engine, req("a", p, verified, Pattern.VERIFIED)))
        skipped = final(await collect(engine, req("t", p, trusted, Pattern.VERIFIED)))
    assert skipped.token_ids == always.token_ids
    assert skipped.finish_reason == always.finish_reason == "end"
    assert skipped.usage.forward_passes == always.usage.forward_passes - 1
    want = chain(torch.arange(6, 46)).tolist()
    async with Engine(ScriptedModel(tok, sloppy_drafts(sp.mask)), tok) as engine:
        fixed = final(await collect(engine, req("s", p, verified, Pattern.VERIFIED)))
        tail = final(await collect(engine, req("u", p, trusted, Pattern.VERIFIED)))
    assert fixed.token_ids == want
    assert tail.token_ids[:32] == want[:32] and tail.token_ids != want


def test_verify_trust_is_checked() -> None:
    with pytest.raises(ValueError, match="verify_trust"):
        fast_verify(verify_trust=1.5)
