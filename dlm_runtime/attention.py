"""Attention-mask builders and the KV-cache type shared by the native and LLaDA models.

Every model in ``dlm_runtime`` takes a boolean mask of shape ``[B, 1, T, S]`` where ``True``
means "query ``t`` may attend to key ``s``" and ``S = P + T`` (cached keys first, then the
``T`` input positions). The three decoding modes of one checkpoint are just different masks:

* autoregressive: :func:`causal_mask`
* block diffusion: :func:`block_causal_mask` (one block as long as the reply = LLaDA's full
  bidirectional attention)
* self-speculation: a diffusion draft (block-causal) verified by a causal pass.

A cache is a list with one ``(k, v)`` pair per layer, each ``[B, n_kv_heads, S, head_dim]``, rotary
already applied to ``k``. Batching requests with caches of different lengths right-pads them
(:func:`kv_pad_stack`) and hides the padded slots with ``valid_k`` in the mask builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer ``(k, v)``, each ``[B, n_kv_heads, S, head_dim]`` with rotary applied to ``k``."""


@dataclass
class ForwardOutput:
    """What both models return from ``forward``."""

    logits: torch.Tensor
    """``[B, T, vocab]``."""
    new_key_values: KV
    """k/v of the ``T`` input positions only, ``[B, n_kv_heads, T, head_dim]`` per layer."""


def take_positions(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``x [B, T, H]`` at ``index [B, K]`` positions per row (all of ``x`` when None).

    The output projection is the largest matrix of a small model: a prompt's prefill needs
    the logits of its last positions only, so callers project just those.
    """
    if index is None:
        return x
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _as_batched(ids: torch.Tensor) -> torch.Tensor:
    """Give 1-D per-position ids a batch dimension of 1."""
    if ids.dim() == 1:
        return ids.unsqueeze(0)
    if ids.dim() != 2:
        raise ValueError(f"expected ids of shape [T] or [B, T], got {tuple(ids.shape)}")
    return ids


def _finish(allowed: torch.Tensor, valid_k: torch.Tensor | None) -> torch.Tensor:
    """Apply key validity and add the head dimension: ``[B, T, S] -> [B, 1, T, S]``."""
    if valid_k is not None:
        allowed = allowed & _as_batched(valid_k).to(torch.bool)[:, None, :]
    return allowed.unsqueeze(1)


def block_causal_mask(
    block_ids_q: torch.Tensor,
    block_ids_k: torch.Tensor,
    valid_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Query attends to key iff ``block(k) <= block(q)`` (and the key slot is valid).

    Bidirectional within a block, causal across blocks. Ids are ``[T]``/``[B, T]`` and
    ``[S]``/``[B, S]``; ``valid_k`` (``[S]``/``[B, S]`` bool) hides padded cache slots.
    Returns ``[B, 1, T, S]`` bool.
    """
    q = _as_batched(block_ids_q)
    k = _as_batched(block_ids_k)
    return _finish(k[:, None, :] <= q[:, :, None], valid_k)


def causal_mask(
    pos_q: torch.Tensor,
    pos_k: torch.Tensor,
    valid_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Query attends to key iff ``pos(k) <= pos(q)`` and the key slot is valid. ``[B, 1, T, S]``."""
    q = _as_batched(pos_q)
    k = _as_batched(pos_k)
    return _finish(k[:, None, :] <= q[:, :, None], valid_k)


def padding_mask(valid_k: torch.Tensor, q_len: int) -> torch.Tensor:
    """Full bidirectional attention over the valid key slots only. ``[B, 1, q_len, S]``."""
    valid = _as_batched(valid_k).to(torch.bool)
    return valid[:, None, None, :].expand(-1, 1, q_len, -1)


# --- KV cache helpers -------------------------------------------------------------------------


def kv_length(kv: KV | None) -> int:
    """Number of cached positions (including padded slots); 0 for ``None`` or an empty list."""
    if not kv:
        return 0
    return int(kv[0][0].shape[2])


def kv_concat(past: KV | None, new: KV) -> KV:
    """Append ``new`` after ``past`` along the position axis (``past`` may be ``None``)."""
    if not past:
        return [(k, v) for k, v in new]
    if len(past) != len(new):
        raise ValueError(f"layer count differs: {len(past)} vs {len(new)}")
    return [
        (torch.cat([pk, nk], dim=2), torch.cat([pv, nv], dim=2))
        for (pk, pv), (nk, nv) in zip(past, new, strict=True)
    ]


def kv_slice(kv: KV, start: int, end: int | None = None) -> KV:
    """Positions ``start:end`` of every layer's k/v."""
    return [(k[:, :, start:end], v[:, :, start:end]) for k, v in kv]


def kv_pad_stack(caches: Sequence[KV]) -> tuple[KV, torch.Tensor]:
    """Stack per-request caches (each batch 1) into one right-padded batch.

    Returns the batched cache ``[B, H, S_max, D]`` per layer (padding is zeros) and the validity
    mask ``[B, S_max]`` (``True`` = real slot). Pass the mask, extended by ``True`` for the new
    input positions, as ``valid_k`` to the mask builders.
    """
    if not caches:
        raise ValueError("no caches to stack")
    n_layers = len(caches[0])
    if any(len(c) != n_layers for c in caches):
        raise ValueError("caches have different layer counts")
    lengths = [kv_length(c) for c in caches]
    s_max = max(lengths)
    ref = caches[0][0][0]
    valid = (
        torch.arange(s_max, device=ref.device)[None, :]
        < torch.tensor(lengths, device=ref.device)[:, None]
    )
    out: KV = []
    for layer in range(n_layers):
        ks, vs = [], []
        for cache, n in zip(caches, lengths, strict=True):
            k, v = cache[layer]
            if k.shape[0] != 1:
                raise ValueError(f"each cache must have batch size 1, got {k.shape[0]}")
            ks.append(F.pad(k, (0, 0, 0, s_max - n)))
            vs.append(F.pad(v, (0, 0, 0, s_max - n)))
        out.append((torch.cat(ks, dim=0), torch.cat(vs, dim=0)))
    return out, valid


def kv_unstack(kv: KV, valid: torch.Tensor) -> list[KV]:
    """Split a batched cache back into per-request caches, keeping only the valid slots.

    ``valid`` is ``[B, S]`` bool over the batched cache's positions (for example the mask from
    :func:`kv_pad_stack` concatenated with ``True`` for positions appended since).
    """
    if valid.dim() != 2 or valid.shape[1] != kv_length(kv):
        raise ValueError(f"valid must be [B, {kv_length(kv)}], got {tuple(valid.shape)}")
    out: list[KV] = []
    for row in range(valid.shape[0]):
        keep = valid[row].nonzero(as_tuple=True)[0]
        out.append(
            [
                (k[row : row + 1].index_select(2, keep), v[row : row + 1].index_select(2, keep))
                for k, v in kv
            ]
        )
    return out
