"""DiffusionGemma through the engine (issue 18, item 5), against transformers' own generate.

Every request is compared with :func:`dlm_runtime.diffusion_gemma.generate` (transformers'
``generate``, token-exact per tests/runtime/test_diffusion_gemma.py) on its prompt alone after
``torch.manual_seed(seed)``: alone, and batched with requests of other prompt lengths (longer
and shorter than the tiny model's sliding window of 8) that join at different steps. float32
on CPU, one torch thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime import load_model
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.diffusion_gemma import (
    DiffusionGemmaModel,
    diffusion_gemma_policy,
    generate,
    new_tokens,
)
from dlm_runtime.engine import Draft, Engine, EngineStats, Event, Final, GenerationRequest
from dlm_runtime.engine.canvas import CanvasRunner, CanvasState
from dlm_runtime.engine.states import Handle, ModelInfo
from dlm_runtime.tokenizer import load_tokenizer
from tests.runtime import test_diffusion_gemma
from tests.runtime.test_engine import collect, drain, drain_cancelling

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS: dict[str, Any] = {
    "max_denoising_steps": 6,
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}
NEW = 16  # two canvases of 8
PROMPTS = [[2, 3, 40, 41, 42, 4, 3], [2, 50], [2, *range(60, 77)], [2, 9, 90, 91, 92]]


# test_diffusion_gemma.py's fixtures: the tiny checkpoint and its model in float32.
checkpoint = test_diffusion_gemma.checkpoint
model = test_diffusion_gemma.model


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path) -> PreTrainedTokenizerFast:
    return load_tokenizer(checkpoint)


def reference(
    model: DiffusionGemmaModel, prompt: list[int], seed: int, **settings: Any
) -> tuple[list[int], list[list[int]]]:
    """generate() on the prompt alone: (its new tokens, its draft canvases)."""
    drafts: list[list[int]] = []
    options = {**SETTINGS, "max_new_tokens": NEW, "entropy_bound": 0.1, **settings}
    torch.manual_seed(seed)
    out = generate(
        model, torch.tensor([prompt]), on_draft=lambda t: drafts.append(t[0].tolist()), **options
    )
    eos = options.get("eos_token_id")
    # Without an end token in the settings generate() stops at none (the model config's is not
    # read), and neither does the engine.
    tokens = (
        out[0, len(prompt) :].tolist()
        if eos is None
        else new_tokens(model, out, len(prompt), eos)[0]
    )
    return tokens, drafts


def request(rid: str, prompt: list[int], seed: int, **settings: Any) -> GenerationRequest:
    policy = diffusion_gemma_policy(NEW, **{**SETTINGS, "entropy_bound": 0.1, **settings})
    mode = DecodingMode("diffusion-gemma", Pattern.DEFAULT_DIFFUSION, policy)
    return GenerationRequest(rid, prompt, mode, seed)


def final(events: list[Event]) -> Final:
    last = events[-1]
    assert isinstance(last, Final), last
    assert last.finish_reason != "error", last.error
    return last


@pytest.mark.parametrize(("seed", "bound"), [(0, 0.1), (1, 0.1), (2, 2.0)])
async def test_one_request_equals_generate(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast, seed: int, bound: float
) -> None:
    """Same tokens, a Draft per denoising step showing upstream's draft canvas."""
    want, drafts = reference(model, PROMPTS[0], seed, entropy_bound=bound)
    async with Engine(model, tokenizer) as engine:
        events = await collect(engine, request("a", PROMPTS[0], seed, entropy_bound=bound))
    got = final(events)
    assert got.token_ids == want
    assert got.finish_reason == "length"
    shown = [e for e in events if isinstance(e, Draft)]
    assert [d.token_ids[len(d.token_ids) - 8 :] for d in shown] == drafts
    assert got.usage.forward_passes == len(drafts)


@pytest.mark.parametrize("exact_batches", [False, True])
async def test_mixed_lengths_batched_equal_each_alone(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast, exact_batches: bool
) -> None:
    """Four prompts of 2 to 18 tokens, each joining when the one before it has made two
    drafts (so rows at a canvas's first step share forwards with rows further on): each
    request's tokens are generate()'s on its prompt alone (padded batches, and batches of
    equal cache lengths)."""
    wants = [reference(model, p, 10 + i)[0] for i, p in enumerate(PROMPTS)]
    async with Engine(model, tokenizer, exact_batches=exact_batches) as engine:
        started = [asyncio.Event() for _ in PROMPTS]

        async def run(i: int) -> list[Event]:
            if i:
                await started[i - 1].wait()
            events: list[Event] = []
            async for event in await engine.submit(request(f"r{i}", PROMPTS[i], 10 + i)):
                events.append(event)
                if isinstance(event, Draft) and event.step == 2:
                    started[i].set()
            return events

        results = await asyncio.gather(*(run(i) for i in range(len(PROMPTS))))
        batches = list(engine.stats.batches)
    assert [final(r).token_ids for r in results] == wants
    assert max(len(b) for b in batches) >= 3  # they did share steps


async def test_adaptive_stopping_ends_canvases_early(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Loose thresholds end each canvas at its first step, as upstream's do."""
    loose = {"confidence_threshold": 50.0, "stability_threshold": 0}
    want, drafts = reference(model, PROMPTS[3], 7, **loose)
    async with Engine(model, tokenizer) as engine:
        got = final(await collect(engine, request("a", PROMPTS[3], 7, **loose)))
    assert got.token_ids == want
    assert got.usage.forward_passes == len(drafts) == 2  # one step per canvas


async def test_end_token_ends_the_reply(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    """An end token (whatever the first canvas emits at its third position) ends the reply
    there, without it and without a second canvas, as generate() pads after it."""
    free, _ = reference(model, PROMPTS[0], 0)
    end = free[2]
    want, _ = reference(model, PROMPTS[0], 0, eos_token_id=end, pad_token_id=0)
    assert want[-1] == end and len(want) <= 8
    async with Engine(model, tokenizer) as engine:
        got = final(await collect(engine, request("a", PROMPTS[0], 0, eos_token_id=end)))
    assert got.finish_reason == "end"
    assert got.token_ids == want[:-1]


async def test_cancel_frees_the_row(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    want = reference(model, PROMPTS[1], 4)[0]
    async with Engine(model, tokenizer) as engine:
        stream_a = await engine.submit(request("a", PROMPTS[0], 3))
        stream_b = await engine.submit(request("b", PROMPTS[1], 4))
        events_a, events_b = await asyncio.gather(
            drain_cancelling(engine, stream_a, "a", 2), drain(stream_b)
        )
        batches = list(engine.stats.batches)
    last = events_a[-1]
    assert isinstance(last, Final) and last.finish_reason == "cancelled"
    assert final(events_b).token_ids == want
    last_a = max(i for i, b in enumerate(batches) if "a" in b)
    assert last_a < len(batches) - 1 and batches[last_a + 1] == ("b",)


async def test_bfloat16_equals_generate(
    checkpoint: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    """bfloat16, the published dtype: alone, and batched with a prompt of the same length
    (exact_batches, the default below float32, keeps rows of other lengths apart)."""
    model = load_model(checkpoint, dtype="bfloat16")
    assert isinstance(model, DiffusionGemmaModel)
    prompts = [PROMPTS[0], [2, 5, 60, 61, 62, 9, 3]]
    wants = [reference(model, p, 20 + i)[0] for i, p in enumerate(prompts)]
    async with Engine(model, tokenizer) as engine:
        assert engine.exact_batches
        alone = final(await collect(engine, request("a", prompts[0], 20))).token_ids
        together = await asyncio.gather(
            *(collect(engine, request(f"r{i}", p, 20 + i)) for i, p in enumerate(prompts))
        )
    assert alone == wants[0]
    assert [final(r).token_ids for r in together] == wants


async def test_bad_requests_are_refused(
    model: DiffusionGemmaModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    policy = diffusion_gemma_policy(NEW)
    async with Engine(model, tokenizer) as engine:
        with pytest.raises(ValueError, match="DiffusionGemma decodes only with its own sampler"):
            await engine.submit(
                GenerationRequest("a", [2, 3], DecodingMode.autoregressive(policy), 0)
            )
        with pytest.raises(ValueError, match="prompt too long"):
            await engine.submit(request("b", [2] * 250, 0))
    with pytest.raises(ValueError, match="unknown DiffusionGemma settings"):
        diffusion_gemma_policy(NEW, temperature=0.5)


def test_rows_at_different_steps_share_a_forward(model: DiffusionGemmaModel) -> None:
    """One decoder forward for a row further on and a row at its canvas's first step (no
    self-conditioning yet: a zeroed signal through self_conditioning_mask), with caches of 7
    and 18 tokens: each row's logits are its logits alone, to float32 rounding. (Tokens are
    robust to small changes on this tiny model, so the logits are compared here.)"""
    info = ModelInfo(-1, None, 0, 300, 256, torch.device("cpu"), Pattern.BIDIRECTIONAL)

    def state(prompt: list[int], seed: int) -> CanvasState:
        req = request("x", prompt, seed)
        handle = Handle(
            req, cast(Any, None), cast(Any, None), 0.0, Pattern.BIDIRECTIONAL, cast(Any, None)
        )
        return CanvasState(handle, info, EngineStats(), model)

    runner = CanvasRunner(model, torch.device("cpu"), EngineStats(), exact_batches=False)
    with torch.no_grad():
        ahead, fresh = state(PROMPTS[0], 0), state(PROMPTS[2], 1)
        ahead.consume(runner.decode([ahead])[0])
        alone = [runner.decode([s])[0] for s in (ahead, fresh)]
        together = runner.decode([ahead, fresh])
    assert ahead.self_conditioning is not None and fresh.self_conditioning is None
    for got, want in zip(together, alone, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
