"""The native masked-diffusion language model: a LLaMA-style transformer without a built-in mask.

The model never decides how positions see each other: the caller passes a boolean mask (see
:mod:`dlm_runtime.attention`), so autoregressive, block-diffusion and self-speculative decoding
all run through the same ``forward``.

Its layers are :mod:`dlm_runtime.layers`' (shared with the foreign families), with the rotary
rotation in float32 as LLaDA's published ``modeling_llada.py`` does it; :func:`prepare_forward`
here validates every family's forward arguments.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from dlm_runtime.attention import KV, ForwardOutput, kv_length, take_positions
from dlm_runtime.layers import (
    RMSNorm,
    decoder_layers,
    output_head,
    project_out,
    rotary_cos_sin,
    run_layers,
)

__all__ = [
    "KV",
    "DLMConfig",
    "DLMModel",
    "ForwardOutput",
    "guard_empty_rows",
    "prepare_forward",
]


# --- forward arguments ------------------------------------------------------------------------


def guard_empty_rows(mask: torch.Tensor) -> torch.Tensor:
    """Let query rows that may attend to nothing attend to their own key instead.

    An all-``False`` row (a padding row) makes softmax return NaN, which would then spread
    through later layers' matmuls on some backends. The row's query ``t`` sits at key slot
    ``S - T + t``; its output becomes finite and meaningless, and callers must ignore it.
    Done once per forward without a host sync (no ``if mask.any()``).
    """
    t_len, s_len = mask.shape[-2], mask.shape[-1]
    own = torch.zeros(t_len, s_len, dtype=torch.bool, device=mask.device)
    own[torch.arange(t_len), torch.arange(s_len - t_len, s_len)] = True
    return mask | (~mask.any(dim=-1, keepdim=True) & own)


def prepare_forward(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    past_key_values: KV | None,
    n_layers: int,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Validate the forward arguments; return ``(position_ids [B, T], mask [B|1, 1, T, S], P)``.

    The returned mask has empty rows fixed by :func:`guard_empty_rows`.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T], got {tuple(input_ids.shape)}")
    batch, t_len = input_ids.shape
    past_len = kv_length(past_key_values)
    if past_key_values and len(past_key_values) != n_layers:
        raise ValueError(f"past_key_values has {len(past_key_values)} layers, model has {n_layers}")
    if position_ids is None:
        position_ids = torch.arange(past_len, past_len + t_len, device=input_ids.device)
        position_ids = position_ids.unsqueeze(0).expand(batch, t_len)
    elif position_ids.dim() == 1:
        position_ids = position_ids.unsqueeze(0).expand(batch, t_len)
    if position_ids.shape != (batch, t_len):
        raise ValueError(f"position_ids must be [B, T], got {tuple(position_ids.shape)}")
    mask = attention_mask
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[None, None]
        elif mask.dim() == 3:
            mask = mask[:, None]
        if mask.dtype != torch.bool:
            raise ValueError(f"attention_mask must be bool, got {mask.dtype}")
        if mask.shape[-2:] != (t_len, past_len + t_len) or mask.shape[1] != 1:
            raise ValueError(
                f"attention_mask must be [B, 1, {t_len}, {past_len + t_len}], "
                f"got {tuple(attention_mask.shape)}"  # type: ignore[union-attr]
            )
        mask = guard_empty_rows(mask)
    return position_ids, mask, past_len


# --- native model -----------------------------------------------------------------------------


class DLMConfig(PretrainedConfig):  # type: ignore[no-untyped-call]
    """Configuration of the native model (``model_type = "dlm"``)."""

    model_type = "dlm"

    def __init__(
        self,
        vocab_size: int = 32000,  # rows of the embedding = width of the logits
        hidden_size: int = 1024,  # residual stream width
        intermediate_size: int = 2816,  # SwiGLU inner width
        num_hidden_layers: int = 16,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,  # < num_attention_heads = grouped-query attention
        max_position_embeddings: int = 4096,  # longest sequence (prompt + reply) trained for
        rope_theta: float = 10000.0,  # rotary base
        rms_norm_eps: float = 1e-5,
        tie_word_embeddings: bool = False,  # LM head reuses the token embedding matrix
        mask_token_id: int = 0,  # the [MASK] token diffusion fills in
        eos_token_id: int | None = None,  # end of reply
        pad_token_id: int | None = None,  # fills the reply after end of reply
        initializer_range: float = 0.02,  # std of the normal init of fresh weights
        # Whether the checkpoint was trained on typed entity placeholders ([ORDER_ID_1]) rather
        # than real values: a per-model setting for the application, not used by this module.
        entity_slots: bool = True,
        **kwargs: Any,
    ) -> None:
        # The first checkpoints called it copy_entities (true: the application copies them).
        entity_slots = bool(kwargs.pop("copy_entities", entity_slots))
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = (
            num_attention_heads if num_key_value_heads is None else num_key_value_heads
        )
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.initializer_range = initializer_range
        self.entity_slots = entity_slots
        kwargs.update(
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
        )
        super().__init__(**kwargs)
        # Some transformers versions route tie_word_embeddings elsewhere; keep it on the config.
        self.tie_word_embeddings = tie_word_embeddings
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        if hidden_size % num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        if (hidden_size // num_attention_heads) % 2:
            raise ValueError("head_dim must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class DLMModel(PreTrainedModel):  # type: ignore[no-untyped-call]
    """Native model. ``forward(input_ids, position_ids, attention_mask, past_key_values)``.

    With tied embeddings there is no ``lm_head`` module at all (logits use the embedding matrix
    directly), so no tying machinery of any transformers version is involved.
    """

    config_class = DLMConfig
    base_model_prefix = "dlm"
    main_input_name = "input_ids"
    _no_split_modules = ["DecoderLayer"]
    _supports_sdpa = True
    config: DLMConfig

    def __init__(self, config: DLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = decoder_layers(config, norms_first=True)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head: nn.Linear | None = output_head(
            config.hidden_size, config.vocab_size, tied=config.tie_word_embeddings
        )
        self.post_init()  # type: ignore[no-untyped-call]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value  # type: ignore[assignment]

    def get_output_embeddings(self) -> nn.Module | None:
        return self.lm_head

    # Typed overrides: transformers' own train()/eval() are untyped and return Any.
    def train(self, mode: bool = True) -> DLMModel:
        super().train(mode)
        return self

    def eval(self) -> DLMModel:
        return self.train(False)

    @classmethod
    def can_generate(cls) -> bool:
        # Decoding is done by dlm_runtime's sampler, never by transformers' generate().
        return False

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Logits for ``input_ids [B, T]`` and the k/v of those ``T`` positions.

        ``logits_index [B, K]`` limits the logits to those positions of each row (``[B, K,
        vocab]``); the k/v still cover every position.

        ``attention_mask`` is bool ``[B, 1, T, P+T]`` (``True`` = may attend); ``None`` means full
        bidirectional attention over cache + input. ``position_ids`` default to ``P..P+T-1``,
        which is wrong when the cache holds padded slots: pass them explicitly then.
        """
        cfg = self.config
        position_ids, mask, _ = prepare_forward(
            input_ids, position_ids, attention_mask, past_key_values, cfg.num_hidden_layers
        )
        cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)
        x = self.embed_tokens(input_ids)
        x, new_kv = run_layers(self.layers, x, cos, sin, mask, past_key_values)
        x = self.norm(take_positions(x, logits_index))
        # Tied: no lm_head module, the embedding matrix is the output projection.
        logits = project_out(x, self.embed_tokens, self.lm_head)
        return ForwardOutput(logits=logits, new_key_values=new_kv)


def _register() -> None:
    """Make ``AutoConfig``/``AutoModel`` resolve ``model_type = "dlm"`` (idempotent)."""
    # ValueError = already registered (module reloaded).
    with contextlib.suppress(ValueError):
        AutoConfig.register("dlm", DLMConfig)
    with contextlib.suppress(ValueError):
        AutoModel.register(DLMConfig, DLMModel)


_register()
