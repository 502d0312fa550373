"""The engine's SEEDED_BLOCKS pattern, Nemotron-Labs-Diffusion's default diffusion mode, against
its ``generate`` (:mod:`dlm_runtime.nemotron_generate`) on the tiny checkpoint of
``nemotron_data/``: tokens and forward passes, alone and batched with prompts of other lengths,
greedy and sampled, the end token, and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from dlm_runtime import nemotron_generate as sampler
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.engine import Engine, Event, Final, GenerationRequest
from dlm_runtime.nemotron import NemotronModel
from dlm_runtime.nemotron_policy import nemotron_policy
from dlm_runtime.policies import DecodingPolicy
from dlm_runtime.tokenizer import load_tokenizer
from tests.runtime import test_nemotron
from tests.runtime.recorded import skip_bfloat16_elsewhere
from tests.runtime.test_engine import drain, drain_cancelling
from tests.runtime.test_nemotron import CHECKPOINT, EXPECTED

# test_nemotron.py's fixtures: the checkpoint in both dtypes, and whether this CPU does the
# recording machine's arithmetic.
models = test_nemotron.models
recording_arithmetic = test_nemotron.recording_arithmetic

# Three lengths; the last two share one, so bfloat16's exact batches still batch something.
PROMPTS = [
    [1, 10, 120, 133, 147, 160, 11, 10, 171],
    [1, 10, 140, 151, 11, 10, 177],
    [1, 10, 129, 200, 11, 10, 177],
    [1, 10, 55, 66, 77, 11, 10, 177, 33, 44, 55],
]


def _final(events: Sequence[Event]) -> Final:
    last = events[-1]
    assert isinstance(last, Final)
    return last


async def _serve(
    model: NemotronModel, prompts: Sequence[Sequence[int]], policy: DecodingPolicy, seed: int = 0
) -> list[Final]:
    """Every prompt submitted at once to one engine, its model's own diffusion mode."""
    mode = DecodingMode.diffusion(policy)

    async def run(engine: Engine, i: int, prompt: Sequence[int]) -> Final:
        request = GenerationRequest(f"r{i}", list(prompt), mode, seed)
        return _final([event async for event in await engine.submit(request)])

    async with Engine(model, load_tokenizer(CHECKPOINT)) as engine:
        assert engine.info.default_pattern is Pattern.SEEDED_BLOCKS
        return list(await asyncio.gather(*(run(engine, i, p) for i, p in enumerate(prompts))))


def _generate(
    model: NemotronModel, prompt: Sequence[int], seed: int = 0, **kwargs: Any
) -> tuple[list[int], int]:
    """generate() on ``prompt`` alone: the reply as the engine gives it (cut before the end
    token) and upstream's forward count."""
    torch.manual_seed(seed)
    out, nfe = sampler.generate(model, torch.tensor([list(prompt)]), **kwargs)
    reply: list[int] = out[0, len(prompt) :].tolist()
    end = model.config.eos_token_id
    return (reply[: reply.index(end)] if end in reply else reply), nfe


_SETTINGS = [
    pytest.param(4, 0.9, id="block4-threshold0.9"),
    pytest.param(4, 0.3, id="block4-threshold0.3"),
    pytest.param(8, None, id="block8-one-per-step"),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("block", "threshold"), _SETTINGS)
async def test_batched_requests_each_equal_generate_alone(
    models: dict[str, NemotronModel], dtype: str, block: int, threshold: float | None
) -> None:
    """Four prompts of three lengths decoded together: each reply is generate()'s for that
    prompt alone, and each request's forward passes are generate()'s ``nfe`` (the engine's
    prefill, which upstream does not count, stands in for the last block's write, which the
    engine skips)."""
    model = models[dtype]
    finals = await _serve(model, PROMPTS, nemotron_policy(16, block, threshold))
    for prompt, final in zip(PROMPTS, finals, strict=True):
        reply, nfe = _generate(
            model, prompt, max_new_tokens=16, block_length=block, threshold=threshold
        )
        assert final.token_ids == reply
        assert final.usage.forward_passes == nfe
        assert final.finish_reason == "length"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
async def test_sampled_requests_equal_generate_with_the_same_seed(
    models: dict[str, NemotronModel], dtype: str
) -> None:
    """At temperature 0.8 a request seeded like ``torch.manual_seed`` draws what generate()
    draws (Gumbel noise per step, a multinomial seed per block), batched or not."""
    model = models[dtype]
    policy = nemotron_policy(16, 4, 0.5, temperature=0.8)
    finals = await _serve(model, PROMPTS[:2], policy, seed=7)
    for prompt, final in zip(PROMPTS[:2], finals, strict=True):
        reply, nfe = _generate(
            model, prompt, 7, max_new_tokens=16, block_length=4, threshold=0.5, temperature=0.8
        )
        assert (final.token_ids, final.usage.forward_passes) == (reply, nfe)


def _recorded_cases() -> list[Any]:
    """generate()'s recorded single-prompt cases the engine can run (causal context on)."""
    return [
        pytest.param(case, id=f"{case['dtype']}-" + ",".join(f"{k}={v}" for k, v in kw.items()))
        for case in EXPECTED["cases"]
        for kw in [case["kwargs"]]
        if case["method"] == "generate"
        and len(case["prompt"]) == 1
        and kw.get("causal_context", True)
    ]


@pytest.mark.parametrize("case", _recorded_cases())
async def test_equals_the_recorded_upstream_outputs(
    models: dict[str, NemotronModel],
    case: dict[str, Any],
    recording_arithmetic: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine against upstream's own recorded ``generate`` outputs and forward counts
    (bfloat16 where this CPU does the recording machine's arithmetic)."""
    skip_bfloat16_elsewhere(case["dtype"], recording_arithmetic)
    model, kw = models[case["dtype"]], case["kwargs"]
    end = kw.get("eos_token_id", model.config.eos_token_id)
    monkeypatch.setattr(model.config, "eos_token_id", end)  # the engine stops at the config's
    policy = nemotron_policy(
        kw["max_new_tokens"], kw["block_length"], kw["threshold"], kw.get("temperature", 0.0)
    )
    prompt = case["prompt"][0]
    (final,) = await _serve(model, [prompt], policy, seed=case["seed"])
    reply = case["output"][0][len(prompt) :]
    assert final.token_ids == (reply[: reply.index(end)] if end in reply else reply)
    assert final.usage.forward_passes == case["nfe"]


@pytest.mark.parametrize(
    ("end", "stops_at"),
    [
        pytest.param(166, 2, id="inside-a-block"),
        pytest.param(36, 4, id="a-blocks-causal-first-token"),
    ],
)
async def test_the_end_token_stops_the_reply(
    models: dict[str, NemotronModel], monkeypatch: pytest.MonkeyPatch, end: int, stops_at: int
) -> None:
    """The reply ends before the model's end token, where generate() cuts it, with its forward
    count: inside a block, and as the causal token that starts the second block (upstream still
    runs that block's first step, so the engine does too)."""
    model = models["float32"]
    monkeypatch.setattr(model.config, "eos_token_id", end)
    finals = await _serve(model, PROMPTS, nemotron_policy(16, 4, 0.9))
    for prompt, final in zip(PROMPTS, finals, strict=True):
        reply, nfe = _generate(model, prompt, max_new_tokens=16, block_length=4, threshold=0.9)
        assert (final.token_ids, final.usage.forward_passes) == (reply, nfe)
    assert finals[0].finish_reason == "end"
    assert len(finals[0].token_ids) == stops_at


async def test_one_token_blocks_are_causal_decoding(models: dict[str, NemotronModel]) -> None:
    """Blocks of one position have nothing to denoise: every token is the causal forward's,
    as in generate(block_length=1), which is ar_generate()."""
    model = models["float32"]
    finals = await _serve(model, PROMPTS[:2], nemotron_policy(8, 1, 0.9))
    for prompt, final in zip(PROMPTS[:2], finals, strict=True):
        reply, nfe = _generate(model, prompt, max_new_tokens=8, block_length=1, threshold=0.9)
        ar, _ = sampler.ar_generate(model, torch.tensor([prompt]), max_new_tokens=8)
        assert final.token_ids == reply == ar[0, len(prompt) :].tolist()[: len(reply)]
        assert final.usage.forward_passes == nfe


async def test_cancel_frees_the_row(models: dict[str, NemotronModel]) -> None:
    """A request cancelled mid-reply ends "cancelled" and leaves the batch at once; the other
    one decodes as it would alone."""
    model = models["float32"]
    policy = nemotron_policy(16, 4, 0.9)
    mode = DecodingMode.diffusion(policy)
    want, _ = _generate(model, PROMPTS[1], max_new_tokens=16, block_length=4, threshold=0.9)
    async with Engine(model, load_tokenizer(CHECKPOINT)) as engine:
        stream_a = await engine.submit(GenerationRequest("a", PROMPTS[0], mode, 0))
        stream_b = await engine.submit(GenerationRequest("b", PROMPTS[1], mode, 0))
        events_a, events_b = await asyncio.gather(
            drain_cancelling(engine, stream_a, "a", 3), drain(stream_b)
        )
        batches = list(engine.stats.batches)
    assert _final(events_a).finish_reason == "cancelled"
    assert _final(events_b).token_ids == want
    last_a = max(i for i, b in enumerate(batches) if "a" in b)
    assert last_a < len(batches) - 1 and all(b == ("b",) for b in batches[last_a + 1 :])


async def test_a_stored_prompt_prefix_gives_the_same_reply(
    models: dict[str, NemotronModel],
) -> None:
    """A second request on the same long prompt starts from the first one's cached K/V (the
    engine's prefix reuse); its reply and forward count are generate()'s still."""
    model = models["float32"]
    prompt = [1, 10, 120, 133, 147, 160, 11, 10, 171, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17]
    mode = DecodingMode.diffusion(nemotron_policy(16, 4, 0.9))
    reply, nfe = _generate(model, prompt, max_new_tokens=16, block_length=4, threshold=0.9)
    async with Engine(model, load_tokenizer(CHECKPOINT)) as engine:
        for rid in ("first", "second"):
            request = GenerationRequest(rid, prompt, mode, 0)
            final = _final([event async for event in await engine.submit(request)])
            assert (final.token_ids, final.usage.forward_passes) == (reply, nfe)
        assert engine.stats.prefix_tokens_reused == len(prompt) - 1
