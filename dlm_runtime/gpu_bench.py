"""Every supported family at real size on one device: ``python -m dlm_runtime.gpu_bench``.

For each family a random-weight model is built from the published checkpoint's config (written
below, nothing is downloaded; ``--layers`` keeps fewer layers where memory or time requires),
then, side by side in one report:

* the family's own sampler run one request at a time, the baseline a user would otherwise run
  (LLaDA: :func:`dlm_runtime.llada_generate.generate`; Dream:
  :func:`dlm_runtime.dream_generate.diffusion_generate`; DiffusionGemma:
  :func:`dlm_runtime.diffusion_gemma.generate`, transformers' own, seeded with 0;
  Nemotron-Labs-Diffusion twice: ``ar_generate`` against the engine's AUTOREGRESSIVE pattern and
  ``linear_spec_generate`` against its SPECULATIVE one (:mod:`dlm_runtime.nemotron_generate`);
  the native family has no sampler besides the engine, so its baseline is the engine given one
  request at a time);
* the engine's tokens/s with 1, 8 and 32 requests submitted at once (``--requests``);
* exactness: whether the engine's reply ids equal the baseline's, request by request, for the
  first ``--exact`` requests of each load.

The engine runs with its defaults: below float32 only rows of equal length share a forward
(``Engine(exact_batches=None)``), so mixed ``--prompt-lengths`` cost forwards there.
``--padded`` batches them together as a worker does (``workers/generator.py``), where a reply
may differ from the same request alone by a bfloat16 rounding.

Every diffusion reply is greedy (temperature 0) with a fixed schedule (``--tokens-per-step``
tokens per forward, no early stop), so the work per request does not depend on the random
weights; Nemotron's are greedy left to right and end at its end token, as its samplers' do
(``--block`` masks drafted per speculative forward). Prompts
are random ids of ``--prompt-lengths`` tokens (a list cycles over the requests).

DiffusionGemma samples (its canvas starts as noise): every request is seeded with 0, as its
baseline is, and decodes with upstream's own settings but the reply length (48 denoising steps
per 256-token canvas, fewer where its adaptive stopping ends a canvas; whole canvases counted).
``--sizes`` prints each family's parameters and weight memory without building anything.

``--tiny`` shrinks every config (a few layers of width 64, small vocabularies) so the whole run
takes seconds on a CPU: that is how tests keep this script working; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime import nemotron_generate
from dlm_runtime.bench import cpu_name, load_average, run_engine
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.diffusion_gemma import DiffusionGemmaModel, check_config, diffusion_gemma_policy
from dlm_runtime.diffusion_gemma import generate as diffusion_gemma_generate
from dlm_runtime.dream import DreamModel
from dlm_runtime.dream_generate import diffusion_generate
from dlm_runtime.dream_policy import dream_policy
from dlm_runtime.engine import GenerationRequest
from dlm_runtime.llada import LLaDAModel
from dlm_runtime.llada_generate import generate as llada_generate
from dlm_runtime.modeling import DLMConfig, DLMModel
from dlm_runtime.nemotron import NemotronModel
from dlm_runtime.policies import DecodingPolicy, fast, fixed_schedule
from dlm_runtime.tokenizer import special_token_ids, train_tokenizer

__all__ = ["FAMILIES", "main"]

# --- the published configs ----------------------------------------------------------------------

# The bundled checkpoint's shape (dlm_runtime.bench.SHAPE, assistant/checkpoints/
# train_bundled.json): the only native checkpoint there is. Token ids come from the tokenizer.
NATIVE = {
    "hidden_size": 192,
    "intermediate_size": 576,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "vocab_size": 8192,
}

# GSAI-ML/LLaDA-8B-Instruct config.json (the keys the native implementation reads).
LLADA_8B = {
    "model_type": "llada",
    "activation_type": "silu",
    "block_type": "llama",
    "d_model": 4096,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "mlp_hidden_size": 12288,
    "vocab_size": 126464,
    "embedding_size": 126464,
    "max_sequence_length": 4096,
    "rope": True,
    "rope_theta": 500000.0,
    "layer_norm_type": "rms",
    "rms_norm_eps": 1e-05,
    "include_bias": False,
    "include_qkv_bias": False,
    "weight_tying": False,
    "mask_token_id": 126336,
    "eos_token_id": 126081,
    "pad_token_id": 126081,
}

# Dream-org/Dream-v0-Instruct-7B config.json (Qwen2.5-7B's shape).
DREAM_7B = {
    "model_type": "Dream",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "mask_token_id": 151666,
    "eos_token_id": 151643,
    "pad_token_id": 151643,
}

# The smallest vision tower DiffusionGemma's class builds (one layer): prompts are text only.
ONE_LAYER_VISION: dict[str, Any] = {
    "model_type": "gemma4_vision",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "position_embedding_size": 16,
}

# google/diffusiongemma-26B-A4B-it's text model, Gemma 4 26B-A4B's shape (25.2B parameters:
# 128 experts, 8 active). Its config.json could not be read here; these values come from
# transformers' DiffusionGemmaTextConfig and public descriptions of Gemma 4 26B-A4B, and give
# its published parameter count. The vision tower is one small layer: prompts are text only.
DIFFUSION_GEMMA_26B = {
    "canvas_length": 256,
    "text_config": {
        "vocab_size": 262144,
        "hidden_size": 2816,
        "intermediate_size": 2112,
        "num_hidden_layers": 30,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "global_head_dim": 512,
        "num_global_key_value_heads": 2,
        "max_position_embeddings": 262144,
        "sliding_window": 1024,
        "num_experts": 128,
        "top_k_experts": 8,
        "moe_intermediate_size": 704,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    },
    "vision_config": ONE_LAYER_VISION,
}

# nvidia/Nemotron-Labs-Diffusion-8B: Ministral 3 8B's shape (34 layers, hidden 4096, 32 query
# heads of 128 and 8 kv heads, SwiGLU 14336, vocabulary 131072, untied head) as NVIDIA's Megatron
# Bridge documents it, with the family's rope_parameters and token ids as the tiny test
# checkpoint records them (tests/runtime/nemotron_data). Its config.json could not be read here.
NEMOTRON_8B = {
    "model_type": "nemotron_labs_diffusion",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 34,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 131072,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
    "rope_parameters": {
        "rope_type": "yarn",
        "rope_theta": 1000000.0,
        "factor": 16.0,
        "original_max_position_embeddings": 16384,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": 0.1,
    },
    "mask_token_id": 100,
    "eos_token_id": 11,
    "bos_token_id": 1,
}

# --tiny: the same layouts at a width a CPU runs in seconds (token ids moved into the vocab).
_TINY_WIDTH = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
TINY: dict[str, dict[str, Any]] = {
    "native": {**_TINY_WIDTH, "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 512},
    "llada": {
        "d_model": 64,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 2,
        "mlp_hidden_size": 128,
        "vocab_size": 512,
        "embedding_size": 512,
        "mask_token_id": 500,
        "eos_token_id": 501,
        "pad_token_id": 501,
    },
    "dream": {
        **_TINY_WIDTH,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "mask_token_id": 500,
        "eos_token_id": 501,
        "pad_token_id": 501,
    },
    "nemotron-ar": {
        **_TINY_WIDTH,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 512,
    },
    "diffusion_gemma": {
        "canvas_length": 8,
        "text_config": {
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "global_head_dim": 16,
            "num_global_key_value_heads": 1,
            "sliding_window": 8,
            "num_experts": 4,
            "top_k_experts": 2,
            "moe_intermediate_size": 32,
        },
    },
}


@dataclass(frozen=True)
class Settings:
    """What every family decodes: the same reply length and work per token."""

    new_tokens: int
    block: int
    tokens_per_step: int

    @property
    def steps(self) -> int:
        return self.new_tokens // self.tokens_per_step


# --- random weights -----------------------------------------------------------------------------


# A family's model at ``config``'s size on ``device`` in ``dtype``, its weights random.
Build = Callable[[dict[str, Any], PreTrainedTokenizerFast, torch.device, torch.dtype], nn.Module]


def _random_weights(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Give a module built on the meta device random tensors, assigned as ``load_model`` does.

    Scales of norms are 1 and biases 0; matrices are N(0, 0.02), generated on ``device`` in
    ``dtype`` so an 8B model never exists in float32 or on the host.
    """
    if device.type == "meta":  # only its size is asked for (--sizes)
        return
    generator = torch.Generator(device=device).manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, meta in model.state_dict().items():
        tensor = torch.empty(meta.shape, device=device, dtype=dtype)
        if meta.ndim >= 2:
            tensor.normal_(0.0, 0.02, generator=generator)
        else:
            tensor.fill_(0.0 if name.endswith("bias") else 1.0)
        weights[name] = tensor
    model.load_state_dict(weights, strict=True, assign=True)


def _on_device(
    make: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """A runtime-native model: built on the meta device as ``load_model`` builds it, then filled."""
    with torch.device("meta"):
        model = make()
    _random_weights(model, device, dtype, seed=0)
    return model.eval()


def build_native(
    config: dict[str, Any], tok: PreTrainedTokenizerFast, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    ids = special_token_ids(tok)
    cfg = DLMConfig(**config, mask_token_id=ids.mask, eos_token_id=ids.end, pad_token_id=ids.pad)
    return _on_device(lambda: DLMModel(cfg), device, dtype)


def build_from_dict(model_class: Callable[[dict[str, Any]], nn.Module]) -> Build:
    """The build of a family whose model class validates its config.json dict itself."""

    def build(
        config: dict[str, Any],
        tok: PreTrainedTokenizerFast,
        device: torch.device,
        dtype: torch.dtype,
    ) -> nn.Module:
        return _on_device(lambda: model_class(config), device, dtype)

    return build


def build_diffusion_gemma(
    config: dict[str, Any], tok: PreTrainedTokenizerFast, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """transformers' own class with its own initialisation, built directly on ``device``."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    hf_config = DiffusionGemmaConfig(
        text_config=dict(config["text_config"]),
        vision_config=dict(config["vision_config"]),
        canvas_length=config["canvas_length"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        inner = DiffusionGemmaForBlockDiffusion._from_config(hf_config, dtype=dtype)
    return DiffusionGemmaModel(
        inner.eval(), check_config({**config, "model_type": "diffusion_gemma"})
    )


# --- each family's own sampler, one request ---------------------------------------------------

Baseline = Callable[[nn.Module, list[int], Settings], list[int]]


def llada_baseline(model: nn.Module, prompt: list[int], s: Settings) -> list[int]:
    ids = torch.tensor([prompt], device=_device(model))
    out = llada_generate(
        model,
        ids,
        steps=s.steps,
        gen_length=s.new_tokens,
        block_length=s.block,
        temperature=0.0,
        mask_id=model.config.mask_token_id,
    )
    return [int(t) for t in out[0, len(prompt) :].tolist()]


def dream_baseline(model: nn.Module, prompt: list[int], s: Settings) -> list[int]:
    ids = torch.tensor([prompt], device=_device(model))
    out = diffusion_generate(
        model,
        ids,
        max_new_tokens=s.new_tokens,
        mask_token_id=model.config.mask_token_id,
        steps=s.steps,
        alg="entropy",
        temperature=0.0,
    )
    return [int(t) for t in out[0, len(prompt) :].tolist()]


def _until_end(tokens: list[int], model: nn.Module, limit: int) -> list[int]:
    """A left-to-right sampler's reply as the engine returns it: at most ``limit`` tokens, cut
    before the end token (which the engine does not return)."""
    end = model.config.eos_token_id
    tokens = tokens[:limit]
    return tokens[: tokens.index(end)] if end in tokens else tokens


def nemotron_ar_baseline(model: nn.Module, prompt: list[int], s: Settings) -> list[int]:
    assert isinstance(model, NemotronModel)
    ids = torch.tensor([prompt], device=_device(model))
    out, _ = nemotron_generate.ar_generate(model, ids, max_new_tokens=s.new_tokens)
    return _until_end(out[0, len(prompt) :].tolist(), model, s.new_tokens)


def nemotron_spec_baseline(model: nn.Module, prompt: list[int], s: Settings) -> list[int]:
    assert isinstance(model, NemotronModel)
    ids = torch.tensor([prompt], device=_device(model))
    out, _ = nemotron_generate.linear_spec_generate(
        model, ids, max_new_tokens=s.new_tokens, block_length=s.block
    )
    return _until_end(out[0, len(prompt) :].tolist(), model, s.new_tokens)


def diffusion_gemma_baseline(model: nn.Module, prompt: list[int], s: Settings) -> list[int]:
    """Upstream's defaults but the reply length (its steps are per canvas, not per token)."""
    assert isinstance(model, DiffusionGemmaModel)
    ids = torch.tensor([prompt], device=_device(model))
    torch.manual_seed(0)
    out = diffusion_gemma_generate(model, ids, max_new_tokens=s.new_tokens)
    # The built model's generation config names no end token, so generate() stops at none.
    return [int(t) for t in out[0, len(prompt) :].tolist()]


# --- the engine's settings for the same decoding ----------------------------------------------


def fixed_policy(s: Settings) -> DecodingPolicy:
    """LLaDA's generate() schedule, greedy: the native and LLaDA engines' policy."""
    return fixed_schedule(s.steps, s.new_tokens, s.block)


def dream_engine_policy(s: Settings) -> DecodingPolicy:
    return dream_policy(s.steps, s.new_tokens, "entropy")


def left_to_right_policy(s: Settings) -> DecodingPolicy:
    """Greedy, stopping at the end token, drafting ``--block`` masks (SPECULATIVE); the mask
    token allowed, as upstream's samplers allow it."""
    policy = fast(block_size=s.block, max_new_tokens=s.new_tokens)
    return dataclasses.replace(policy, forbid_mask_token=False)


def diffusion_gemma_engine_policy(s: Settings) -> DecodingPolicy:
    return diffusion_gemma_policy(s.new_tokens)


@dataclass(frozen=True)
class Family:
    """How one family is built, decoded by its own sampler, and decoded by the engine."""

    name: str
    source: str  # the published checkpoint whose config is used
    config: dict[str, Any]
    layers_key: tuple[str, ...]  # path to the layer count inside ``config``
    build: Build
    baseline: Baseline | None  # None: the engine alone, one request at a time, is the baseline
    baseline_name: str
    policy: Callable[[Settings], DecodingPolicy]  # the engine's, for the same decoding
    pattern: Pattern = Pattern.BIDIRECTIONAL


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "native",
            "the bundled checkpoint's shape",
            NATIVE,
            ("num_hidden_layers",),
            build_native,
            None,
            "engine, one at a time",
            fixed_policy,
            Pattern.PREFIX_CAUSAL,
        ),
        Family(
            "llada",
            "GSAI-ML/LLaDA-8B-Instruct",
            LLADA_8B,
            ("n_layers",),
            build_from_dict(LLaDAModel),
            llada_baseline,
            "llada_generate.generate",
            fixed_policy,
        ),
        Family(
            "dream",
            "Dream-org/Dream-v0-Instruct-7B",
            DREAM_7B,
            ("num_hidden_layers",),
            build_from_dict(DreamModel),
            dream_baseline,
            "dream_generate.diffusion_generate",
            dream_engine_policy,
        ),
        Family(
            "nemotron-ar",
            "nvidia/Nemotron-Labs-Diffusion-8B",
            NEMOTRON_8B,
            ("num_hidden_layers",),
            build_from_dict(NemotronModel),
            nemotron_ar_baseline,
            "nemotron_generate.ar_generate",
            left_to_right_policy,
            Pattern.AUTOREGRESSIVE,
        ),
        Family(
            "nemotron-spec",
            "nvidia/Nemotron-Labs-Diffusion-8B",
            NEMOTRON_8B,
            ("num_hidden_layers",),
            build_from_dict(NemotronModel),
            nemotron_spec_baseline,
            "nemotron_generate.linear_spec_generate",
            left_to_right_policy,
            Pattern.SPECULATIVE,
        ),
        Family(
            "diffusion_gemma",
            "google/diffusiongemma-26B-A4B-it (text)",
            DIFFUSION_GEMMA_26B,
            ("text_config", "num_hidden_layers"),
            build_diffusion_gemma,
            diffusion_gemma_baseline,
            "diffusion_gemma.generate",
            diffusion_gemma_engine_policy,
            Pattern.DEFAULT_DIFFUSION,
        ),
    )
}


def family_config(family: Family, tiny: bool, layers: int | None) -> dict[str, Any]:
    """The family's config, shrunk by ``--tiny`` and cut to ``--layers`` (never grown)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in family.config.items()}
    if tiny:
        for key, value in TINY[family.name.replace("-spec", "-ar")].items():
            if isinstance(value, dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    *parents, leaf = family.layers_key
    holder = config
    for key in parents:
        holder = holder[key]
    if layers is not None:
        # DiffusionGemma's layer types follow from the count (every 6th global, the last too).
        holder[leaf] = min(int(holder[leaf]), layers)
    return config


def layer_count(family: Family, config: dict[str, Any]) -> int:
    value: Any = config
    for key in family.layers_key:
        value = value[key]
    return int(value)


# --- running --------------------------------------------------------------------------------


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prompts(n: int, lengths: Sequence[int], vocab: int) -> list[list[int]]:
    """``n`` random prompts, request ``i`` of length ``lengths[i % len(lengths)]``, drawn from
    ordinary ids: none of the specials at either end of any family's vocabulary (Nemotron's
    control ids run to 100)."""
    top = min(vocab - 64, 8192)
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(1000 + i)
        out.append(torch.randint(128, top, (lengths[i % len(lengths)],), generator=g).tolist())
    return out


@dataclass
class Row:
    """One family's line of the report."""

    family: Family
    params: int
    layers: int
    baseline_rate: float
    engine_rates: dict[int, float]
    exact: dict[int, tuple[int, int]]  # load -> (requests equal, requests compared)
    peak_gib: float | None


Progress = Callable[[str], None]


def run_baseline(
    family: Family,
    model: nn.Module,
    tok: PreTrainedTokenizerFast,
    ps: Sequence[list[int]],
    s: Settings,
    exact_batches: bool | None,
) -> tuple[float, list[list[int]]]:
    """The family's own sampler on each prompt in turn: (tokens/s, replies)."""
    device = _device(model)
    if family.baseline is None:
        policy = family.policy(s)
        replies = []
        seconds = 0.0
        for i, p in enumerate(ps):
            one = [_request(f"b{i}", p, policy, family.pattern)]
            elapsed, got, _ = asyncio.run(run_engine(model, tok, one, exact_batches))
            seconds += elapsed
            replies.append(got[0])
        return sum(map(len, replies)) / seconds, replies
    replies = []
    started = time.perf_counter()
    with torch.inference_mode():
        for p in ps:
            replies.append(family.baseline(model, p, s))
            _sync(device)
    return sum(map(len, replies)) / (time.perf_counter() - started), replies


def _request(
    rid: str, prompt: list[int], policy: DecodingPolicy, pattern: Pattern
) -> GenerationRequest:
    # Seed 0 as the baselines: only DiffusionGemma draws random numbers at temperature 0.
    return GenerationRequest(rid, prompt, DecodingMode(pattern.value, pattern, policy), seed=0)


def sizes(
    names: Sequence[str],
    tok: PreTrainedTokenizerFast,
    dtype: torch.dtype,
    tiny: bool,
    layers: int | None,
) -> list[str]:
    """Each family's parameters and weight memory at ``dtype``, built on the meta device."""
    width = torch.tensor([], dtype=dtype).element_size()
    lines = [f"{'family':<16} {'layers':>6} {'params':>8} {'weights GiB':>12}  config of"]
    for name in names:
        family = FAMILIES[name]
        config = family_config(family, tiny, layers)
        model = family.build(config, tok, torch.device("meta"), dtype)
        params = sum(p.numel() for p in model.parameters())
        lines.append(
            f"{name:<16} {layer_count(family, config):>6} {_count(params):>8} "
            f"{params * width / 2**30:>12.1f}  {family.source}"
        )
    return lines


def run_family(
    family: Family,
    config: dict[str, Any],
    tok: PreTrainedTokenizerFast,
    device: torch.device,
    dtype: torch.dtype,
    s: Settings,
    loads: Sequence[int],
    n_exact: int,
    prompt_lengths: Sequence[int],
    exact_batches: bool | None,
    progress: Progress,
) -> Row:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    model = family.build(config, tok, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    progress(
        f"[{family.name}] built {_count(params)} parameters in "
        f"{time.perf_counter() - started:.0f} s"
    )
    vocab = int(model.config.vocab_size)
    ps = prompts(max(loads), prompt_lengths, vocab)
    n_base = min(n_exact, max(loads))
    # Warm-up: kernels, allocator and the engine's first batch are not what is measured.
    warm = Settings(s.block, s.block, s.tokens_per_step)
    if family.baseline is not None:
        with torch.inference_mode():
            family.baseline(model, ps[0], warm)
    warm_request = _request("warm", ps[0], family.policy(warm), family.pattern)
    asyncio.run(run_engine(model, tok, [warm_request], exact_batches))
    progress(f"[{family.name}] baseline ({family.baseline_name}): {n_base} requests in turn")
    baseline_rate, want = run_baseline(family, model, tok, ps[:n_base], s, exact_batches)
    rates: dict[int, float] = {}
    exact: dict[int, tuple[int, int]] = {}
    policy = family.policy(s)
    for n in loads:
        progress(f"[{family.name}] engine: {n} requests at once")
        requests = [_request(f"r{i}", p, policy, family.pattern) for i, p in enumerate(ps[:n])]
        elapsed, replies, _ = asyncio.run(run_engine(model, tok, requests, exact_batches))
        rates[n] = sum(map(len, replies)) / elapsed
        compared = min(n, n_base)
        equal = sum(replies[i] == want[i] for i in range(compared))
        exact[n] = (equal, compared)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    layers = layer_count(family, config)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(family, params, layers, baseline_rate, rates, exact, peak)


# --- the report -------------------------------------------------------------------------------


def _count(params: int) -> str:
    return f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"


HEADER = (
    f"{'family':<16} {'params':>7} {'layers':>6} {'peak GiB':>8}  {'decoded by':<46} "
    f"{'requests':>8} {'tokens/s':>9} {'x own':>6} {'ids equal':>9}"
)


def report(r: Row, loads: Sequence[int]) -> list[str]:
    """One family's lines under :data:`HEADER`: its own sampler, then the engine per load."""
    peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "n/a"
    lines = [
        f"{r.family.name:<16} {_count(r.params):>7} {r.layers:>6} {peak:>8}  "
        f"{'own: ' + r.family.baseline_name:<46} {'in turn':>8} {r.baseline_rate:>9.1f} "
        f"{'1.00x':>6} {'-':>9}"
    ]
    for n in loads:
        equal, compared = r.exact[n]
        lines.append(
            f"{'':<42}{'engine':<46} {n:>8} {r.engine_rates[n]:>9.1f} "
            f"{r.engine_rates[n] / r.baseline_rate:>5.2f}x {f'{equal}/{compared}':>9}"
        )
    return lines


def _emit(line: str) -> None:
    """The report, on stdout."""
    print(line, flush=True)


def _progress(line: str) -> None:
    """A progress line per phase, on stderr (the report stays clean to redirect)."""
    print(line, file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dlm_runtime.gpu_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Families: "
            + ", ".join(f"{f.name} ({f.source})" for f in FAMILIES.values())
            + ". Example on one GPU: python -m dlm_runtime.gpu_bench --device cuda "
            "--dtype bfloat16. On CPU in seconds: --device cpu --tiny --requests 1,2."
        ),
    )
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument(
        "--dtype",
        default="bfloat16",
        choices=("bfloat16", "float16", "float32"),
        help="weights and activations (default bfloat16, the published checkpoints' dtype)",
    )
    p.add_argument(
        "--families",
        type=lambda t: [f.strip() for f in t.split(",") if f.strip()],
        default=list(FAMILIES),
        help=f"comma-separated, from {', '.join(FAMILIES)} (default all)",
    )
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="keep at most this many layers of every family (default: the published count)",
    )
    p.add_argument(
        "--requests",
        type=_ints,
        default=[1, 8, 32],
        help="loads: requests submitted to the engine at once (default 1,8,32)",
    )
    p.add_argument(
        "--exact",
        type=int,
        default=8,
        help="requests decoded by the family's own sampler (its tokens/s) and compared id for id "
        "with the engine's replies to the same prompts at every load (default 8)",
    )
    p.add_argument(
        "--prompt-lengths",
        type=_ints,
        default=[64],
        help="prompt tokens; a list cycles over the requests (default 64)",
    )
    p.add_argument("--new-tokens", type=int, default=64, help="reply tokens (default 64)")
    p.add_argument("--block", type=int, default=32, help="block length (default 32)")
    p.add_argument(
        "--tokens-per-step", type=int, default=2, help="tokens unmasked per forward (default 2)"
    )
    p.add_argument(
        "--padded",
        action="store_true",
        help="rows of different lengths share a forward, as a worker runs the engine",
    )
    p.add_argument("--tiny", action="store_true", help="shrunk configs: a CPU smoke run")
    p.add_argument(
        "--sizes",
        action="store_true",
        help="only print each family's parameters and weight memory at --dtype (no device used)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    s = Settings(args.new_tokens, args.block, args.tokens_per_step)
    if s.new_tokens % s.block or s.block % s.tokens_per_step:
        p.error("--new-tokens must be a multiple of --block, and --block of --tokens-per-step")
    if args.exact < 1 or (args.layers is not None and args.layers < 1):
        p.error("--exact and --layers must be positive")
    dtype = getattr(torch, args.dtype)
    loads = sorted(set(args.requests))
    texts = [f.read_text() for f in sorted(Path(__file__).parent.glob("*.py"))]
    vocab = TINY["native"]["vocab_size"] if args.tiny else NATIVE["vocab_size"]
    tok = train_tokenizer(texts, vocab_size=vocab)
    if args.sizes:
        for line in sizes(args.families, tok, dtype, args.tiny, args.layers):
            _emit(line)
        return 0
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        p.error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        built = (
            f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        )
        p.error(
            f"--device {args.device} asks for CUDA, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, {built}); pass --device cpu --tiny for a CPU run"
        )
    if device.type == "cuda":
        card = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        hardware = f"{card} ({memory:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        hardware = f"{cpu_name()}, {torch.get_num_threads()} torch threads"
    command = "python -m dlm_runtime.gpu_bench" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    _emit(f"command:  {command}")
    _emit(f"hardware: {hardware}, torch {torch.__version__}, load average {load_average()}")
    _emit(
        f"decoding: greedy, prompt {','.join(map(str, args.prompt_lengths))} tokens, reply "
        f"{s.new_tokens} tokens in blocks of {s.block}; diffusion: {s.tokens_per_step} tokens "
        f"per forward ({s.steps} forwards), no early stop; Nemotron: left to right to its end "
        f"token; {args.dtype}, random weights; engine batches "
        + ("padded (as a worker)" if args.padded else "exact (rows of equal length)")
        + (", TINY configs (figures meaningless)" if args.tiny else "")
    )
    _emit("")
    started = time.perf_counter()
    _emit(HEADER)
    for name in args.families:
        family = FAMILIES[name]
        config = family_config(family, args.tiny, args.layers)
        # Each family's lines go out as soon as it is done, and one that fails (out of memory,
        # say) is reported and the next one runs: a device session may end at any time.
        try:
            row = run_family(
                family,
                config,
                tok,
                device,
                dtype,
                s,
                loads,
                args.exact,
                args.prompt_lengths,
                False if args.padded else None,
                _progress,
            )
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            _emit(f"{name:<16} failed: {reason}")
        else:
            for line in report(row, loads):
                _emit(line)
        gc.collect()  # the failed family's model goes with its traceback
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _emit("")
    for name in args.families:
        family = FAMILIES[name]
        _emit(f"{name}: config of {family.source}; engine pattern {family.pattern.name}")
    _emit(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
