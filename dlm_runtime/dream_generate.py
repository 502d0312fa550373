"""Dream's own sampler: ``diffusion_generate`` as its published ``generation_utils.py`` runs it.

The whole reply starts as masks after the prompt; each of ``steps`` forwards over prompt + reply
(full bidirectional attention, no cache) predicts every masked position, and a time schedule
``t = linspace(1, eps, steps + 1)`` says how many to reveal:

* ``alg="origin"``: each masked position is revealed with probability ``1 - s / t`` (all at the
  last step), one uniform draw per masked position, then a token is chosen for the revealed ones;
* ``"maskgit_plus"`` / ``"topk_margin"`` / ``"entropy"``: ``int(masked * (1 - s / t))`` positions
  (all at the last step) with the highest confidence (top probability, top-1 minus top-2
  probability, negative entropy) are revealed; with ``alg_temp > 0`` they are drawn instead
  from ``softmax(confidence / alg_temp)``.

Tokens are the argmax at ``temperature == 0``, otherwise drawn from the softmax of
``logits / temperature`` after top-p and top-k filtering. All arithmetic is done in the logits'
dtype, as upstream does, so a bfloat16 model gives upstream's bfloat16 results. Random draws
come from ``generator`` in upstream's order: a generator seeded with ``n`` reproduces
``torch.manual_seed(n)`` followed by upstream's call on the same device.

A batch of prompts of different lengths is left-padded with ``attention_mask`` (1 = real
token), as upstream takes it: padded positions are hidden from every query, and positions count
from each row's first real token. Upstream reveals the same number of positions in every row
(the batch's mean count of masks), which equals each row's own count as long as no row predicts
the mask token itself.

Not offered: upstream's per-step hooks (``generation_tokens_hook_func`` /
``generation_logits_hook_func``), ``num_return_sequences`` and the step history.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch.distributions import Categorical

from dlm_runtime.attention import ForwardOutput

__all__ = ["ALGORITHMS", "diffusion_generate"]

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")


class _Model(Protocol):
    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> ForwardOutput: ...


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``."""
    ordered, order = torch.sort(logits, descending=True)
    beyond = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1) > top_p
    drop_sorted = torch.zeros_like(beyond)
    drop_sorted[..., 1:] = beyond[..., :-1]  # the token crossing the threshold stays
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """One token per row as ``Categorical(probs).sample()`` draws it; None where that raises."""
    try:
        normalised = Categorical(probs=probs).probs
        flat = normalised.reshape(-1, normalised.shape[-1])
        return torch.multinomial(flat, 1, True, generator=generator).T.reshape(probs.shape[:-1])
    except (ValueError, RuntimeError):
        return None


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_p: float | None,
    top_k: int | None,
    generator: torch.Generator | None,
    confidence: str = "probability",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence, token)`` for each row of ``logits [N, V]``."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _nucleus(logits, top_p)
    if top_k is not None:
        logits = _top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    drawn = _draw(probs, generator) if temperature > 0 else None
    if drawn is None:
        score, token = probs.max(dim=-1)
    else:
        token = drawn
        score = torch.gather(probs, -1, token.unsqueeze(-1)).squeeze(-1)
    if confidence == "margin":
        top2 = torch.sort(probs, dim=-1, descending=True)[0]
        score = top2[:, 0] - top2[:, 1]
    elif confidence == "neg_entropy":
        score = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return score, token


_CONFIDENCE = {"maskgit_plus": "probability", "topk_margin": "margin", "entropy": "neg_entropy"}


@torch.no_grad()
def diffusion_generate(
    model: _Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    mask_token_id: int,
    steps: int = 512,
    alg: str = "origin",
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = 50,
    alg_temp: float | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prompt + reply ids ``[B, L + max_new_tokens]``, as Dream's ``diffusion_generate``.

    ``model`` returns unshifted logits (:class:`dlm_runtime.dream.DreamModel` does). Arguments
    mean what they mean to upstream; ``generator`` replaces upstream's global random state.
    The defaults are what upstream runs when a caller leaves them out under the transformers
    release Dream pins (4.46.2): its ``DreamGenerationConfig`` is built from the model config,
    which carries transformers' generation defaults ``temperature=1.0, top_p=1.0, top_k=50``.
    So ``top_k=50`` applies unless set (``None`` turns it off); it changes the confidences of
    ``maskgit_plus`` and ``entropy`` even at temperature 0.
    """
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown alg {alg!r} (expected one of {', '.join(ALGORITHMS)})")
    if steps < 1 or max_new_tokens < 1:
        raise ValueError("steps and max_new_tokens must be positive")
    device = input_ids.device
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_token_id)
    position_ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    if attention_mask is not None and bool((attention_mask == 0).any()):
        keep = F.pad(attention_mask, (0, max_new_tokens), value=1)
        position_ids = keep.long().cumsum(-1) - 1
        position_ids.masked_fill_(keep == 0, 1)
        real = keep.bool()
        mask = (real[:, None, :] & real[:, :, None])[:, None]  # [B, 1, N, N]
    times = torch.linspace(1, eps, steps + 1, device=device)
    for i in range(steps):
        masked = x == mask_token_id
        logits = model(x, position_ids=position_ids, attention_mask=mask).logits
        masked_logits = logits[masked]
        t, s = times[i], times[i + 1]
        last = i == steps - 1
        if alg == "origin":
            reveal_p = 1 if last else 1 - s / t
            proposal = torch.full_like(x[masked], mask_token_id)
            reveal = torch.rand(proposal.shape, device=device, generator=generator) < reveal_p
            _, proposal[reveal] = _choose(
                masked_logits[reveal], temperature, top_p, top_k, generator
            )
            x[masked] = proposal
            continue
        score, token = _choose(
            masked_logits, temperature, top_p, top_k, generator, _CONFIDENCE[alg]
        )
        per_row = masked.sum() / masked.shape[0]
        count = int(per_row) if last else int(per_row * (1 - s / t))
        if count <= 0:
            continue
        full = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full[masked] = score
        if alg_temp is None or alg_temp == 0:
            chosen = torch.topk(full, count).indices
        else:
            weights = F.softmax(full / alg_temp, dim=-1)
            chosen = torch.multinomial(weights, num_samples=count, generator=generator)
        proposed = torch.full_like(x, mask_token_id)
        proposed[masked] = token
        rows = torch.arange(x.shape[0], device=device)[:, None].expand_as(chosen)
        x[rows, chosen] = proposed[rows, chosen]
    return x
