"""The transformer pieces the runtime's model families share, each written once.

The native model (:mod:`dlm_runtime.modeling`), LLaDA (:mod:`dlm_runtime.llada`), LLaDA-MoE
(:mod:`dlm_runtime.llada_moe`), Dream (:mod:`dlm_runtime.dream`) and Nemotron-Labs-Diffusion
(:mod:`dlm_runtime.nemotron`) are all pre-norm LLaMA-style decoders; they differ in weight
names, biases, q/k norms, where the rotary arithmetic runs, the feed-forward (dense or mixture
of experts) and a few scalings, which are the parameters here. Each family keeps its own parameter
names and config validation; the arithmetic lives here, so each family's tests against its
recorded upstream outputs also test the code the others run.

* :class:`RMSNorm`: float32 statistics, cast back, then scaled (and optionally shifted);
* :func:`rotary_angles`, :func:`rotary_cos_sin`, :func:`apply_rotary`: non-interleaved
  ("rotate_half") rotary; the precision of the rotation is that of the ``cos``/``sin`` passed
  (float32 for the native model and LLaDA, the model's dtype for Dream and Nemotron);
* :func:`attend`: scaled dot-product attention, grouped-query by repeated kv heads;
* :func:`self_attention`: projections, rotary, KV cache and attention, for any module holding
  ``q_proj``/``k_proj``/``v_proj`` (LLaDA's block holds them itself);
* :class:`Attention`, :class:`SwiGLU`, :class:`DecoderLayer`: the modules under the usual
  ``self_attn.q_proj`` / ``mlp.gate_proj`` / ``input_layernorm`` names;
* :class:`SparseMoE`: softmax top-k routing over SwiGLU experts (``mlp.gate``,
  ``mlp.experts.N.*``), LLaDA-MoE's feed-forward;
* :func:`decoder_layers`, :class:`Decoder`: a config's stack of layers, with the embedding and
  final norm;
* :func:`run_layers`: the layer loop collecting each layer's new k/v;
* :func:`output_head`, :func:`project_out`: the untied output projection or the tied embedding;
* :class:`EmbeddedModel`: ``device`` and ``dtype`` of a family's model, its embedding's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dlm_runtime.attention import KV

__all__ = [
    "Attention",
    "Decoder",
    "DecoderLayer",
    "DecoderShape",
    "EmbeddedModel",
    "KVPair",
    "QKVProjections",
    "RMSNorm",
    "SparseMoE",
    "SwiGLU",
    "apply_rotary",
    "attend",
    "decoder_layers",
    "gated_mlp",
    "output_head",
    "project_out",
    "rotary_angles",
    "rotary_cos_sin",
    "run_layers",
    "self_attention",
]

KVPair = tuple[torch.Tensor, torch.Tensor]


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


# --- rotary -----------------------------------------------------------------------------------


def rotary_angles(position_ids: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Float32 angles ``[B, 1, T, D]`` (each frequency twice) for ``position_ids [B, T]``."""
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # [B, T, D/2]
    return torch.cat((freqs, freqs), dim=-1)[:, None]


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
    emb = rotary_angles(position_ids, inv_freq)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, D]`` with the non-interleaved (first half / second half) pairing.

    The rotation runs in ``cos``'s dtype and the result comes back in ``x``'s: float32
    ``cos``/``sin`` give LLaDA's ``x.float()`` rotation, ``cos``/``sin`` already cast to the
    model's dtype give Qwen2's and Ministral's rotation in that dtype.
    """
    h = x.to(cos.dtype)
    x1, x2 = h.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


def _rotate_leading(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rotary` on the first ``cos.shape[-1]`` channels of ``x``, the rest as is."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return apply_rotary(x, cos, sin)
    return torch.cat((apply_rotary(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]), dim=-1)


# --- attention --------------------------------------------------------------------------------


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention ``[B, Hq, T, D]`` with a boolean mask ``[B, 1, T, S]``.

    ``scale=None`` is the kernel's own ``1 / sqrt(D)``; a family whose reference passes
    ``D ** -0.5`` explicitly passes it here. The mask must have no all-``False`` row
    (:func:`dlm_runtime.modeling.prepare_forward` guarantees that).
    """
    n_q, n_kv = q.shape[1], k.shape[1]
    if n_q != n_kv:
        # GQA: query head i uses kv head i // group, as in the published LLaDA code.
        k = k.repeat_interleave(n_q // n_kv, dim=1)
        v = v.repeat_interleave(n_q // n_kv, dim=1)
    out: torch.Tensor = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out


class QKVProjections(Protocol):
    """What :func:`self_attention` reads of the module that holds the projections."""

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    n_heads: int
    n_kv_heads: int
    head_dim: int


def self_attention(
    m: QKVProjections,
    h: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | None,
    past: KVPair | None,
    *,
    q_scale: torch.Tensor | None = None,
    scale: float | None = None,
    qk_norm: tuple[nn.Module, nn.Module] | None = None,
    clip: float | None = None,
) -> tuple[torch.Tensor, KVPair]:
    """Grouped-query self-attention of ``h [B, T, hidden]`` up to the output projection.

    Returns the heads' outputs ``[B, T, n_heads * head_dim]`` and this input's rotated k and v
    (the cache entry; ``past`` is prepended to attend, not returned). ``q_scale`` multiplies the
    rotated query (Nemotron's Llama-4 position scaling). ``qk_norm`` normalises each head of q
    and k before the rotary (OLMoE-style per-head norms, LLaDA-MoE's ``q_norm``/``k_norm``);
    ``clip`` then clamps q, k and v to ``[-clip, clip]`` (OLMo's ``clip_qkv``).
    Rotary of ``cos``'s last size ``R`` below ``head_dim`` rotates the first ``R`` channels
    of each head and passes the rest (``partial_rotary_factor``).
    """
    b, t, _ = h.shape
    q = m.q_proj(h).view(b, t, m.n_heads, m.head_dim)
    k = m.k_proj(h).view(b, t, m.n_kv_heads, m.head_dim)
    v = m.v_proj(h).view(b, t, m.n_kv_heads, m.head_dim)
    if qk_norm is not None:
        q, k = qk_norm[0](q), qk_norm[1](k)
    if clip is not None:
        q, k, v = (x.clamp(min=-clip, max=clip) for x in (q, k, v))
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q = _rotate_leading(q, cos, sin)
    k = _rotate_leading(k, cos, sin)
    if q_scale is not None:
        q = q * q_scale
    k_all, v_all = k, v
    if past is not None:
        k_all = torch.cat([past[0].to(k.dtype), k], dim=2)
        v_all = torch.cat([past[1].to(v.dtype), v], dim=2)
    out = attend(q, k_all, v_all, mask, scale)
    return out.transpose(1, 2).reshape(b, t, m.n_heads * m.head_dim), (k, v)


class Attention(nn.Module):
    """``q_proj``/``k_proj``/``v_proj``/``o_proj`` around :func:`self_attention`.

    ``qk_norm_eps`` adds the per-head ``q_norm``/``k_norm`` (LLaDA-MoE's ``qk_layernorm``) and
    ``clip`` clamps q, k and v (its ``clip_qkv``); ``o_bias`` biases the output projection.
    """

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = False,
        o_bias: bool = False,
        scale: float | None = None,
        qk_norm_eps: float | None = None,
        clip: float | None = None,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.scale, self.clip = scale, clip
        self.q_proj = nn.Linear(hidden_size, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, hidden_size, bias=o_bias)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if qk_norm_eps is not None:
            self.q_norm = RMSNorm(head_dim, qk_norm_eps)
            self.k_norm = RMSNorm(head_dim, qk_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: KVPair | None,
        q_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVPair]:
        norms = None
        if self.q_norm is not None and self.k_norm is not None:
            norms = (self.q_norm, self.k_norm)
        out, kv = self_attention(
            self,
            x,
            cos,
            sin,
            mask,
            past,
            q_scale=q_scale,
            scale=self.scale,
            qk_norm=norms,
            clip=self.clip,
        )
        return self.o_proj(out), kv


# --- feed-forward and the layer ---------------------------------------------------------------


def gated_mlp(
    x: torch.Tensor,
    gate: nn.Module,
    up: nn.Module,
    down: nn.Module,
    act: Callable[[torch.Tensor], torch.Tensor] = F.silu,
) -> torch.Tensor:
    """``down(act(gate(x)) * up(x))``: SwiGLU with the default SiLU."""
    out: torch.Tensor = down(act(gate(x)) * up(x))
    return out


class SwiGLU(nn.Module):
    """The SwiGLU MLP under ``gate_proj``/``up_proj``/``down_proj``, without biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_mlp(x, self.gate_proj, self.up_proj, self.down_proj)


class SparseMoE(nn.Module):
    """Softmax-routed mixture of SwiGLU experts (OLMoE's sparse block; LLaDA-MoE's ``mlp``).

    ``gate`` scores every expert; the softmax (float32) plus the optional ``expert_bias`` gives
    each token's weights, of which the ``top_k`` largest are kept (the bias included, and not
    renormalised unless ``norm_topk_prob``) and cast to the input's dtype. Each expert runs once
    on the tokens routed to it, and the weighted outputs are summed in expert
    order in the input's dtype: the published loop's grouping and order, so bfloat16 sums round
    as upstream's do.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        n_experts: int,
        top_k: int,
        *,
        norm_topk_prob: bool = False,
        expert_bias: bool = False,
    ) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(hidden_size, n_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLU(hidden_size, intermediate_size) for _ in range(n_experts)
        )
        self.expert_bias: torch.Tensor | None
        if expert_bias:
            self.register_buffer("expert_bias", torch.zeros(n_experts))
        else:
            self.expert_bias = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row of ``x [N, hidden]``'s ``top_k`` weights (``x``'s dtype) and experts."""
        weights = F.softmax(self.gate(x), dim=1, dtype=torch.float32)
        if self.expert_bias is not None:
            weights = weights + self.expert_bias
        top, experts = torch.topk(weights, self.top_k, dim=-1)
        if self.norm_topk_prob:
            top = top / top.sum(dim=-1, keepdim=True)
        return top.to(x.dtype), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, chosen = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            # Rows ordered by (slot, token), as upstream's ``where`` over its [k, N] mask, so
            # the expert's matmul sees the same rows in the same order.
            slot, token = torch.where(chosen.T.eq(e))
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * weights[token, slot, None]
            out.index_add_(0, token, y.to(flat.dtype))
        return out.reshape(shape)


class DecoderShape(Protocol):
    """The config attributes that size a :class:`DecoderLayer`, its stack and its embedding."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float

    @property
    def head_dim(self) -> int: ...


class DecoderLayer(nn.Module):
    """Pre-norm layer: ``x + attn(norm(x))``, then ``x + mlp(h) (+ shared_expert(h))`` over
    ``h = norm(x)``.

    ``norms_first`` only orders the parameters (the native model registers
    ``input_layernorm`` before ``self_attn``, the others after ``mlp``); the caller creates the
    modules, so a seeded initialisation draws the same weights either way (the norms draw
    none). ``shared_expert`` is LLaDA-MoE's, a module beside ``mlp``.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float,
        self_attn: Attention,
        mlp: nn.Module,
        *,
        norms_first: bool = False,
        shared_expert: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if norms_first:
            self.input_layernorm = RMSNorm(hidden_size, eps)
        self.self_attn = self_attn
        if norms_first:
            self.post_attention_layernorm = RMSNorm(hidden_size, eps)
        self.mlp = mlp
        if not norms_first:
            self.input_layernorm = RMSNorm(hidden_size, eps)
            self.post_attention_layernorm = RMSNorm(hidden_size, eps)
        self.shared_expert = shared_expert

    @classmethod
    def dense(
        cls,
        cfg: DecoderShape,
        *,
        qkv_bias: bool = False,
        scale: float | None = None,
        norms_first: bool = False,
    ) -> DecoderLayer:
        """The dense layer of ``cfg``'s shape: :class:`Attention` and a :class:`SwiGLU`."""
        d = cfg.hidden_size
        attn = Attention(
            d,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            qkv_bias=qkv_bias,
            scale=scale,
        )
        return cls(
            d, cfg.rms_norm_eps, attn, SwiGLU(d, cfg.intermediate_size), norms_first=norms_first
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: KVPair | None,
        q_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVPair]:
        att, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past, q_scale)
        x = x + att
        h = self.post_attention_layernorm(x)
        ff = self.mlp(h)
        if self.shared_expert is not None:
            ff = ff + self.shared_expert(h)
        return x + ff, kv


def decoder_layers(
    cfg: DecoderShape,
    *,
    qkv_bias: bool = False,
    scale: float | None = None,
    norms_first: bool = False,
) -> nn.ModuleList:
    """``cfg.num_hidden_layers`` :class:`DecoderLayer` (the options are the layer's)."""
    return nn.ModuleList(
        DecoderLayer.dense(cfg, qkv_bias=qkv_bias, scale=scale, norms_first=norms_first)
        for _ in range(cfg.num_hidden_layers)
    )


class Decoder(nn.Module):
    """``embed_tokens``, ``layers`` and the final ``norm``: the body under a checkpoint's prefix
    (Dream's ``model.``, Nemotron's ``encoder.``)."""

    def __init__(
        self, cfg: DecoderShape, *, qkv_bias: bool = False, scale: float | None = None
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = decoder_layers(cfg, qkv_bias=qkv_bias, scale=scale)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class EmbeddedModel(nn.Module):
    """Base of the foreign families' models: ``device`` and ``dtype`` are the embedding's."""

    def get_input_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype


def output_head(
    hidden_size: int, vocab_size: int, *, tied: bool, bias: bool = False
) -> nn.Linear | None:
    """The untied output projection, or ``None`` when the embedding matrix serves (tied)."""
    return None if tied else nn.Linear(hidden_size, vocab_size, bias=bias)


def project_out(x: torch.Tensor, embedding: nn.Embedding, head: nn.Linear | None) -> torch.Tensor:
    """Logits of ``x``: through ``head``, or the embedding matrix when ``head`` is ``None``."""
    return F.linear(x, embedding.weight) if head is None else head(x)


def run_layers(
    layers: nn.ModuleList,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | None,
    past_key_values: KV | None,
    **extra: Any,
) -> tuple[torch.Tensor, KV]:
    """Run ``x`` through ``layers``, each with its cache entry; return ``x`` and the new k/v."""
    new_kv: KV = []
    for i, layer in enumerate(layers):
        x, kv = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None, **extra)
        new_kv.append(kv)
    return x, new_kv
