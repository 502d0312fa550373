"""Native implementation of Nemotron-Labs-Diffusion (``model_type "nemotron_labs_diffusion"``).

NVIDIA's Nemotron-Labs-Diffusion (3B/8B/14B) is a Ministral-3 transformer trained jointly as an
autoregressive and a masked-diffusion LM: one checkpoint, whose attention is switched between
causal (autoregressive decoding, cache writes, verification) and bidirectional over cache plus
input (diffusion drafts). That is exactly the runtime's forward contract (the caller passes the
mask), so this module only supplies the arithmetic of the published remote code
(``modeling_nemotron_labs_diffusion.py`` on transformers' ``Ministral3Model``):

* RMS norms in float32, cast back, then scaled; SwiGLU MLP; no biases;
* ``head_dim`` from the config (not ``hidden_size / heads``: the 3B has 3072 hidden, 32 x 128);
* rotary with YaRN (the family's ``rope_parameters``), ``cos``/``sin`` computed in float32 and
  applied in the model's dtype, as transformers' Ministral3 does;
* the query scaled by ``1 + beta * log(1 + floor(pos / original_max))`` (Llama-4 style, a no-op
  below ``original_max_position_embeddings``);
* an untied ``diffusion_head`` reading the final norm; logits at position ``i`` predict
  position ``i`` in the bidirectional mode and position ``i + 1`` in the causal mode (the
  samplers in :mod:`dlm_runtime.nemotron_generate` read them as upstream does).

**bfloat16.** The published usage is ``from_pretrained(...)`` then ``.to(torch.bfloat16)``,
which also casts the rotary ``inv_freq`` buffer: its cos/sin then come from bf16-rounded
frequencies. The model rounds ``inv_freq`` to its own dtype the same way, so a bf16 model gives
the positions upstream's does.

Parameter names are the checkpoint's (``encoder.embed_tokens.weight``,
``encoder.layers.N.self_attn.q_proj.weight``, ``diffusion_head.weight`` ...); ``.config`` is a
:class:`NemotronConfigView` with the attribute names the runtime reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput, take_positions
from dlm_runtime.config_view import as_view, first_id, optional_int, require
from dlm_runtime.layers import (
    Decoder,
    EmbeddedModel,
    output_head,
    project_out,
    rotary_angles,
    run_layers,
)
from dlm_runtime.modeling import prepare_forward

__all__ = [
    "MODEL_TYPE",
    "NEMOTRON_DEFAULTS",
    "NemotronConfigView",
    "NemotronModel",
    "UnsupportedNemotronConfig",
]

MODEL_TYPE = "nemotron_labs_diffusion"

# Defaults of the published ``NemotronLabsDiffusionConfig.__init__`` for keys a config.json
# leaves out, so a missing key means what it means to the reference code. The mask id has none
# (upstream's is -1, which no vocabulary holds).
NEMOTRON_DEFAULTS: dict[str, Any] = {
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-5,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_theta": 1000000.0,
    "rope_parameters": None,
    "attention_bias": False,
    "mlp_bias": False,
    "sliding_window": None,
    "dlm_paradigm": "bidirectional",
    "block_size": 32,
}

NEMOTRON_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mask_token_id",
)


class UnsupportedNemotronConfig(ValueError):
    """The config asks for something this native implementation does not provide."""


@dataclass(frozen=True)
class Rope:
    """The rotary settings of ``rope_parameters`` that change the arithmetic."""

    theta: float
    kind: str = "default"  # "default" or "yarn"
    factor: float = 1.0
    original_max: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float = 1.0
    truncate: bool = True
    llama4_beta: float | None = None  # query scaling past original_max (None: none)

    @classmethod
    def from_config(cls, c: Mapping[str, Any]) -> Rope:
        params = c["rope_parameters"] or {}
        theta = float(params.get("rope_theta", c["rope_theta"]))
        kind = params.get("rope_type", params.get("type", "default"))
        original = params.get("original_max_position_embeddings")
        beta = params.get("llama_4_scaling_beta")
        if beta is not None and original is None:
            raise UnsupportedNemotronConfig(
                "unsupported Nemotron config: rope_parameters.llama_4_scaling_beta without "
                "original_max_position_embeddings"
            )
        if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
            raise UnsupportedNemotronConfig(
                "unsupported Nemotron config: rope_parameters.partial_rotary_factor != 1"
            )
        original_max = None if original is None else int(original)
        llama4_beta = None if beta is None else float(beta)
        if kind == "default":
            return cls(theta=theta, original_max=original_max, llama4_beta=llama4_beta)
        if kind != "yarn":
            raise UnsupportedNemotronConfig(
                f"unsupported Nemotron config: rope_type={kind!r} (only 'default' and 'yarn')"
            )
        if original_max is None:
            raise UnsupportedNemotronConfig(
                "unsupported Nemotron config: yarn without original_max_position_embeddings"
            )
        factor = params.get("factor")
        if factor is None:
            factor = float(c["max_position_embeddings"]) / original_max
        attention_factor = params.get("attention_factor")
        if attention_factor is None:
            mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")
            if mscale and mscale_all:
                attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)
            else:
                attention_factor = _yarn_mscale(factor)
        return cls(
            theta=theta,
            original_max=original_max,
            llama4_beta=llama4_beta,
            kind="yarn",
            factor=float(factor),
            beta_fast=float(params.get("beta_fast") or 32),
            beta_slow=float(params.get("beta_slow") or 1),
            attention_factor=float(attention_factor),
            truncate=bool(params.get("truncate", True)),
        )

    def inv_freq(self, head_dim: int, device: torch.device | None = None) -> torch.Tensor:
        """Float32 inverse frequencies, computed as transformers' rope initialisers do."""
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
        pos_freqs = self.theta**exponents
        if self.kind == "default":
            return (1.0 / pos_freqs).to(device)
        original_max = self.original_max
        assert original_max is not None  # from_config refuses yarn without it

        def correction_dim(rotations: float) -> float:
            return (head_dim * math.log(original_max / (rotations * 2 * math.pi))) / (
                2 * math.log(self.theta)
            )

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, head_dim - 1)
        if low == high:
            high += 0.001  # as upstream: no division by zero
        ramp = (torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)
        extrapolation = 1 - torch.clamp(ramp, 0, 1)
        inv = (1.0 / (self.factor * pos_freqs)) * (1 - extrapolation) + (
            1.0 / pos_freqs
        ) * extrapolation
        return inv.to(device)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


@dataclass
class NemotronConfigView:
    """Nemotron-Labs-Diffusion's config.json under the runtime's attribute names (plus raw)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope: Rope
    rms_norm_eps: float
    tie_word_embeddings: bool
    mask_token_id: int
    eos_token_id: int | None
    pad_token_id: int | None
    bos_token_id: int | None
    block_size: int
    entity_slots: bool = False
    model_type: str = MODEL_TYPE
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NemotronConfigView:
        """Validate a Nemotron-Labs-Diffusion config.json dict.

        Raises ``KeyError`` naming a missing required key and
        :class:`UnsupportedNemotronConfig` for what this implementation does not provide.
        """
        require(raw, NEMOTRON_REQUIRED)
        c = {**NEMOTRON_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
        for key in ("rope_parameters", "sliding_window", "pad_token_id"):
            if key in raw:
                c[key] = raw[key]  # explicit nulls mean "none" for these

        def unsupported(what: str) -> UnsupportedNemotronConfig:
            return UnsupportedNemotronConfig(f"unsupported Nemotron config: {what}")

        if c["dlm_paradigm"] not in ("bidirectional", "autoregressive"):
            # block_diff swaps in a FlexAttention built for the doubled training sequence.
            raise unsupported(
                f"dlm_paradigm={c['dlm_paradigm']!r} (only 'bidirectional', 'autoregressive')"
            )
        if c["hidden_act"] != "silu":
            raise unsupported(f"hidden_act={c['hidden_act']!r} (only 'silu')")
        if c["attention_bias"] or c["mlp_bias"]:
            raise unsupported("attention_bias or mlp_bias (only unbiased projections)")
        if c["sliding_window"] is not None:
            raise unsupported(f"sliding_window={c['sliding_window']!r} (only none)")
        n_heads, n_kv = int(c["num_attention_heads"]), int(c["num_key_value_heads"])
        head_dim = int(c["head_dim"])
        if n_heads % n_kv or head_dim % 2:
            raise unsupported(
                f"num_attention_heads={n_heads}, num_key_value_heads={n_kv}, head_dim={head_dim}"
            )
        mask = int(c["mask_token_id"])
        if not 0 <= mask < int(c["vocab_size"]):
            raise unsupported(f"mask_token_id={mask} outside the vocabulary")
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=int(c["hidden_size"]),
            intermediate_size=int(c["intermediate_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=n_heads,
            num_key_value_heads=n_kv,
            head_dim=head_dim,
            max_position_embeddings=int(c["max_position_embeddings"]),
            rope=Rope.from_config(c),
            rms_norm_eps=float(c["rms_norm_eps"]),
            tie_word_embeddings=bool(c["tie_word_embeddings"]),
            mask_token_id=mask,
            eos_token_id=optional_int(first_id(c["eos_token_id"])),
            pad_token_id=optional_int(c["pad_token_id"]),
            bos_token_id=optional_int(c["bos_token_id"]),
            block_size=int(c["block_size"]),
            entity_slots=bool(raw.get("entity_slots", False)),
            raw=dict(raw),
        )


class NemotronModel(EmbeddedModel):
    """Nemotron-Labs-Diffusion behind the runtime's forward API (``DLMModel.forward``'s)."""

    def __init__(self, config: NemotronConfigView | Mapping[str, Any]) -> None:
        super().__init__()
        self.config = as_view(config, NemotronConfigView)
        # transformers passes the attention scale explicitly
        self.encoder = Decoder(self.config, scale=self.config.head_dim**-0.5)
        self.diffusion_head = output_head(
            self.config.hidden_size, self.config.vocab_size, tied=self.config.tie_word_embeddings
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def _positions(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        rope = cfg.rope
        # Rounded to the model's dtype first: what upstream's .to(dtype) does to its buffer.
        inv_freq = rope.inv_freq(cfg.head_dim, position_ids.device).to(dtype).to(torch.float32)
        emb = rotary_angles(position_ids, inv_freq)
        cos = (emb.cos() * rope.attention_factor).to(dtype)
        sin = (emb.sin() * rope.attention_factor).to(dtype)
        q_scale = None
        if rope.llama4_beta is not None and rope.original_max is not None:
            pos = position_ids.to(torch.float32)
            scale = 1 + rope.llama4_beta * torch.log(1 + torch.floor(pos / rope.original_max))
            q_scale = scale[:, None, :, None].to(dtype)
        return cos, sin, q_scale

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Same contract as :meth:`dlm_runtime.modeling.DLMModel.forward`.

        ``attention_mask=None`` is the diffusion mode (every input position sees the whole cache
        and every other input position); pass a causal mask for the autoregressive mode.
        """
        cfg = self.config
        position_ids, mask, _ = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, cfg.num_hidden_layers
        )
        x = self.encoder.embed_tokens(input_ids)
        cos, sin, q_scale = self._positions(position_ids, x.dtype)
        x, new_kv = run_layers(
            self.encoder.layers, x, cos, sin, mask, past_key_values, q_scale=q_scale
        )
        x = self.encoder.norm(take_positions(x, logits_index))
        logits = project_out(x, self.encoder.embed_tokens, self.diffusion_head)
        return ForwardOutput(logits=logits, new_key_values=new_kv)
