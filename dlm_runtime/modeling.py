"""The native masked-diffusion language model: a LLaMA-style transformer without a built-in mask.

The model never decides how positions see each other: the caller passes a boolean mask (see
:mod:`dlm_runtime.attention`), so autoregressive, block-diffusion and self-speculative decoding
all run through the same ``forward``.

The primitives here (:class:`RMSNorm`, :func:`rotary_cos_sin`, :func:`apply_rotary`,
:func:`attend`) are shared with :mod:`dlm_runtime.llada`; their arithmetic follows LLaDA's
published ``modeling_llada.py`` (RMS norm in float32, non-interleaved "rotate_half" rotary in
float32, GQA by repeating kv heads).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from dlm_runtime.attention import KV, ForwardOutput, kv_length, take_positions

__all__ = [
    "KV",
    "DLMConfig",
    "DLMModel",
    "ForwardOutput",
    "RMSNorm",
    "apply_rotary",
    "attend",
    "guard_empty_rows",
    "prepare_forward",
    "rotary_cos_sin",
]


# --- shared primitives ------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMS norm computed in float32, cast back, then scaled (LLaDA's / LLaMA's form)."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * h.to(dtype)
        if self.bias is not None:
            out = out + self.bias
        return out


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``cos, sin`` of shape ``[B, 1, T, head_dim]`` for absolute ``position_ids [B, T]``.

    Computed per call rather than cached in a buffer: it is cheap, and buffers break when
    ``from_pretrained`` builds the module on the meta device.
    """
    device = position_ids.device
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, D]`` with the non-interleaved (first half / second half) pairing."""
    h = x.to(torch.float32)
    x1, x2 = h.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention ``[B, Hq, T, D]`` with a boolean mask ``[B, 1, T, S]``.

    The mask must have no all-``False`` row (:func:`prepare_forward` guarantees that).
    """
    n_q, n_kv = q.shape[1], k.shape[1]
    if n_q != n_kv:
        # GQA: query head i uses kv head i // group, as in the published LLaDA code.
        k = k.repeat_interleave(n_q // n_kv, dim=1)
        v = v.repeat_interleave(n_q // n_kv, dim=1)
    out: torch.Tensor = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out


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


class DLMAttention(nn.Module):
    def __init__(self, config: DLMConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        k_all, v_all = k, v
        if past is not None:
            k_all = torch.cat([past[0].to(k.dtype), k], dim=2)
            v_all = torch.cat([past[1].to(v.dtype), v], dim=2)
        out = attend(q, k_all, v_all, mask)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(out), (k, v)


class DLMMLP(nn.Module):
    def __init__(self, config: DLMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class DLMDecoderLayer(nn.Module):
    def __init__(self, config: DLMConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DLMAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = DLMMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        att, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + att
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


class DLMModel(PreTrainedModel):  # type: ignore[no-untyped-call]
    """Native model. ``forward(input_ids, position_ids, attention_mask, past_key_values)``.

    With tied embeddings there is no ``lm_head`` module at all (logits use the embedding matrix
    directly), so no tying machinery of any transformers version is involved.
    """

    config_class = DLMConfig
    base_model_prefix = "dlm"
    main_input_name = "input_ids"
    _no_split_modules = ["DLMDecoderLayer"]
    _supports_sdpa = True
    config: DLMConfig

    def __init__(self, config: DLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DLMDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head: nn.Linear | None = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
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
        new_kv: KV = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            new_kv.append(kv)
        x = self.norm(take_positions(x, logits_index))
        # Tied: no lm_head module, the embedding matrix is the output projection.
        logits = F.linear(x, self.embed_tokens.weight) if self.lm_head is None else self.lm_head(x)
        return ForwardOutput(logits=logits, new_key_values=new_kv)


def _register() -> None:
    """Make ``AutoConfig``/``AutoModel`` resolve ``model_type = "dlm"`` (idempotent)."""
    # ValueError = already registered (module reloaded).
    with contextlib.suppress(ValueError):
        AutoConfig.register("dlm", DLMConfig)
    with contextlib.suppress(ValueError):
        AutoModel.register(DLMConfig, DLMModel)


_register()
