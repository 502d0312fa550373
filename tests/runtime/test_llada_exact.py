"""LLaDA exact to upstream's generate() in every dtype (issue 18, item 3).

Upstream is :mod:`dlm_runtime.llada_generate`, the transcription of ML-GSAI/LLaDA generate.py:
since mid-2025 it computes the ``low_confidence`` softmax in the logits' dtype, before that in
float64 (kept as ``confidence_dtype="float64"``). All on tiny random LLaDA-layout checkpoints.

Checked once outside the repository against upstream itself (modeling_llada.py and today's
generate.py from scratch copies, CPU): the native model's bf16 logits equal upstream's bit for
bit, and the engine matched upstream's generate() on 240 of 240 batched requests (float32 and
bf16, two layouts, greedy, Gumbel, random remasking, cfg_scale 1.0 and 1.5). Upstream's
generate() needs an ``attention_mask`` with ``cfg_scale`` > 0 (without one it fails on an
unbound local), so guidance was compared with an all-ones mask.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime import llada_generate, load_model
from dlm_runtime.decoding import Pattern
from dlm_runtime.engine import Engine
from dlm_runtime.policies import fast, fixed_schedule
from dlm_runtime.tokenizer import train_tokenizer
from tests.runtime.test_engine import CORPUS, NoMask, collect, final, req, run_all
from tests.runtime.test_llada import MASK, write_checkpoint

KW: dict[str, Any] = {"steps": 12, "gen_length": 24, "block_length": 8}


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=400)


def bf16_llada(path: Path, seed_variant: str = "tied-gqa") -> nn.Module:
    write_checkpoint(path, seed_variant)
    return NoMask(load_model(path, dtype=torch.bfloat16))


def prompts(*lengths: int) -> list[list[int]]:
    return [random.Random(10 + i).choices(range(3, 44), k=n) for i, n in enumerate(lengths)]


def upstream(model: nn.Module, ids: list[int], seed: int = 1234, **kw: Any) -> list[int]:
    torch.manual_seed(seed)
    out = llada_generate.generate(model, torch.tensor([ids]), mask_id=MASK, **{**KW, **kw})
    return out[0, len(ids) :].tolist()


def policy(**kw: Any) -> Any:
    return fixed_schedule(**{**KW, **kw})


@pytest.mark.parametrize(
    ("temperature", "remasking"),
    [(0.0, "low_confidence"), (0.8, "low_confidence"), (1.0, "random")],
)
async def test_bf16_equals_upstream_alone_and_in_mixed_batch(
    tmp_path: Path, tok: PreTrainedTokenizerFast, temperature: float, remasking: str
) -> None:
    """bfloat16: the engine equals upstream's generate() per request, alone and batched with
    requests of other prompt lengths."""
    model = bf16_llada(tmp_path)
    ps = prompts(5, 9, 3, 5)
    kw: dict[str, Any] = {"temperature": temperature, "remasking": remasking}
    want = [upstream(model, p, **kw) for p in ps]
    requests = [
        req(f"r{i}", p, policy(**kw), Pattern.BIDIRECTIONAL, seed=1234) for i, p in enumerate(ps)
    ]
    async with Engine(model, tok) as engine:
        alone = [final(await collect(engine, r)).token_ids for r in requests]
        batched = await run_all(engine, requests)
    assert alone == want
    assert [final(batched[f"r{i}"]).token_ids for i in range(len(ps))] == want


async def test_float64_confidence_reproduces_older_upstream(
    tmp_path: Path, tok: PreTrainedTokenizerFast
) -> None:
    """confidence_dtype="float64" equals upstream before mid-2025; in bf16 the two differ."""
    model = bf16_llada(tmp_path)
    ps = prompts(*range(3, 15))
    kw: dict[str, Any] = {"steps": 16, "gen_length": 32, "block_length": 16}
    new = [upstream(model, p, **kw) for p in ps]
    old = [upstream(model, p, **kw, confidence_dtype="float64") for p in ps]
    assert sum(a != b for a, b in zip(new, old, strict=True)) >= 2  # bf16 ties break apart
    for dtype, want in (("float64", old), ("logits", new)):
        requests = [
            req(f"r{i}", p, policy(**kw, confidence_dtype=dtype), Pattern.BIDIRECTIONAL, seed=1234)
            for i, p in enumerate(ps)
        ]
        async with Engine(model, tok) as engine:
            batched = await run_all(engine, requests)
        assert [final(batched[f"r{i}"]).token_ids for i in range(len(ps))] == want


async def test_exact_batches_default_and_cost(tmp_path: Path, tok: PreTrainedTokenizerFast) -> None:
    """exact_batches is on by default only below float32, and makes bf16 batches exact.

    (Without it bf16 rows drift from their solo output on most runs, but not on all: the
    kernels' rounding depends on how many threads OpenMP grants under load, so that is not
    asserted.)"""
    model = bf16_llada(tmp_path)
    ps = prompts(5, 9, 3, 5)
    want = [upstream(model, p) for p in ps]
    requests = [
        req(f"r{i}", p, policy(), Pattern.BIDIRECTIONAL, seed=1234) for i, p in enumerate(ps)
    ]
    async with Engine(model, tok) as exact, Engine(model, tok, exact_batches=False) as padded:
        assert exact.exact_batches and not padded.exact_batches
        got_exact = await run_all(exact, requests)
    assert [final(got_exact[f"r{i}"]).token_ids for i in range(4)] == want
    write_checkpoint(tmp_path / "f32", "tied-gqa")
    async with Engine(NoMask(load_model(tmp_path / "f32")), tok) as f32:
        assert not f32.exact_batches


# --- loading ---------------------------------------------------------------------------------


def test_bf16_checkpoint_loads_as_float32_without_a_second_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bf16 tensor is cast as it is read: at most one checkpoint-dtype tensor is alive."""
    import weakref

    from dlm_runtime import loading

    cfg = write_checkpoint(tmp_path / "f32", "untied-gqa")
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    (bf16 / "config.json").write_text((tmp_path / "f32" / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "f32" / "model.safetensors"))
    save_file({k: v.bfloat16() for k, v in weights.items()}, str(bf16 / "model.safetensors"))
    alive: list[weakref.ref[torch.Tensor]] = []
    most_alive = 0
    real_read = loading._read_tensors

    def watched(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
        nonlocal most_alive
        for name, t in real_read(file):
            alive.append(weakref.ref(t))
            most_alive = max(most_alive, sum(r() is not None for r in alive))
            yield name, t
            del t

    monkeypatch.setattr(loading, "_read_tensors", watched)
    model = load_model(bf16, dtype=torch.float32)
    assert len(alive) == len(weights) > 10
    assert most_alive == 1  # the previous bf16 tensor is gone before the next is read
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, p in model.state_dict().items():
        torch.testing.assert_close(p, weights[name].bfloat16().float(), atol=0, rtol=0)
    assert cfg["n_layers"] == 2


def test_remote_code_failure_is_a_checkpoint_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote code that breaks under the installed transformers (an AttributeError, as LLaDA's
    modeling_llada.py raises under transformers 5) becomes a CheckpointError saying so."""
    import transformers

    from dlm_runtime import CheckpointError

    write_checkpoint(tmp_path, block_type="sequential")

    def broken(path: str, **kwargs: Any) -> None:
        raise AttributeError("'LLaDAConfig' object has no attribute 'rope_scaling'")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", broken)
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path, trust_remote_code=True)
    message = str(info.value)
    assert str(tmp_path) in message and "trust_remote_code=True" in message
    assert f"transformers {transformers.__version__}" in message
    assert "AttributeError" in message and "rope_scaling" in message
    assert isinstance(info.value.__cause__, AttributeError)


# --- classifier-free guidance ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("cfg_scale", "temperature", "remasking"),
    [(1.5, 0.0, "low_confidence"), (1.0, 0.5, "random"), (0.5, 0.8, "low_confidence")],
)
async def test_cfg_scale_equals_upstream_guidance(
    tmp_path: Path,
    tok: PreTrainedTokenizerFast,
    dtype: torch.dtype,
    cfg_scale: float,
    temperature: float,
    remasking: str,
) -> None:
    """cfg_scale in fixed_schedule + the engine == upstream generate(cfg_scale=...), alone and
    in a batch with unguided requests and other prompt lengths."""
    write_checkpoint(tmp_path, "untied-gqa")
    model = NoMask(load_model(tmp_path, dtype=dtype))
    ps = prompts(5, 8, 3)
    kw: dict[str, Any] = {"temperature": temperature, "remasking": remasking}
    want = [upstream(model, p, cfg_scale=cfg_scale, **kw) for p in ps]
    unguided = upstream(model, ps[0], **kw)
    assert want[0] != unguided  # guidance changes the reply on these weights
    guided = [
        req(f"g{i}", p, policy(cfg_scale=cfg_scale, **kw), Pattern.BIDIRECTIONAL, seed=1234)
        for i, p in enumerate(ps)
    ]
    plain = req("plain", ps[0], policy(**kw), Pattern.BIDIRECTIONAL, seed=1234)
    # A cached row in the same step: guidance rows then take a forward of their own.
    cached = req("cached", ps[1], fast(0.5, 4, 8), Pattern.PREFIX_CAUSAL)
    async with Engine(model, tok) as engine:
        alone = final(await collect(engine, guided[0])).token_ids
        batched = await run_all(engine, [*guided, plain, cached])
    assert alone == want[0]
    assert [final(batched[f"g{i}"]).token_ids for i in range(len(ps))] == want
    assert final(batched["plain"]).token_ids == unguided


async def test_cfg_scale_needs_bidirectional(tok: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    """Guidance in another pattern is refused at submit; a negative scale at policy build."""
    write_checkpoint(tmp_path, "tied-gqa")
    with pytest.raises(ValueError, match="cfg_scale"):
        policy(cfg_scale=-1.0)
    async with Engine(NoMask(load_model(tmp_path)), tok) as engine:
        with pytest.raises(ValueError, match="BIDIRECTIONAL"):
            await engine.submit(req("x", [3, 4], policy(cfg_scale=1.0), Pattern.PREFIX_CAUSAL))


def test_remote_code_that_cannot_run_fails_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote code that loads but whose forward raises is refused at load, not at a turn."""
    import transformers

    from dlm_runtime import CheckpointError

    write_checkpoint(tmp_path, block_type="sequential")

    class Broken(nn.Module):
        def forward(self, input_ids: torch.Tensor) -> Any:
            raise AttributeError("'LLaDAConfig' object has no attribute 'use_cache'")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda path, **kwargs: Broken())
    with pytest.raises(CheckpointError, match=r"forward fails under transformers .*use_cache"):
        load_model(tmp_path, trust_remote_code=True)
