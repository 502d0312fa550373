"""DiffusionGemma (Google's block-diffusion Gemma family) through transformers' own model class.

transformers ships the model natively (``transformers.models.diffusion_gemma``, no remote code):
an encoder writes the prompt (and every finished canvas) into a KV cache, and a decoder denoises
one canvas of ``canvas_length`` tokens at a time from *uniform random tokens* (there is no mask
token), with an entropy-bound acceptance rule, renoising of the rejected positions,
self-conditioning on the previous step's logits, a linear temperature schedule and adaptive
stopping. :func:`load_diffusion_gemma` loads such a checkpoint directory as a
:class:`DiffusionGemmaModel`; :func:`generate` runs transformers' own
``DiffusionGemmaForBlockDiffusion.generate`` on it, so its tokens are exactly upstream's (same
torch RNG state in, same tokens out).

The engine runs it too, with its own request state (:mod:`dlm_runtime.engine.canvas`: continuous
batching, a draft per denoising step, the same tokens as :func:`generate` on each prompt alone);
requests take their settings from :func:`diffusion_gemma_policy`. The runtime's policies cannot
decode it: they unmask a masked canvas over a plain ``model(input_ids, position_ids,
attention_mask, past_key_values, logits_index)`` forward, while DiffusionGemma has no mask token
and needs the encoder/decoder split and the previous step's logits, so
:meth:`DiffusionGemmaModel.forward` raises ``NotImplementedError`` with that reason.
Images (``pixel_values``) are not passed either: text prompts only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput
from dlm_runtime.policies import ChosenProbability, DecodingPolicy, FixedCount, Greedy

__all__ = [
    "MODEL_TYPE",
    "SETTINGS",
    "DiffusionGemmaConfigView",
    "DiffusionGemmaModel",
    "UnsupportedDiffusionGemmaConfig",
    "check_config",
    "diffusion_gemma_policy",
    "generate",
    "generation_settings",
    "load_diffusion_gemma",
    "new_tokens",
]

MODEL_TYPE = "diffusion_gemma"

ENGINE_UNSUPPORTED = (
    "DiffusionGemma cannot run under the engine's decoding policies: it denoises a canvas of "
    "uniform random tokens (no mask token), through a separate encoder KV cache and "
    "self-conditioning on the previous step's logits; use dlm_runtime.diffusion_gemma.generate, "
    "or the engine with a diffusion_gemma_policy"
)

# generate()'s settings a caller may give (None: generation_config.json's, then transformers').
SETTINGS = (
    "max_denoising_steps",
    "entropy_bound",
    "t_min",
    "t_max",
    "stability_threshold",
    "confidence_threshold",
    "eos_token_id",
    "pad_token_id",
)


class UnsupportedDiffusionGemmaConfig(ValueError):
    """config.json describes a DiffusionGemma the runtime cannot load; the message says why."""


@dataclass
class DiffusionGemmaConfigView:
    """The config attributes the runtime's callers read, from a DiffusionGemma config.json."""

    vocab_size: int
    canvas_length: int
    eos_token_id: int | list[int] | None
    pad_token_id: int | None
    bos_token_id: int | None
    max_position_embeddings: int | None
    tie_word_embeddings: bool = True
    mask_token_id: int | None = None  # none: the canvas starts as uniform noise
    model_type: str = MODEL_TYPE
    entity_slots: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


def check_config(raw: dict[str, Any]) -> DiffusionGemmaConfigView:
    """Validate a DiffusionGemma config.json (as a dict) and return the runtime's view of it.

    Raises ``KeyError`` for a missing required key, :class:`UnsupportedDiffusionGemmaConfig`
    for a value the runtime cannot run.
    """
    text = raw["text_config"]
    if not isinstance(text, dict):
        raise UnsupportedDiffusionGemmaConfig("text_config must be a JSON object")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if key not in text:
            raise KeyError(f"text_config.{key}")
    canvas = raw.get("canvas_length", 256)  # transformers' default when the key is absent
    if not isinstance(canvas, int) or canvas <= 0:
        raise UnsupportedDiffusionGemmaConfig(
            f"canvas_length={canvas!r}: must be a positive integer"
        )
    if text.get("num_experts") is None:
        raise UnsupportedDiffusionGemmaConfig(
            "text_config.num_experts is unset: transformers' DiffusionGemma layers are all "
            "mixture-of-experts (num_experts, top_k_experts, moe_intermediate_size)"
        )
    return DiffusionGemmaConfigView(
        vocab_size=int(text["vocab_size"]),
        canvas_length=canvas,
        eos_token_id=text.get("eos_token_id", 1),
        pad_token_id=text.get("pad_token_id", 0),
        bos_token_id=text.get("bos_token_id", 2),
        max_position_embeddings=text.get("max_position_embeddings"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        raw=raw,
    )


class DiffusionGemmaModel(nn.Module):
    """transformers' ``DiffusionGemmaForBlockDiffusion`` (as ``inner``) with the runtime's view."""

    inner: Any  # DiffusionGemmaForBlockDiffusion (transformers types it loosely)

    def __init__(self, inner: nn.Module, config: DiffusionGemmaConfigView) -> None:
        super().__init__()
        self.inner = inner
        self.config = config

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        raise NotImplementedError(ENGINE_UNSUPPORTED)


def load_diffusion_gemma(
    root: Path,
    view: DiffusionGemmaConfigView,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> DiffusionGemmaModel:
    """Load ``root`` with transformers (local files only), refusing missing or extra weights.

    Raises ``ValueError`` (with transformers' reason) when transformers cannot build or fill the
    model; :mod:`dlm_runtime.loading` turns that into a ``CheckpointError``.
    """
    from transformers import DiffusionGemmaForBlockDiffusion

    loaded: Any = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(root),
        dtype=dtype if dtype is not None else "auto",
        local_files_only=True,
        output_loading_info=True,
    )
    inner, info = loaded
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")
            raise ValueError(f"{kind.replace('_', ' ')} in the weights: {shown}")
    return DiffusionGemmaModel(inner.to(device).eval(), view)


DraftHook = Callable[[torch.Tensor], None]


class _Streamer:
    """transformers' streamer protocol, forwarding canvases to plain callbacks."""

    def __init__(self, on_draft: DraftHook | None, on_canvas: DraftHook | None) -> None:
        self.on_draft, self.on_canvas = on_draft, on_canvas
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first put is the prompt itself
            self.prompt_seen = True
        elif self.on_canvas is not None:
            self.on_canvas(value)

    def put_draft(self, value: torch.Tensor) -> None:
        if self.on_draft is not None:
            self.on_draft(value)

    def end(self) -> None:
        pass


@torch.no_grad()
def generate(
    model: DiffusionGemmaModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = None,
    max_denoising_steps: int | None = None,
    entropy_bound: float | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    stability_threshold: int | None = None,
    confidence_threshold: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    on_draft: DraftHook | None = None,
    on_canvas: DraftHook | None = None,
) -> torch.Tensor:
    """transformers' ``DiffusionGemmaForBlockDiffusion.generate``: prompt plus generated tokens.

    ``None`` settings take the checkpoint's ``generation_config.json``, then transformers'
    defaults (256 new tokens, 48 steps, entropy bound 0.1, temperatures 0.8 -> 0.4, stopping
    at stability 1 and mean entropy < 0.005). Randomness is torch's global RNG, as upstream's:
    seed it with ``torch.manual_seed`` for a reproducible run. ``attention_mask`` marks a
    left-padded batch. ``on_draft`` receives each denoising step's argmax canvas
    ``[batch, canvas_length]`` (upstream's ``put_draft``), ``on_canvas`` each finished canvas
    (after end-of-sequence padding).

    Upstream stops only at ``eos_token_id`` as the *generation* config gives it (argument, then
    generation_config.json); the model config's ``eos_token_id`` is not read, so a checkpoint
    whose generation_config.json lacks it runs every canvas up to ``max_new_tokens``. A row is
    finished at the end of the canvas holding its end token: the rest of that canvas and every
    later canvas are set to ``pad_token_id`` (kept as generated when that is unset); generation
    stops once every row is finished. The result is whole canvases, so it may be longer than
    ``max_new_tokens``: :func:`new_tokens` cuts each row after its end token.
    """
    kwargs = _upstream_settings(
        max_new_tokens=max_new_tokens,
        max_denoising_steps=max_denoising_steps,
        entropy_bound=entropy_bound,
        t_min=t_min,
        t_max=t_max,
        stability_threshold=stability_threshold,
        confidence_threshold=confidence_threshold,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    streamer = _Streamer(on_draft, on_canvas) if on_draft or on_canvas else None
    out = model.inner.generate(
        input_ids=input_ids, streamer=streamer, return_dict_in_generate=False, **kwargs
    )
    assert isinstance(out, torch.Tensor)
    return out


def _upstream_settings(**settings: Any) -> dict[str, Any]:
    """``generate``'s keyword arguments for the settings given (``None`` ones left out)."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSamplerConfig,
    )

    kwargs = {k: v for k, v in settings.items() if v is not None}
    if "entropy_bound" in kwargs:
        kwargs["sampler_config"] = EntropyBoundSamplerConfig(
            entropy_bound=float(kwargs.pop("entropy_bound"))
        )
    return kwargs


def diffusion_gemma_policy(max_new_tokens: int = 256, **settings: Any) -> DecodingPolicy:
    """What the engine decodes a DiffusionGemma request with: :func:`generate`'s settings.

    ``settings`` are the names in :data:`SETTINGS`; those left out come from the checkpoint's
    generation_config.json, then transformers' defaults, as :func:`generate` takes them. A
    request decodes as ``torch.manual_seed(seed)`` then :func:`generate` on its prompt alone.
    The policy's token rules are not used (the engine runs transformers' own sampler loop).
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown DiffusionGemma settings {unknown}; expected some of {SETTINGS}")
    _upstream_settings(**settings)  # an invalid entropy bound fails here, not at admission
    return DecodingPolicy(
        name="diffusion-gemma",
        chooser=Greedy(),
        confidence=ChosenProbability(),
        unmask=FixedCount(1),
        revision=None,
        block_size=max_new_tokens,
        max_new_tokens=max_new_tokens,
        params={"max_new_tokens": max_new_tokens, **settings},
    )


def generation_settings(model: DiffusionGemmaModel, policy: DecodingPolicy) -> Any:
    """The ``DiffusionGemmaGenerationConfig`` :func:`generate` would run with for ``policy``:
    its settings, then generation_config.json's, then transformers' defaults (resolved by
    transformers' own ``_prepare_generation_config``, so the two cannot drift apart)."""
    given = {k: v for k, v in policy.params.items() if k in SETTINGS}
    kwargs = _upstream_settings(max_new_tokens=policy.max_new_tokens, **given)
    config, _ = model.inner._prepare_generation_config(None, **kwargs)
    return config


def new_tokens(
    model: DiffusionGemmaModel,
    sequences: torch.Tensor,
    prompt_length: int,
    eos_token_id: int | list[int] | None = None,
) -> list[list[int]]:
    """Each row's generated tokens, cut after its first end token (which is kept).

    The end tokens are ``eos_token_id``, else generation_config.json's, else config.json's.
    """
    eos = eos_token_id
    if eos is None:
        eos = model.inner.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    ends = {eos} if isinstance(eos, int) else set(eos or ())
    rows = []
    for row in sequences[:, prompt_length:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
        rows.append(row[:cut])
    return rows
