"""Continuous-batching engine (dlm_runtime.engine) on tiny random and scripted models, CPU."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime import llada_generate, load_model
from dlm_runtime.attention import (
    KV,
    ForwardOutput,
    block_causal_mask,
    causal_mask,
    take_positions,
)
from dlm_runtime.engine import (
    BatchBuilder,
    DecodingMode,
    Draft,
    DraftDecoder,
    Engine,
    Event,
    Final,
    GenerationRequest,
    KVPool,
    Pattern,
    Query,
)
from dlm_runtime.engine.batching import CacheWrite, plan_forwards, sort_rows
from dlm_runtime.loading import RemoteCodeModel, RemoteConfigView
from dlm_runtime.modeling import DLMConfig, DLMModel, prepare_forward
from dlm_runtime.policies import BlockState, DecodingPolicy, fast, fast_revise, fixed_schedule
from dlm_runtime.tokenizer import decode_draft, special_token_ids
from tests.runtime.conftest import CORPUS
from tests.runtime.test_llada import write_checkpoint

# Every test here on one torch thread (tok, dlm and the fixture: tests/runtime/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NoMask(nn.Module):
    """Wraps a model so it never predicts the mask id (LLaDA's generate would keep it)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config: Any = inner.config

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        out: ForwardOutput = self.inner(
            input_ids, position_ids, attention_mask, past_key_values, logits_index
        )
        out.logits[..., self.config.mask_token_id] = -1e4
        return out


Rule = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class ScriptedModel(nn.Module):
    """The runtime's forward API; logits pick ``rule(input_ids, positions, call)`` confidently.

    Its K/V hold each position's index, which lets it check on every call that a row's
    visible cache is exactly positions ``0..P-1`` in order (the engine's cache bookkeeping).
    """

    def __init__(self, tok: PreTrainedTokenizerFast, rule: Rule, delay: float = 0.0) -> None:
        super().__init__()
        sp = special_token_ids(tok)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            vocab_size=len(tok),
            mask_token_id=sp.mask,
            eos_token_id=sp.end,
            pad_token_id=sp.pad,
            max_position_embeddings=256,
            model_type="dlm",
        )
        self.rule = rule
        self.delay = delay
        self.calls = 0

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        pos, mask, past_len = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, 1
        )
        if past_key_values and mask is not None:
            cached_pos = past_key_values[0][1][:, 0, :, 0]  # [B, P]
            for b in range(input_ids.shape[0]):
                seen = mask[b, 0, 0, :past_len]
                n = int(seen.sum())
                assert bool(seen[:n].all()), "visible cache slots must be a prefix"
                assert cached_pos[b, :n].tolist() == list(range(n)), "cache holds 0..P-1"
        if self.delay:
            time.sleep(self.delay)
        call, self.calls = self.calls, self.calls + 1
        target = self.rule(input_ids, pos, call)
        logits = torch.full((*input_ids.shape, self.config.vocab_size), -10.0)
        logits.scatter_(-1, target.clamp_min(0)[..., None], 10.0)
        logits[target < 0] = 0.0  # a negative target means "no idea": uniform
        kv = (input_ids[:, None, :, None].float(), pos[:, None, :, None].float())
        return ForwardOutput(take_positions(logits, logits_index), [kv])


def chain(p: torch.Tensor) -> torch.Tensor:
    """The scripted reply: a fixed ordinary token per absolute position."""
    return 20 + (p * 7) % 300


def agreeing(mask_id: int, end_at: int | None = None, end_id: int = -1) -> Rule:
    """Mask rows predict their own position, clean rows the next one: AR == diffusion."""

    def rule(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        own = torch.where(ids == mask_id, pos, pos + 1)
        out = chain(own)
        if end_at is not None:
            out = torch.where(own == end_at, torch.full_like(out, end_id), out)
        return out

    return rule


def sloppy_drafts(mask_id: int) -> Rule:
    """Like agreeing(), but diffusion guesses wrong at every third position."""

    def rule(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        right = agreeing(mask_id)(ids, pos, call)
        wrong = (ids == mask_id) & (pos % 3 == 1)
        return torch.where(wrong, right + 1, right)

    return rule


def req(
    rid: str,
    prompt: Sequence[int],
    policy: DecodingPolicy,
    pattern: Pattern = Pattern.DEFAULT_DIFFUSION,
    seed: int | None = 0,
) -> GenerationRequest:
    return GenerationRequest(rid, list(prompt), DecodingMode(pattern.value, pattern, policy), seed)


async def collect(engine: Engine, request: GenerationRequest) -> list[Event]:
    return [event async for event in await engine.submit(request)]


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def drain_cancelling(
    engine: Engine, stream: AsyncIterator[Event], request_id: str, step: int
) -> list[Event]:
    """``stream``'s events, its request cancelled at its draft of denoising step ``step``."""
    events: list[Event] = []
    async for event in stream:
        events.append(event)
        if isinstance(event, Draft) and event.step == step:
            assert engine.cancel(request_id)
    return events


async def run_all(engine: Engine, requests: Sequence[GenerationRequest]) -> dict[str, list[Event]]:
    results = await asyncio.gather(*(collect(engine, r) for r in requests))
    return {r.request_id: events for r, events in zip(requests, results, strict=True)}


def final(events: Sequence[Event]) -> Final:
    last = events[-1]
    assert isinstance(last, Final)
    assert all(isinstance(e, Draft) for e in events[:-1])
    return last


def prompt(n: int, seed: int) -> list[int]:
    return random.Random(seed).choices(range(20, 360), k=n)


MIXED = [
    ("pc-fast", 5, fast(threshold=0.6, block_size=8, max_new_tokens=24), Pattern.DEFAULT_DIFFUSION),
    (
        "pc-revise",
        9,
        fast_revise(0.7, 0.3, block_size=4, max_new_tokens=10),
        Pattern.DEFAULT_DIFFUSION,
    ),
    ("pc-sample", 3, fast(0.8, 6, 18, temperature=0.9, top_k=30), Pattern.DEFAULT_DIFFUSION),
    ("bi-ref", 3, fixed_schedule(8, 16, 8), Pattern.BIDIRECTIONAL),
    (
        "bi-fast",
        7,
        fast(threshold=0.5, block_size=6, max_new_tokens=12),
        Pattern.BIDIRECTIONAL,
    ),
    ("prefix-cache", 4, fixed_schedule(6, 12, 4), Pattern.PREFIX_CACHE),
    ("ar", 4, fast(block_size=4, max_new_tokens=20), Pattern.AUTOREGRESSIVE),
    ("spec", 6, fast(block_size=4, max_new_tokens=14), Pattern.SPECULATIVE),
]


def mixed_requests() -> list[GenerationRequest]:
    return [
        req(rid, prompt(n, seed=i), policy, pattern, seed=i)
        for i, (rid, n, policy, pattern) in enumerate(MIXED)
    ]


# --- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_batch", [16, 3])
async def test_same_tokens_alone_and_in_a_mixed_batch(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, max_batch: int
) -> None:
    """Every pattern and mode gives the same tokens alone as in a mixed, queued batch."""
    requests = mixed_requests()
    async with Engine(dlm, tok) as engine:
        alone = {r.request_id: final(await collect(engine, r)).token_ids for r in requests}
    async with Engine(dlm, tok, max_batch=max_batch) as engine:
        together = await run_all(engine, requests)
        sizes = [len(b) for b in engine.stats.batches]
    assert {rid: final(ev).token_ids for rid, ev in together.items()} == alone
    assert max(sizes) == min(max_batch, len(requests))
    assert all(len(ids) > 0 for ids in alone.values())


async def test_batch_masks_and_padding_rows(dlm: DLMModel) -> None:
    """Each row's mask is its own pattern over its own cache; padding yields no NaN."""
    pool = KVPool(3)
    builder = BatchBuilder(torch.device("cpu"), pad_id=0)
    with torch.inference_mode():
        first = [
            Query(torch.arange(20, 27), 0, 0, torch.arange(7)),
            Query(torch.arange(30, 33), 0, 0, torch.arange(3)),
            Query(torch.arange(40, 52), 0, 0, None),
        ]
        batch = builder.build(first, pool)
        out = dlm(batch.input_ids, batch.position_ids, batch.attention_mask, batch.past)
        pool.write(out.new_key_values, [CacheWrite(0, 0, 7), CacheWrite(1, 0, 3)])
        second = [
            Query(torch.arange(50, 54), 7, 7, torch.tensor([0, 1, 1, 1])),
            Query(torch.arange(60, 61), 3, 3, torch.arange(1)),
            Query(torch.arange(40, 52), 0, 0, None),
        ]
        batch = builder.build(second, pool)
        assert batch.past is not None and batch.attention_mask is not None
        out = dlm(batch.input_ids, batch.position_ids, batch.attention_mask, batch.past)
    assert bool(torch.isfinite(out.logits).all())
    assert pool.lengths == [7, 3, 0]
    mask = batch.attention_mask[:, 0].int()  # [3, 12, 7 + 12]
    pending_then_block = [[1] * 7 + [1, 0, 0, 0] + [0] * 8] + [[1] * 7 + [1] * 4 + [0] * 8] * 3
    assert mask[0, :4].tolist() == pending_then_block
    assert mask[1, 0].tolist() == [1] * 3 + [0] * 4 + [1] + [0] * 11
    assert mask[2].tolist() == [[0] * 7 + [1] * 12] * 12
    assert not mask[:2, 4:].any() and not mask[1, 1:].any()  # padding rows see nothing
    assert batch.position_ids is not None
    assert batch.position_ids[0, :4].tolist() == [7, 8, 9, 10]


async def test_only_the_logits_a_query_reads_are_computed(dlm: DLMModel) -> None:
    """``logits_from`` rows get the full pass's logits from there on; others get them all."""
    pool = KVPool(2)
    builder = BatchBuilder(torch.device("cpu"), pad_id=0)
    queries = [
        Query(torch.arange(20, 30), 0, 0, torch.tensor([0] * 6 + [1] * 4), logits_from=6),
        Query(torch.arange(30, 33), 0, 0, torch.arange(3), logits_from=2),
    ]
    with torch.inference_mode():
        batch = builder.build(queries, pool)
        args = (batch.input_ids, batch.position_ids, batch.attention_mask, batch.past)
        full = dlm(*args).logits
        some = dlm(*args, logits_index=batch.logits_index).logits
        unselected = builder.build([replace(q, logits_from=0) for q in queries], pool)
    assert batch.logit_rows == [4, 1] and some.shape[:2] == (2, 4)
    torch.testing.assert_close(some[0], full[0, 6:10])
    torch.testing.assert_close(some[1, :1], full[1, 2:3])
    assert unselected.logits_index is None and unselected.logit_rows == [10, 3]


# --- equivalences ----------------------------------------------------------------------------


def reply_block(
    cfg: Any, policy: DecodingPolicy, length: int, prompt_len: int, reply_len: int
) -> BlockState:
    """The block the engine starts after ``reply_len`` tokens of a reply to ``prompt_len``."""
    return BlockState(
        policy,
        length,
        cfg.mask_token_id,
        end_id=cfg.eos_token_id if policy.early_stop else None,
        fill_id=cfg.pad_token_id,
        offset=prompt_len + reply_len,
        seq_len=prompt_len + policy.max_new_tokens,
    )


def prefix_causal_without_cache(
    model: nn.Module, prompt_ids: list[int], policy: DecodingPolicy, seed: int
) -> list[int]:
    """Prefix-causal decoding recomputing the whole sequence with the equivalent mask."""
    cfg: Any = model.config
    gen = torch.Generator().manual_seed(seed)
    reply: list[int] = []
    for length in policy.block_lengths():
        block = reply_block(cfg, policy, length, len(prompt_ids), len(reply))
        context = prompt_ids + reply
        n = len(context)
        ranks = torch.tensor(list(range(n)) + [n] * length)
        while not block.done:
            seq = torch.tensor(context + block.x.tolist())[None]
            with torch.inference_mode():
                logits = model(seq, attention_mask=block_causal_mask(ranks, ranks)).logits
            block.step(logits[0, n:], generator=gen)
        tokens = block.x.tolist()
        if block.reply_done and block.end_index is not None:
            return reply + tokens[: block.end_index]
        reply += tokens
    return reply


@pytest.mark.parametrize(
    "policy",
    [
        fast(threshold=0.6, block_size=8, max_new_tokens=24),
        fast(threshold=0.8, block_size=5, max_new_tokens=23, temperature=0.8),
        fast_revise(0.7, 0.3, block_size=4, max_new_tokens=16),
        fixed_schedule(12, 24, 8, temperature=0.5),
    ],
    ids=["fast", "fast-sampled", "fast-revise", "fixed-schedule"],
)
async def test_prefix_causal_cache_equals_recompute(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, policy: DecodingPolicy
) -> None:
    """The cached prefix-causal engine equals full recomputation under the same mask."""
    prompts = [prompt(6, seed=1), prompt(11, seed=2)]
    async with Engine(dlm, tok) as engine:
        results = await run_all(
            engine, [req(f"r{i}", p, policy, seed=7 + i) for i, p in enumerate(prompts)]
        )
        recomputed = await run_all(
            engine,
            [
                req(f"n{i}", p, policy, seed=7 + i, pattern=Pattern.PREFIX_CAUSAL_NOCACHE)
                for i, p in enumerate(prompts)
            ],
        )
    for i, p in enumerate(prompts):
        want = prefix_causal_without_cache(dlm, p, policy, seed=7 + i)
        assert final(results[f"r{i}"]).token_ids == want
        assert final(recomputed[f"n{i}"]).token_ids == want


def greedy_without_cache(model: nn.Module, prompt_ids: list[int], max_new: int) -> list[int]:
    """Plain greedy loop over the causal mask, whole sequence each token."""
    cfg: Any = model.config
    seq = list(prompt_ids)
    reply: list[int] = []
    while len(reply) < max_new:
        pos = torch.arange(len(seq))
        with torch.inference_mode():
            logits = model(torch.tensor(seq)[None], attention_mask=causal_mask(pos, pos)).logits
        row = logits[0, -1].clone()
        row[cfg.mask_token_id] = float("-inf")
        token = int(row.argmax())
        if token == cfg.eos_token_id:
            break
        reply.append(token)
        seq.append(token)
    return reply


async def test_autoregressive_equals_plain_greedy_loop(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Autoregressive mode (cached, batched) equals a plain greedy loop without the engine."""
    prompts = [prompt(4, seed=3), prompt(13, seed=4), prompt(1, seed=5)]
    policy = fast(block_size=8, max_new_tokens=30)
    async with Engine(dlm, tok) as engine:
        results = await run_all(
            engine, [req(f"r{i}", p, policy, Pattern.AUTOREGRESSIVE) for i, p in enumerate(prompts)]
        )
    for i, p in enumerate(prompts):
        assert final(results[f"r{i}"]).token_ids == greedy_without_cache(dlm, p, 30)


@pytest.fixture
def llada(tmp_path: Path) -> nn.Module:
    write_checkpoint(tmp_path, "tied-gqa")
    return NoMask(load_model(tmp_path))


@pytest.mark.parametrize("which", ["llada", "native"])
@pytest.mark.parametrize(
    ("temperature", "remasking"),
    [(0.0, "low_confidence"), (0.8, "low_confidence"), (1.0, "random")],
)
async def test_fixed_schedule_preset_equals_llada_generate(
    tok: PreTrainedTokenizerFast,
    dlm: DLMModel,
    llada: nn.Module,
    which: str,
    temperature: float,
    remasking: str,
) -> None:
    """BIDIRECTIONAL + fixed_schedule == llada_generate.generate(), alone and inside a batch."""
    model = llada if which == "llada" else NoMask(dlm)
    cfg: Any = model.config
    mask_id = cfg.mask_token_id
    vocab = min(cfg.vocab_size, 40)
    prompt_ids = random.Random(9).choices(range(3, vocab - 3), k=5)
    kw: dict[str, Any] = {"steps": 12, "gen_length": 24, "block_length": 8}
    torch.manual_seed(1234)
    want = llada_generate.generate(
        model,
        torch.tensor([prompt_ids]),
        **kw,
        temperature=temperature,
        remasking=remasking,
        mask_id=mask_id,
    )[0, len(prompt_ids) :].tolist()
    policy = fixed_schedule(**kw, temperature=temperature, remasking=remasking)
    target = req("ref", prompt_ids, policy, pattern=Pattern.BIDIRECTIONAL, seed=1234)
    others = [
        req(
            "other-pc",
            random.Random(1).choices(range(3, vocab - 3), k=9),
            fast(0.5, 4, 8),
            pattern=Pattern.PREFIX_CAUSAL,
        ),
        req("other-ar", [4, 5], fast(block_size=2, max_new_tokens=6), Pattern.AUTOREGRESSIVE),
    ]
    async with Engine(model, tok) as engine:
        alone = final(await collect(engine, target)).token_ids
        batched = await run_all(engine, [target, *others])
    assert alone == want
    assert final(batched["ref"]).token_ids == want


async def test_speculative_equals_autoregressive_on_random_weights(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """At temperature 0, speculative decoding reproduces autoregressive mode token for token."""
    prompts = [prompt(5, seed=11), prompt(12, seed=12)]
    requests = []
    for block in (3, 8):
        policy = fast(block_size=block, max_new_tokens=25)
        for i, p in enumerate(prompts):
            requests.append(req(f"ar-{block}-{i}", p, policy, Pattern.AUTOREGRESSIVE))
            requests.append(req(f"sp-{block}-{i}", p, policy, Pattern.SPECULATIVE))
    async with Engine(dlm, tok) as engine:
        results = await run_all(engine, requests)
    for block in (3, 8):
        for i in range(len(prompts)):
            ar = final(results[f"ar-{block}-{i}"])
            sp = final(results[f"sp-{block}-{i}"])
            assert sp.token_ids == ar.token_ids
            assert sp.finish_reason == ar.finish_reason


@pytest.mark.parametrize("rule_name", ["agreeing", "sloppy"])
async def test_speculative_accepts_drafts_and_fixes_wrong_ones(
    tok: PreTrainedTokenizerFast, rule_name: str
) -> None:
    """Good drafts are accepted whole (few forwards); wrong ones are cut and corrected."""
    mask = special_token_ids(tok).mask
    rule = agreeing(mask) if rule_name == "agreeing" else sloppy_drafts(mask)
    model = ScriptedModel(tok, rule)
    policy = fast(block_size=8, max_new_tokens=40)
    p = prompt(6, seed=0)
    async with Engine(model, tok) as engine:
        results = await run_all(
            engine,
            [
                req("ar", p, policy, Pattern.AUTOREGRESSIVE),
                req("sp", p, policy, Pattern.SPECULATIVE),
            ],
        )
    ar, sp = final(results["ar"]), final(results["sp"])
    assert sp.token_ids == ar.token_ids == chain(torch.arange(6, 46)).tolist()
    if rule_name == "agreeing":
        # 40 tokens in rounds of 8 drafted + 1 bonus: one draft step and one verify per round.
        assert sp.usage.forward_passes <= 10 < ar.usage.forward_passes
    else:
        assert sp.usage.forward_passes < ar.usage.forward_passes


def unsure_drafts(mask_id: int) -> Rule:
    """Like agreeing(), but diffusion has no idea (uniform logits) at every fifth position."""

    def rule(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        right = agreeing(mask_id)(ids, pos, call)
        return torch.where((ids == mask_id) & (pos % 5 == 0), torch.full_like(right, -1), right)

    return rule


def spec_rule(name: str, mask_id: int, end_at: int | None, end_id: int) -> Rule:
    base = agreeing(mask_id, end_at, end_id)
    if name == "agreeing":
        return base
    wrong = sloppy_drafts(mask_id) if name == "sloppy" else unsure_drafts(mask_id)

    def rule(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        return torch.where(ids == mask_id, wrong(ids, pos, call), base(ids, pos, call))

    return rule


@pytest.mark.parametrize("rule_name", ["agreeing", "sloppy", "unsure"])
@pytest.mark.parametrize("masks", [1, 2, 3, 8])
@pytest.mark.parametrize("max_new", [1, 2, 9, 17])
@pytest.mark.parametrize("end_offset", [None, 0, 4, 11])
async def test_speculative_rounds_match_autoregressive(
    tok: PreTrainedTokenizerFast,
    rule_name: str,
    masks: int,
    max_new: int,
    end_offset: int | None,
) -> None:
    """Whole drafts kept (the masks draft the next), drafts cut (the next forward drafts
    afresh), drafts stopped at an unsure guess, the end token or the last allowed token inside
    a draft: always the autoregressive reply, and never more forwards than it."""
    sp = special_token_ids(tok)
    p = prompt(6, seed=masks)
    end_at = None if end_offset is None else len(p) + 1 + end_offset
    model = ScriptedModel(tok, spec_rule(rule_name, sp.mask, end_at, sp.end))
    policy = fast(threshold=0.5, block_size=min(masks, max_new), max_new_tokens=max_new)
    async with Engine(model, tok) as engine:
        ar = final(await collect(engine, req("ar", p, policy, Pattern.AUTOREGRESSIVE)))
        spec = final(await collect(engine, req("sp", p, policy, Pattern.SPECULATIVE)))
    assert spec.token_ids == ar.token_ids
    assert spec.finish_reason == ar.finish_reason
    assert spec.usage.tokens == ar.usage.tokens
    assert spec.usage.forward_passes <= ar.usage.forward_passes
    if rule_name == "agreeing" and masks > 1:
        # The first forward emits one token and drafts masks - 1; each later one emits all of
        # its draft plus the bonus token.
        emitted = len(ar.token_ids) + (ar.finish_reason == "end")
        assert spec.usage.forward_passes <= 1 + -(-(emitted - 1) // (masks - 1))


async def test_speculative_batched_with_other_rows_equals_autoregressive_alone(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Speculative rows of several draft lengths (so several query lengths) in one batch with
    diffusion and autoregressive rows reply as autoregressive mode does alone."""
    prompts = [prompt(4 + 3 * i, seed=40 + i) for i in range(4)]
    want = {}
    async with Engine(dlm, tok) as engine:
        for i, p in enumerate(prompts):
            policy = fast(block_size=4, max_new_tokens=20)
            got = final(await collect(engine, req(f"ar{i}", p, policy, Pattern.AUTOREGRESSIVE)))
            want[i] = got.token_ids
    requests = [
        req(
            f"sp{i}",
            p,
            fast(threshold=0.3, block_size=2 + 3 * i, max_new_tokens=20),
            Pattern.SPECULATIVE,
        )
        for i, p in enumerate(prompts)
    ]
    others = [
        req("pc", prompt(7, seed=1), fast(threshold=0.6, block_size=8, max_new_tokens=24)),
        req("ar", prompt(5, seed=2), fast(block_size=4, max_new_tokens=30), Pattern.AUTOREGRESSIVE),
    ]
    for max_batch in (16, 3):
        async with Engine(dlm, tok, max_batch=max_batch) as engine:
            results = await run_all(engine, [*others, *requests])
        for i in range(len(prompts)):
            assert final(results[f"sp{i}"]).token_ids == want[i]


async def test_long_replies_grow_the_cache_pool(tok: PreTrainedTokenizerFast) -> None:
    """Cache rows grow past their first capacity (and move on leave) without losing order."""
    mask = special_token_ids(tok).mask
    model = ScriptedModel(tok, sloppy_drafts(mask))  # checks the cache on every call
    requests = [
        req("ar", prompt(3, seed=1), fast(block_size=4, max_new_tokens=20), Pattern.AUTOREGRESSIVE),
        req("pc", prompt(70, seed=2), fast(block_size=16, max_new_tokens=150)),
        req("sp", prompt(9, seed=3), fast(block_size=8, max_new_tokens=150), Pattern.SPECULATIVE),
        req(
            "ar2", prompt(5, seed=4), fast(block_size=4, max_new_tokens=140), Pattern.AUTOREGRESSIVE
        ),
    ]
    async with Engine(model, tok) as engine:
        results = await run_all(engine, requests)
    for r in requests:
        n, m = len(r.prompt_ids), r.decoding.policy.max_new_tokens
        got = final(results[r.request_id]).token_ids
        want = chain(torch.arange(n, n + m)).tolist()
        if r.request_id == "pc":  # diffusion takes the sloppy guesses; check the cached part
            assert len(got) == m
        else:
            assert got == want


# --- end of reply, drafts, text -----------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        Pattern.PREFIX_CAUSAL,
        Pattern.BIDIRECTIONAL,
        Pattern.PREFIX_CACHE,
        Pattern.AUTOREGRESSIVE,
        Pattern.SPECULATIVE,
    ],
)
async def test_end_token_stops_the_reply(tok: PreTrainedTokenizerFast, pattern: Pattern) -> None:
    """A confident end token ends the reply in every mode; it is not in the final ids."""
    sp = special_token_ids(tok)
    p = prompt(5, seed=1)
    end_at = len(p) + 11  # the 12th reply position
    model = ScriptedModel(tok, agreeing(sp.mask, end_at, sp.end))
    policy = fast(block_size=4, max_new_tokens=32)
    async with Engine(model, tok) as engine:
        events = await collect(engine, req("r", p, policy, pattern))
    done = final(events)
    assert done.finish_reason == "end"
    assert done.token_ids == chain(torch.arange(len(p), end_at)).tolist()
    last = events[-2]
    assert isinstance(last, Draft) and sp.end in last.token_ids
    assert done.usage.tokens == 11


async def test_draft_events_report_steps_positions_and_text(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """Steps count up, commits cover the reply, masks show as the placeholder, text decodes."""
    mask = dlm.config.mask_token_id
    policy = fast(threshold=0.6, block_size=8, max_new_tokens=24)
    async with Engine(dlm, tok, mask_placeholder="▒") as engine:
        events = await collect(engine, req("r", prompt(7, seed=3), policy))
    done = final(events)
    drafts = [e for e in events if isinstance(e, Draft)]
    assert [d.step for d in drafts] == list(range(1, len(drafts) + 1))
    assert done.usage.steps == len(drafts) == done.usage.forward_passes
    committed: set[int] = set()
    for d in drafts:
        assert d.committed, "a fast step commits at least one position"
        assert all(d.token_ids[i] != mask for i in d.committed)
        committed.update(d.committed)
        assert d.text == decode_draft(tok, d.token_ids, mask, "▒").text
        assert d.text.count("▒") == d.token_ids.count(mask)
        assert len(d.spans) == len(d.token_ids)
    assert drafts[0].text.count("▒") == 8 - len(drafts[0].committed)
    assert set(range(len(done.token_ids))) <= committed
    assert done.text == decode_draft(tok, done.token_ids, mask).text
    assert done.text == tok.decode(done.token_ids, skip_special_tokens=True)
    assert [d.block for d in drafts] == sorted(d.block for d in drafts)


async def test_revisions_are_reported(tok: PreTrainedTokenizerFast) -> None:
    """A commit that loses support is re-masked, reported in revised, then recommitted."""
    sp = special_token_ids(tok)

    def rule(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        out = chain(pos)
        if call == 0:  # only position 3 is known at first
            out = torch.where(pos == 3, out, -1)
        elif call == 1:  # ...and now its token looks wrong; the others are still unknown
            out = torch.where(pos == 3, out + 1, -1)
        else:
            out = torch.where(pos == 3, out + 1, out)
        return out

    policy = fast_revise(0.9, 0.2, block_size=4, max_new_tokens=4)
    async with Engine(ScriptedModel(tok, rule), tok) as engine:
        events = await collect(engine, req("r", [20, 21, 22], policy))
    drafts = [e for e in events if isinstance(e, Draft)]
    assert drafts[0].committed == [0]
    assert drafts[1].revised == [0] and 0 not in drafts[1].committed
    assert drafts[1].token_ids[0] == sp.mask and drafts[1].text.startswith("░")
    assert final(events).token_ids == [
        int(chain(torch.tensor(3))) + 1,
        *chain(torch.arange(4, 7)).tolist(),
    ]


@pytest.mark.parametrize("seed", range(4))
def test_draft_decoder_equals_decode_draft(tok: PreTrainedTokenizerFast, seed: int) -> None:
    """Incremental draft text equals decoding everything, across split UTF-8 characters."""
    mask = special_token_ids(tok).mask
    rng = random.Random(seed)
    ids = tok.encode(CORPUS[2] * 3, add_special_tokens=False)
    ids = [i if rng.random() > 0.1 else rng.choice([mask, 1, rng.randrange(400)]) for i in ids]
    decoder = DraftDecoder(tok, mask, "░")
    stable = 0
    while stable < len(ids):
        stable = min(len(ids), stable + rng.randrange(1, 6))
        shown = ids[:stable] + [mask] * rng.randrange(3)
        assert decoder.decode(shown, stable) == decode_draft(tok, shown, mask)


# --- scheduling ------------------------------------------------------------------------------


async def test_cancel_removes_a_request_mid_generation(tok: PreTrainedTokenizerFast) -> None:
    """A cancelled request ends with Final 'cancelled'; the others finish unchanged."""
    mask = special_token_ids(tok).mask
    model = ScriptedModel(tok, agreeing(mask), delay=0.002)
    policy = fast(block_size=2, max_new_tokens=40)
    p = prompt(4, seed=2)
    want = chain(torch.arange(4, 44)).tolist()
    async with Engine(model, tok) as engine:
        streams = {}
        for rid, pattern in [
            ("a", Pattern.AUTOREGRESSIVE),
            ("b", Pattern.AUTOREGRESSIVE),
            ("c", Pattern.DEFAULT_DIFFUSION),
        ]:
            streams[rid] = await engine.submit(req(rid, p, policy, pattern))

        async def drain(rid: str) -> list[Event]:
            events: list[Event] = []
            async for event in streams[rid]:
                events.append(event)
                if rid == "b" and isinstance(event, Draft) and event.step == 5:
                    assert engine.cancel("b")
            return events

        results = dict(zip("abc", await asyncio.gather(*(drain(r) for r in "abc")), strict=True))
        batches = list(engine.stats.batches)
        assert not engine.cancel("b")  # gone
    b = final(results["b"])
    assert b.finish_reason == "cancelled"
    assert 5 <= len(b.token_ids) < 40 and b.token_ids == want[: len(b.token_ids)]
    assert final(results["a"]).token_ids == want and final(results["c"]).token_ids == want
    last_b = max(i for i, batch in enumerate(batches) if "b" in batch)
    assert len(batches[last_b]) == 3
    assert set(batches[last_b + 1]) == {"a", "c"}


async def test_cancel_by_closing_the_stream(tok: PreTrainedTokenizerFast) -> None:
    """Leaving the async-for early cancels the request; the engine keeps serving."""
    mask = special_token_ids(tok).mask
    model = ScriptedModel(tok, agreeing(mask), delay=0.001)
    policy = fast(block_size=4, max_new_tokens=60)
    async with Engine(model, tok) as engine:
        stream = await engine.submit(req("x", [20, 21], policy, Pattern.AUTOREGRESSIVE))
        async for event in stream:
            if isinstance(event, Draft) and event.step == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        again = final(
            await collect(
                engine,
                req("x", [20, 21], fast(block_size=4, max_new_tokens=8), Pattern.AUTOREGRESSIVE),
            )
        )
    assert again.finish_reason == "length" and len(again.token_ids) == 8


async def test_new_request_joins_the_running_batch(tok: PreTrainedTokenizerFast) -> None:
    """A request submitted mid-generation joins the running batch at the next step."""
    mask = special_token_ids(tok).mask
    model = ScriptedModel(tok, agreeing(mask), delay=0.002)
    async with Engine(model, tok) as engine:
        first = await engine.submit(
            req("first", [20], fast(block_size=4, max_new_tokens=60), Pattern.AUTOREGRESSIVE)
        )
        first_events: list[Event] = []
        async for event in first:
            first_events.append(event)
            if isinstance(event, Draft) and event.step == 5:
                break
        recorded = len(engine.stats.batches)  # the step in flight may still miss the newcomer
        second = await engine.submit(req("second", [30, 31], fast(0.9, 4, 8)))
        second_events, rest = await asyncio.gather(run_stream(second), run_stream(first))
        first_events.extend(rest)
        batches = list(engine.stats.batches)
    assert final(second_events).token_ids == chain(torch.arange(2, 10)).tolist()
    assert final(first_events).finish_reason == "length"
    joined = next(i for i, batch in enumerate(batches) if "second" in batch)
    assert joined <= recorded + 1
    assert set(batches[joined]) == {"first", "second"}


async def run_stream(stream: Any) -> list[Event]:
    return [event async for event in stream]


async def test_event_loop_stays_responsive(tok: PreTrainedTokenizerFast) -> None:
    """Forward passes run off the event loop's thread, and the loop ticks meanwhile."""
    sp = special_token_ids(tok)
    cfg = DLMConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=256,
        mask_token_id=sp.mask,
        eos_token_id=sp.end,
        pad_token_id=sp.pad,
    )
    model = DLMModel(cfg).eval()
    loop_thread = threading.get_ident()
    forward_threads: set[int] = set()
    forward = model.forward

    def recording_forward(*args: Any, **kwargs: Any) -> Any:
        forward_threads.add(threading.get_ident())
        return forward(*args, **kwargs)

    model.forward = recording_forward  # type: ignore[method-assign]
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    policy = fixed_schedule(48, 96, 32)
    requests = [
        req(f"r{i}", prompt(40, seed=i), policy, pattern=Pattern.BIDIRECTIONAL) for i in range(8)
    ]
    async with Engine(model, tok) as engine:
        task = asyncio.create_task(ticker())
        await run_all(engine, requests)
        steps = engine.stats.forward_passes
    stop.set()
    await task
    assert forward_threads and loop_thread not in forward_threads
    # A loop blocked by the forward passes would tick about once per step at most.
    assert ticks > 2 * steps


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt_ids": []}, "prompt_ids is empty"),
        ({"prompt_ids": [5] * 80}, "prompt too long"),
        ({"prompt_ids": [5, 10**6]}, "outside"),
        ({"decoding": DecodingMode("turbo", "turbo", fast(max_new_tokens=32))}, "unknown pattern"),
        (
            {"decoding": DecodingMode("s", "prefix-causal", fast(max_new_tokens=32))},
            "unknown pattern 'prefix-causal'",
        ),
        ({"decoding": fast(max_new_tokens=32)}, "must be a DecodingMode"),
        (
            {"decoding": DecodingMode.diffusion(fast(max_new_tokens=200))},
            "exceeds the model context",
        ),
        (
            {"decoding": DecodingMode("x", Pattern.PREFIX_CAUSAL, {"name": "fast"})},
            "DecodingPolicy",
        ),
        ({"request_id": ""}, "request_id"),
        ({"seed": -1}, "seed"),
    ],
)
async def test_bad_input_raises_value_error(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, change: dict[str, Any], message: str
) -> None:
    """Invalid requests raise ValueError naming the problem at submit."""
    base: dict[str, Any] = {
        "request_id": "r",
        "prompt_ids": [5, 6],
        "decoding": DecodingMode.diffusion(fast(max_new_tokens=32)),
    }
    async with Engine(dlm, tok) as engine:
        with pytest.raises(ValueError, match=message):
            await engine.submit(GenerationRequest(**{**base, **change}))


def test_a_left_to_right_pattern_is_no_diffusion_mode() -> None:
    """Autoregressive decoding with a diffusion pattern cannot be asked for."""
    with pytest.raises(ValueError, match="not a diffusion pattern"):
        DecodingMode.diffusion(fast(), Pattern.AUTOREGRESSIVE)


async def test_remote_code_model_takes_only_the_bidirectional_pattern(
    tok: PreTrainedTokenizerFast, dlm: DLMModel
) -> None:
    """A trust_remote_code model supports the plain uncached call only: other patterns fail."""
    cfg = dlm.config
    view = RemoteConfigView(
        cfg.vocab_size,
        cfg.mask_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
        cfg.max_position_embeddings,
        model_type="llada",
    )
    remote = RemoteCodeModel(dlm, view)
    async with Engine(remote, tok) as engine:
        for pattern in (Pattern.PREFIX_CAUSAL, Pattern.AUTOREGRESSIVE, Pattern.SPECULATIVE):
            with pytest.raises(ValueError, match="only the BIDIRECTIONAL"):
                await engine.submit(req("r", [5, 6], fast(block_size=4, max_new_tokens=8), pattern))
        events = await collect(engine, req("r", [5, 6], fast(block_size=4, max_new_tokens=8)))
    assert final(events).finish_reason in ("end", "length")


async def test_duplicate_id_and_closed_engine(tok: PreTrainedTokenizerFast, dlm: DLMModel) -> None:
    """A running id cannot be reused; a closed engine refuses work and cancels what ran."""
    engine = Engine(dlm, tok)
    stream = await engine.submit(
        req("r", [5, 6], fast(block_size=4, max_new_tokens=64), Pattern.AUTOREGRESSIVE)
    )
    with pytest.raises(ValueError, match="already"):
        await engine.submit(req("r", [5, 6], fast(block_size=4, max_new_tokens=8)))
    await engine.close()
    events = [e async for e in stream]
    assert final(events).finish_reason in ("cancelled", "length")
    with pytest.raises(RuntimeError, match="closed"):
        await engine.submit(req("s", [5, 6], fast(block_size=4, max_new_tokens=8)))


async def test_autoregressive_on_a_bidirectional_model_is_allowed(
    tok: PreTrainedTokenizerFast, llada: nn.Module
) -> None:
    """LLaDA (bidirectional by default) runs autoregressive and speculative modes too."""
    async with Engine(llada, tok) as engine:
        results = await run_all(
            engine,
            [
                req("ar", [3, 4, 5], fast(block_size=4, max_new_tokens=12), Pattern.AUTOREGRESSIVE),
                req("sp", [3, 4, 5], fast(block_size=4, max_new_tokens=12), Pattern.SPECULATIVE),
            ],
        )
    assert final(results["ar"]).token_ids == final(results["sp"]).token_ids


async def test_forward_failure_ends_the_batch_with_error(tok: PreTrainedTokenizerFast) -> None:
    """A forward that raises gives Final 'error' with the message; later requests still run."""
    mask = special_token_ids(tok).mask
    good = agreeing(mask)

    def flaky(ids: torch.Tensor, pos: torch.Tensor, call: int) -> torch.Tensor:
        if call == 2:
            raise RuntimeError("device on fire")
        return good(ids, pos, call)

    model = ScriptedModel(tok, flaky)
    async with Engine(model, tok) as engine:
        failed = final(
            await collect(
                engine, req("a", [20], fast(block_size=4, max_new_tokens=8), Pattern.AUTOREGRESSIVE)
            )
        )
        ok = final(
            await collect(
                engine, req("b", [20], fast(block_size=4, max_new_tokens=8), Pattern.AUTOREGRESSIVE)
            )
        )
    assert failed.finish_reason == "error" and "device on fire" in (failed.error or "")
    assert len(failed.token_ids) == 2
    assert ok.finish_reason == "length"


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ([8, 8, 8, 208], [(0, 3), (3, 4)]),  # a prompt joins decoding rows: two forwards
        ([8] * 15 + [16], [(0, 15), (15, 16)]),  # a finished block's row costs 16 positions
        ([8] * 13 + [16, 16, 250], [(0, 13), (13, 15), (15, 16)]),
        ([8, 8, 8, 8], [(0, 4)]),  # all decoding
        ([208], [(0, 1)]),
        ([8, 8, 8, 16], [(0, 4)]),  # a second call would cost more than the padding
        ([], []),
    ],
)
def test_rows_of_different_lengths_get_their_own_forward(
    lengths: list[int], expected: list[tuple[int, int]]
) -> None:
    """Sorted rows are split where a call's overhead costs less than the padding it saves."""
    assert plan_forwards(lengths) == expected


def test_plan_needs_sorted_rows() -> None:
    """An unsorted batch is a caller's bug, refused."""
    with pytest.raises(ValueError, match="sorted"):
        plan_forwards([16, 8])


@pytest.mark.parametrize(
    "lengths", [[8, 16, 8, 8], [250, 8, 16, 8, 8, 250], [8] * 5, [16, 8], list(range(9, 0, -1))]
)
def test_row_swaps_sort_by_length_with_few_moves(lengths: list[int]) -> None:
    """Applying the swaps sorts the rows; rows already in a fitting place stay."""
    rows = list(lengths)
    swaps = sort_rows(lengths)
    for a, b in swaps:
        rows[a], rows[b] = rows[b], rows[a]
    assert rows == sorted(lengths)
    misplaced = [have != want for have, want in zip(lengths, sorted(lengths), strict=True)]
    assert len(swaps) <= sum(misplaced)


@pytest.mark.parametrize(
    ("pattern", "policy"),
    [
        (Pattern.DEFAULT_DIFFUSION, fast(threshold=0.6, block_size=4, max_new_tokens=12)),
        (Pattern.AUTOREGRESSIVE, fast(block_size=4, max_new_tokens=12)),
        (Pattern.SPECULATIVE, fast(threshold=0.3, block_size=4, max_new_tokens=12)),
    ],
)
async def test_second_round_reuses_the_first_rounds_cache(
    tok: PreTrainedTokenizerFast, dlm: DLMModel, pattern: Pattern, policy: DecodingPolicy
) -> None:
    """A prompt that extends a finished request's tokens prefills only the new part, same output."""
    first = req("round-1", prompt(40, seed=1), policy, pattern)
    async with Engine(dlm, tok) as engine:
        reply = final(await collect(engine, first)).token_ids
        second = req("round-2", [*first.prompt_ids, *reply, *prompt(7, seed=2)], policy, pattern)
        reused = final(await collect(engine, second)).token_ids
        assert engine.stats.prefix_tokens_reused >= len(first.prompt_ids)
    async with Engine(dlm, tok) as fresh:
        assert final(await collect(fresh, second)).token_ids == reused
        assert fresh.stats.prefix_tokens_reused == 0
