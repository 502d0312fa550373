"""Native implementation of Dream (``model_type "Dream"``), reading Dream-layout checkpoints.

Dream (Dream-org/Dream-v0-Instruct-7B) is a Qwen2 transformer trained as a masked diffusion LM
with full bidirectional attention. The arithmetic follows its published ``modeling_dream.py``:
RMS norms in float32 then cast back and scaled; biased q/k/v projections, unbiased output
projection; "rotate_half" rotary whose cos/sin are computed in float32 and applied in the
model's dtype; GQA by repeating kv heads; SwiGLU MLP; final norm and an untied ``lm_head``.
The layers are :mod:`dlm_runtime.layers`' (biased q/k/v, cos/sin cast to the model's dtype).

**Shifted logits.** Dream keeps the autoregressive convention it was initialised from: the
prediction for position ``i`` comes out at position ``i - 1`` (its sampler reads
``cat([logits[:, :1], logits[:, :-1]])``, so position 0 reads its own output). This module
applies that shift itself, so ``forward(...).logits[:, i]`` is the prediction *for* position
``i``, as for every other model of the runtime. The shift needs the previous position's hidden
state, so a cached forward (``past_key_values``) cannot return the logits of its first input
position: Dream runs in the runtime's uncached patterns (``Pattern.BIDIRECTIONAL``, its own).

Parameter names are the checkpoint's (``model.embed_tokens.weight``,
``model.layers.N.self_attn.q_proj.weight``, ``lm_head.weight`` ...). ``.config`` is a
:class:`DreamConfigView` with the attribute names the runtime reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput
from dlm_runtime.config_view import as_view, first_id, optional_int, with_defaults
from dlm_runtime.layers import (
    Decoder,
    EmbeddedModel,
    output_head,
    project_out,
    rotary_cos_sin,
    run_layers,
)
from dlm_runtime.modeling import prepare_forward

__all__ = ["DREAM_DEFAULTS", "DreamConfigView", "DreamModel", "UnsupportedDreamConfig"]

# Defaults of the published ``DreamConfig`` (configuration_dream.py) for keys a config.json
# leaves out. Token ids have no default here: the published ones are Qwen2's, and a missing id
# in a foreign checkpoint is an error rather than a silent guess.
DREAM_DEFAULTS: dict[str, Any] = {
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "pad_token_id": None,
    "eos_token_id": None,
}

DREAM_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mask_token_id",
)


class UnsupportedDreamConfig(ValueError):
    """The config asks for a Dream feature this native implementation does not provide."""


@dataclass
class DreamConfigView:
    """Dream's config.json under the runtime's attribute names (plus the raw dict)."""

    vocab_size: int
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
    eos_token_id: int | None
    pad_token_id: int | None
    entity_slots: bool = False
    model_type: str = "Dream"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DreamConfigView:
        """Validate a Dream config.json dict.

        Raises ``KeyError`` naming a missing required key and :class:`UnsupportedDreamConfig`
        for what the published model supports but this one does not (rope scaling, sliding
        window, activations other than SiLU).
        """
        c = with_defaults(raw, DREAM_REQUIRED, DREAM_DEFAULTS)
        if c["rope_scaling"]:
            raise UnsupportedDreamConfig(
                f"unsupported Dream config: rope_scaling={c['rope_scaling']!r} (only none)"
            )
        if c["use_sliding_window"]:
            raise UnsupportedDreamConfig("unsupported Dream config: use_sliding_window=true")
        if c["hidden_act"] != "silu":
            raise UnsupportedDreamConfig(
                f"unsupported Dream config: hidden_act={c['hidden_act']!r} (only 'silu')"
            )
        d, n_heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        n_kv = int(c["num_key_value_heads"] or n_heads)
        if d % n_heads or n_heads % n_kv or (d // n_heads) % 2:
            raise UnsupportedDreamConfig(
                f"unsupported Dream config: hidden_size={d}, num_attention_heads={n_heads}, "
                f"num_key_value_heads={n_kv}"
            )
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=d,
            intermediate_size=int(c["intermediate_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=n_heads,
            num_key_value_heads=n_kv,
            max_position_embeddings=int(c["max_position_embeddings"]),
            rope_theta=float(c["rope_theta"]),
            rms_norm_eps=float(c["rms_norm_eps"]),
            tie_word_embeddings=bool(c["tie_word_embeddings"]),
            mask_token_id=int(c["mask_token_id"]),
            eos_token_id=optional_int(first_id(c["eos_token_id"])),
            pad_token_id=optional_int(c["pad_token_id"]),
            entity_slots=bool(raw.get("entity_slots", False)),
            model_type=str(raw.get("model_type", "Dream")),
            raw=dict(raw),
        )


class DreamModel(EmbeddedModel):
    """Dream behind the runtime's forward API, its logits already unshifted."""

    def __init__(self, config: DreamConfigView | Mapping[str, Any]) -> None:
        super().__init__()
        self.config = as_view(config, DreamConfigView)
        self.model = Decoder(self.config, qkv_bias=True)
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
        """Same contract as :meth:`dlm_runtime.modeling.DLMModel.forward`.

        ``logits[:, j]`` is the prediction for input position ``j`` (``logits_index[:, j]``
        when given): Dream's output at the position before it, and at position 0 its own
        output, as the published sampler reads them. With ``past_key_values`` the first input
        position has no previous output here, and asking for its logits raises ``ValueError``.
        """
        cfg = self.config
        position_ids, mask, past_len = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, cfg.num_hidden_layers
        )
        x = self.model.embed_tokens(input_ids)
        cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x, new_kv = run_layers(self.model.layers, x, cos, sin, mask, past_key_values)
        if logits_index is None and not past_len:
            # The published sampler's order of operations, for bit-equal logits.
            logits = project_out(self.model.norm(x), self.model.embed_tokens, self.lm_head)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            return ForwardOutput(logits=logits, new_key_values=new_kv)
        if logits_index is None:
            t_len = input_ids.shape[1]
            logits_index = torch.arange(t_len, device=input_ids.device)[None]
            logits_index = logits_index.expand(input_ids.shape[0], t_len)
        source = logits_index - 1
        if past_len and bool((source < 0).any()):
            raise ValueError(
                "Dream's logits for a position come from the position before it: a cached "
                "forward cannot return the logits of its first input position"
            )
        source = source.clamp(min=0)
        h = torch.gather(x, 1, source.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        logits = project_out(self.model.norm(h), self.model.embed_tokens, self.lm_head)
        return ForwardOutput(logits=logits, new_key_values=new_kv)
