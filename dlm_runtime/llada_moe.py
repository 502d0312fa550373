"""Native implementation of LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-Base / -Instruct).

LLaDA-MoE is an OLMoE-style mixture-of-experts transformer trained as a masked diffusion LM with
full bidirectional attention; it decodes with LLaDA's own ``generate``
(:mod:`dlm_runtime.llada_generate`) and unshifted logits. The arithmetic follows its published
``modeling_lladamoe.py`` (``LLaDAMoEModelLM``, as shipped beside the checkpoint and copied in
ZHZisZZ/dllm): RMS norms in float32 then cast back and scaled; optional per-head ``q_norm`` /
``k_norm`` (``qk_layernorm``) before the rotary and ``clip_qkv``; "rotate_half" rotary on the
first ``partial_rotary_factor`` of each head, cos/sin computed in float32 and applied in the
model's dtype; GQA; in each layer either a dense SwiGLU (``moe_layer_freq[i] == 0``) or a
softmax top-k mixture of SwiGLU experts (:class:`dlm_runtime.layers.SparseMoE`) plus an
optional ``shared_expert``; final norm and ``lm_head``.

What the published forward ignores, this one ignores too, so that its outputs stay upstream's:
``norm_topk_prob`` (the sparse block hard-codes ``False``), ``routed_scaling_factor``,
``router_num_group`` / ``router_topk_group`` (read, never used).

**Layout.** The published checkpoints say ``"model_type": "llada"`` (their ``auto_map`` names
``modeling_lladamoe``), the same type as dense LLaDA's; :func:`is_llada_moe` tells them apart by
their MoE keys. ``"lladamoe"`` (what ZHZisZZ/dllm asks users to write) is accepted too. Their
config.json has no ``mask_token_id``: the mask is the tokenizer's ``<|mask|>`` token
(:func:`mask_token_from_tokenizer`).

Parameter names are the checkpoint's (``model.layers.N.mlp.experts.E.gate_proj.weight``,
``model.layers.N.self_attn.q_norm.weight``, ``lm_head.weight`` ...). ``.config`` is a
:class:`LLaDAMoEConfigView` with the attribute names the runtime reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput, take_positions
from dlm_runtime.config_view import as_view, first_id, optional_int, with_defaults
from dlm_runtime.layers import (
    Attention,
    DecoderLayer,
    EmbeddedModel,
    RMSNorm,
    SparseMoE,
    SwiGLU,
    output_head,
    project_out,
    rotary_cos_sin,
    run_layers,
)
from dlm_runtime.llada import UnsupportedLLaDAConfig
from dlm_runtime.modeling import prepare_forward

__all__ = [
    "MASK_TOKEN",
    "MODEL_TYPES",
    "LLaDAMoEConfigView",
    "LLaDAMoEModel",
    "UnsupportedLLaDAMoEConfig",
    "is_llada_moe",
    "mask_token_from_tokenizer",
]

MODEL_TYPES = ("lladamoe", "llada")
MASK_TOKEN = "<|mask|>"

# Keys whose published defaults (configuration_lladamoe.py) are -1 or [] placeholders that
# break the reference model, or are GPT-era token ids: a config must state them.
LLADA_MOE_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_experts",
    "num_experts_per_tok",
    "expert_intermediate_size",
    "moe_layer_freq",
    "rope_theta",
    "partial_rotary_factor",
    "mask_token_id",
    "eos_token_id",
)

# Defaults of the published ``LLaDAMoEConfig`` for the keys that have usable ones.
LLADA_MOE_DEFAULTS: dict[str, Any] = {
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "pad_token_id": 1,
    "tie_word_embeddings": False,
    "rope_scaling": None,
    "attention_bias": False,
    "clip_qkv": None,
    "qk_layernorm": None,
    "moe_router_enable_expert_bias": None,
    "moe_router_score_function": None,
    "dense_intermediate_size": None,
    "shared_expert_intermediate_size": None,
}


class UnsupportedLLaDAMoEConfig(UnsupportedLLaDAConfig):
    """The config asks for a LLaDA-MoE feature this native implementation does not provide.

    A subclass of the LLaDA error, so that the loader offers the same ``trust_remote_code``
    way out for both (the published checkpoints share ``model_type "llada"``)."""


def is_llada_moe(raw: Mapping[str, Any]) -> bool:
    """Whether a ``model_type "llada"``/``"lladamoe"`` config is LLaDA-MoE's layout."""
    if raw.get("model_type") == "lladamoe":
        return True
    architectures = raw.get("architectures") or []
    return "num_experts" in raw or any("MoE" in str(a) for a in architectures)


def mask_token_from_tokenizer(root: Path) -> int | None:
    """The id of ``<|mask|>`` among ``root/tokenizer.json``'s added tokens, if it is there."""
    try:
        added = json.loads((root / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for token in added if isinstance(added, list) else []:
        if isinstance(token, dict) and token.get("content") == MASK_TOKEN:
            return int(token["id"])
    return None


@dataclass
class LLaDAMoEConfigView:
    """LLaDA-MoE's config.json under the runtime's attribute names (plus the raw dict)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rotary_dim: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool
    qk_layernorm: bool
    clip_qkv: float | None
    num_experts: int
    num_experts_per_tok: int
    expert_intermediate_size: int
    dense_intermediate_size: int | None
    shared_expert_intermediate_size: int | None
    expert_bias: bool
    moe_layers: tuple[bool, ...]
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int | None
    entity_slots: bool = False
    model_type: str = "lladamoe"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LLaDAMoEConfigView:
        """Validate a LLaDA-MoE config.json dict.

        Raises ``KeyError`` naming a missing required key and
        :class:`UnsupportedLLaDAMoEConfig` for what the published code would run differently
        or not at all (rope scaling, activations other than SiLU, a router score function
        other than softmax, a ``moe_layer_freq`` of the wrong length).
        """
        c = with_defaults(raw, LLADA_MOE_REQUIRED, LLADA_MOE_DEFAULTS)

        def unsupported(what: str) -> UnsupportedLLaDAMoEConfig:
            return UnsupportedLLaDAMoEConfig(f"unsupported LLaDA-MoE config: {what}")

        if c["rope_scaling"]:
            raise unsupported(f"rope_scaling={c['rope_scaling']!r} (only none)")
        if c["hidden_act"] != "silu":
            raise unsupported(f"hidden_act={c['hidden_act']!r} (only 'silu')")
        score = c["moe_router_score_function"]
        if score not in (None, "softmax"):
            # The published forward always uses a softmax; a config naming another function was
            # trained with code that is not the published one.
            raise unsupported(f"moe_router_score_function={score!r} (only 'softmax')")
        d, n_heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        n_kv = int(c["num_key_value_heads"] or n_heads)
        if d % n_heads or n_heads % n_kv:
            raise unsupported(
                f"hidden_size={d}, num_attention_heads={n_heads}, num_key_value_heads={n_kv}"
            )
        head_dim = d // n_heads
        factor = float(c["partial_rotary_factor"])
        rotary_dim = int(head_dim * factor)
        if not 0 < factor <= 1 or rotary_dim % 2:
            raise unsupported(f"partial_rotary_factor={factor} with head_dim {head_dim}")
        n_layers = int(c["num_hidden_layers"])
        freq = c["moe_layer_freq"]
        if not isinstance(freq, list) or len(freq) != n_layers:
            raise unsupported(f"moe_layer_freq={freq!r} (one entry per layer, {n_layers})")
        moe_layers = tuple(bool(f) for f in freq)
        dense = c["dense_intermediate_size"]
        if not all(moe_layers) and dense is None:
            raise KeyError("dense_intermediate_size")
        n_experts, top_k = int(c["num_experts"]), int(c["num_experts_per_tok"])
        if not 0 < top_k <= n_experts:
            raise unsupported(f"num_experts_per_tok={top_k} with num_experts={n_experts}")
        clip = c["clip_qkv"]
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_kv,
            rotary_dim=rotary_dim,
            max_position_embeddings=int(c["max_position_embeddings"]),
            rope_theta=float(c["rope_theta"]),
            rms_norm_eps=float(c["rms_norm_eps"]),
            tie_word_embeddings=bool(c["tie_word_embeddings"]),
            attention_bias=bool(c["attention_bias"]),
            qk_layernorm=bool(c["qk_layernorm"]),
            clip_qkv=None if clip is None else float(clip),
            num_experts=n_experts,
            num_experts_per_tok=top_k,
            expert_intermediate_size=int(c["expert_intermediate_size"]),
            dense_intermediate_size=optional_int(dense),
            shared_expert_intermediate_size=optional_int(c["shared_expert_intermediate_size"]),
            expert_bias=bool(c["moe_router_enable_expert_bias"]),
            moe_layers=moe_layers,
            mask_token_id=int(c["mask_token_id"]),
            eos_token_id=int(first_id(c["eos_token_id"])),
            pad_token_id=optional_int(c["pad_token_id"]),
            entity_slots=bool(raw.get("entity_slots", False)),
            model_type=str(raw.get("model_type", "lladamoe")),
            raw=dict(raw),
        )


def _layer(cfg: LLaDAMoEConfigView, index: int) -> DecoderLayer:
    """Pre-norm layer: attention (all projections biased with ``attention_bias``, the optional
    per-head ``q_norm``/``k_norm``), then the dense or sparse feed-forward plus the optional
    ``shared_expert`` (a layer-level module in the checkpoint, beside ``mlp``)."""
    d, bias = cfg.hidden_size, cfg.attention_bias
    attn = Attention(
        d,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        qkv_bias=bias,
        o_bias=bias,
        qk_norm_eps=cfg.rms_norm_eps if cfg.qk_layernorm else None,
        clip=cfg.clip_qkv,
    )
    mlp: nn.Module
    if cfg.moe_layers[index]:
        mlp = SparseMoE(
            d,
            cfg.expert_intermediate_size,
            cfg.num_experts,
            cfg.num_experts_per_tok,
            expert_bias=cfg.expert_bias,
        )
    else:
        assert cfg.dense_intermediate_size is not None  # checked by from_dict
        mlp = SwiGLU(d, cfg.dense_intermediate_size)
    shared = cfg.shared_expert_intermediate_size
    shared_expert = SwiGLU(d, shared) if shared is not None and cfg.moe_layers[index] else None
    return DecoderLayer(d, cfg.rms_norm_eps, attn, mlp, shared_expert=shared_expert)


class _Body(nn.Module):
    """``embed_tokens``, ``layers`` and ``norm`` under the checkpoint's ``model.`` prefix."""

    def __init__(self, cfg: LLaDAMoEConfigView) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(_layer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LLaDAMoEModel(EmbeddedModel):
    """LLaDA-MoE behind the runtime's forward API (same contract as ``DLMModel.forward``)."""

    def __init__(self, config: LLaDAMoEConfigView | Mapping[str, Any]) -> None:
        super().__init__()
        self.config = as_view(config, LLaDAMoEConfigView)
        self.model = _Body(self.config)
        self.lm_head = output_head(
            self.config.hidden_size, self.config.vocab_size, tied=self.config.tie_word_embeddings
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Same contract as :meth:`dlm_runtime.modeling.DLMModel.forward`."""
        cfg = self.config
        position_ids, mask, _ = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, cfg.num_hidden_layers
        )
        x = self.model.embed_tokens(input_ids)
        cos, sin = rotary_cos_sin(position_ids, cfg.rotary_dim, cfg.rope_theta)
        # Upstream's rotary embedding returns cos/sin cast to the hidden states' dtype.
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x, new_kv = run_layers(self.model.layers, x, cos, sin, mask, past_key_values)
        x = self.model.norm(take_positions(x, logits_index))
        logits = project_out(x, self.model.embed_tokens, self.lm_head)
        return ForwardOutput(logits=logits, new_key_values=new_kv)
