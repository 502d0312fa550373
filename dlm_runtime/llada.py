"""Native implementation of the LLaDA architecture, reading LLaDA-layout checkpoints.

Follows the published ``modeling_llada.py`` (GSAI-ML/LLaDA-8B-Instruct) for the "llama" block
type: ``x + attn_out(attn(RoPE(q), RoPE(k), v))`` over ``attn_norm(x)``, then
``x + ff_out(act(ff_proj(h)) * up_proj(h))`` over ``h = ff_norm(x)``; RMS norms in float32 with
``rms_norm_eps``; non-interleaved rotary with ``head_dim = d_model // n_heads``; GQA by repeating
kv heads; final ``ln_f`` and either ``ff_out`` or, with ``weight_tying``, the ``wte`` matrix.
The arithmetic is :mod:`dlm_runtime.layers`' (rotary in float32), run on the block's own
parameters.

The module's parameter names are exactly the checkpoint's (``model.transformer.wte.weight``,
``model.transformer.blocks.N.q_proj.weight`` ...), and it exposes the same ``forward`` API as
:class:`dlm_runtime.modeling.DLMModel`. Its ``.config`` is an :class:`LLaDAConfigView`, which
carries the native config's attribute names (``mask_token_id``, ``eos_token_id``,
``vocab_size``, ``max_position_embeddings`` ...) so callers read both models uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput, take_positions
from dlm_runtime.config_view import as_view, optional_int, with_defaults
from dlm_runtime.layers import (
    EmbeddedModel,
    KVPair,
    RMSNorm,
    gated_mlp,
    output_head,
    project_out,
    rotary_cos_sin,
    run_layers,
    self_attention,
)
from dlm_runtime.modeling import prepare_forward

__all__ = ["LLADA_DEFAULTS", "LLaDAConfigView", "LLaDAModel", "UnsupportedLLaDAConfig"]

# Defaults of the published ``ModelConfig`` dataclass (configuration_llada.py), used for keys a
# config.json leaves out, so a missing key means what it means to the reference code.
LLADA_DEFAULTS: dict[str, Any] = {
    "n_kv_heads": None,
    "mlp_ratio": 4,
    "mlp_hidden_size": None,
    "activation_type": "swiglu",
    "block_type": "sequential",
    "block_group_size": 1,
    "alibi": False,
    "rope": False,
    "rope_full_precision": True,
    "multi_query_attention": None,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "layer_norm_type": "default",
    "layer_norm_with_affine": True,
    "rms_norm_eps": 1e-5,
    "max_sequence_length": 1024,
    "rope_theta": 10000.0,
    "include_qkv_bias": False,
    "include_bias": False,
    "bias_for_layer_norm": None,
    "scale_logits": False,
    "embedding_size": 50304,
    "weight_tying": True,
    "pad_token_id": None,
}

# Keys without a trustworthy default: the published defaults are GPT-2's token ids, which would
# silently make a LLaDA checkpoint decode garbage.
LLADA_REQUIRED = ("d_model", "n_heads", "n_layers", "vocab_size", "mask_token_id", "eos_token_id")

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
}


class UnsupportedLLaDAConfig(ValueError):
    """The config asks for a LLaDA feature this native implementation does not provide."""


@dataclass
class LLaDAConfigView:
    """LLaDA's config under the native config's attribute names (plus the raw dict)."""

    vocab_size: int  # logits width: embedding_size if set, else vocab_size
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int | None
    activation: str
    include_bias: bool
    qkv_bias: bool
    norm_bias: bool
    input_emb_norm: bool
    scale_logits: bool
    tokenizer_vocab_size: int  # LLaDA's own vocab_size (may be < the embedding rows)
    # A large foreign checkpoint copies entities itself unless its config says otherwise.
    entity_slots: bool = False
    model_type: str = "llada"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LLaDAConfigView:
        """Validate a LLaDA config.json dict.

        Raises ``KeyError`` naming a missing required key and :class:`UnsupportedLLaDAConfig`
        for features outside the published "llama" block with RMS norm and rotary embeddings.
        """
        # Explicit nulls override defaults too (e.g. "embedding_size": null means "= vocab_size").
        c = with_defaults(raw, LLADA_REQUIRED, LLADA_DEFAULTS)

        def unsupported(what: str) -> UnsupportedLLaDAConfig:
            return UnsupportedLLaDAConfig(f"unsupported LLaDA config: {what}")

        if c["block_type"] != "llama":
            raise unsupported(f"block_type={c['block_type']!r} (only 'llama')")
        if c["alibi"] or not c["rope"]:
            raise unsupported("positions other than rotary embeddings (rope=false or alibi=true)")
        if c.get("yarn"):
            raise unsupported("yarn rotary scaling")
        if c["layer_norm_type"] != "rms" or not c["layer_norm_with_affine"]:
            raise unsupported(
                f"layer_norm_type={c['layer_norm_type']!r}, "
                f"layer_norm_with_affine={c['layer_norm_with_affine']} (only affine 'rms')"
            )
        if c["attention_layer_norm"]:
            raise unsupported("attention_layer_norm=true (q/k norms)")
        if c["block_group_size"] != 1:
            raise unsupported(f"block_group_size={c['block_group_size']} (only 1)")
        if c["activation_type"] not in _ACTIVATIONS:
            raise unsupported(f"activation_type={c['activation_type']!r}")

        d_model, n_heads = int(c["d_model"]), int(c["n_heads"])
        n_kv = c["n_kv_heads"]
        mqa = c["multi_query_attention"]
        if n_kv is None:
            n_kv = 1 if mqa is True else n_heads
        elif mqa is not None and n_kv != (1 if mqa else n_heads):
            raise unsupported("multi_query_attention contradicts n_kv_heads")
        n_kv = int(n_kv)
        if d_model % n_heads or n_heads % n_kv or (d_model // n_heads) % 2:
            raise unsupported(f"heads d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv}")
        mlp = c["mlp_hidden_size"]
        if mlp is None:
            mlp = c["mlp_ratio"] * d_model
        include_bias = bool(c["include_bias"])
        norm_bias = c["bias_for_layer_norm"]
        vocab = int(c["vocab_size"])
        return cls(
            vocab_size=int(c["embedding_size"] or vocab),
            hidden_size=d_model,
            intermediate_size=int(mlp),
            num_hidden_layers=int(c["n_layers"]),
            num_attention_heads=n_heads,
            num_key_value_heads=n_kv,
            max_position_embeddings=int(c["max_sequence_length"]),
            rope_theta=float(c["rope_theta"]),
            rms_norm_eps=float(c["rms_norm_eps"]),
            tie_word_embeddings=bool(c["weight_tying"]),
            mask_token_id=int(c["mask_token_id"]),
            eos_token_id=int(c["eos_token_id"]),
            pad_token_id=optional_int(c["pad_token_id"]),
            activation=str(c["activation_type"]),
            include_bias=include_bias,
            qkv_bias=include_bias or bool(c["include_qkv_bias"]),
            norm_bias=include_bias if norm_bias is None else bool(norm_bias),
            input_emb_norm=bool(c["input_emb_norm"]),
            scale_logits=bool(c["scale_logits"]),
            tokenizer_vocab_size=vocab,
            entity_slots=bool(raw.get("entity_slots", False)),
            raw=dict(raw),
        )


class LLaDABlock(nn.Module):
    """One "llama" block with the checkpoint's parameter names."""

    def __init__(self, cfg: LLaDAConfigView) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            hd,
        )
        self.act = _ACTIVATIONS[cfg.activation]
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps, bias=cfg.norm_bias)
        self.q_proj = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=cfg.qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=cfg.include_bias)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps, bias=cfg.norm_bias)
        self.ff_proj = nn.Linear(d, cfg.intermediate_size, bias=cfg.include_bias)
        self.up_proj = nn.Linear(d, cfg.intermediate_size, bias=cfg.include_bias)
        self.ff_out = nn.Linear(cfg.intermediate_size, d, bias=cfg.include_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: KVPair | None,
    ) -> tuple[torch.Tensor, KVPair]:
        att, kv = self_attention(self, self.attn_norm(x), cos, sin, mask, past)
        x = x + self.attn_out(att)
        x = x + gated_mlp(self.ff_norm(x), self.ff_proj, self.up_proj, self.ff_out, self.act)
        return x, kv


class _Transformer(nn.Module):
    def __init__(self, cfg: LLaDAConfigView) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.ln_f = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, bias=cfg.norm_bias)
        self.ff_out = output_head(
            cfg.hidden_size, cfg.vocab_size, tied=cfg.tie_word_embeddings, bias=cfg.include_bias
        )


class _Holder(nn.Module):
    """Only here so parameter names carry the checkpoint's ``model.`` prefix."""

    def __init__(self, cfg: LLaDAConfigView) -> None:
        super().__init__()
        self.transformer = _Transformer(cfg)


class LLaDAModel(EmbeddedModel):
    """LLaDA behind the runtime's forward API (same contract as ``DLMModel.forward``)."""

    def __init__(self, config: LLaDAConfigView | Mapping[str, Any]) -> None:
        super().__init__()
        self.config = as_view(config, LLaDAConfigView)
        self.model = _Holder(self.config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

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
        tr = self.model.transformer
        position_ids, mask, _ = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, cfg.num_hidden_layers
        )
        cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)
        x = tr.wte(input_ids)
        if cfg.input_emb_norm:
            x = x * (cfg.hidden_size**0.5)
        x, new_kv = run_layers(tr.blocks, x, cos, sin, mask, past_key_values)
        x = tr.ln_f(take_positions(x, logits_index))
        logits = project_out(x, tr.wte, tr.ff_out)
        if cfg.scale_logits:
            logits = logits * (1 / cfg.hidden_size**0.5)
        return ForwardOutput(logits=logits, new_key_values=new_kv)
