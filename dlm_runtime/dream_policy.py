"""Dream's ``diffusion_generate`` as a :class:`~dlm_runtime.policies.DecodingPolicy`, so the
engine (continuous batching, drafts, cancellation) decodes a Dream checkpoint as Dream does.

The engine's ``Pattern.BIDIRECTIONAL`` state already runs Dream's forward pattern: prompt plus
the whole reply canvas, full attention, no cache, one step per forward. What differs from LLaDA
is only the per-step rule, built here from the policy protocols:

* tokens: the argmax of the top-k/top-p filtered softmax (:class:`DreamGreedy`);
* confidence: its top probability, top-1 minus top-2 margin, or negative entropy, in the
  logits' dtype (:class:`DreamConfidence`);
* how many to reveal: ``int(masked * (1 - s / t))`` on ``t = linspace(1, eps, steps + 1)``,
  everything at the last step, the most confident over the whole sequence
  (:class:`DreamSchedule`, with the policy's "reference" layout so ``torch.topk`` sees
  upstream's tensor shape and breaks ties the same way).

Greedy only (``temperature == 0``, ``alg_temp`` unset): upstream draws its random numbers over
the masked positions of the whole batch at once, a layout the engine's per-request random
sources do not reproduce; :func:`dlm_runtime.dream_generate.diffusion_generate` covers sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlm_runtime.dream_generate import _CONFIDENCE, _nucleus, _top_k
from dlm_runtime.policies import DecodingPolicy, RandomSource

__all__ = ["DreamConfidence", "DreamGreedy", "DreamSchedule", "dream_policy"]


def _probs(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_p is not None and top_p < 1:
        logits = _nucleus(logits, top_p)
    if top_k is not None:
        logits = _top_k(logits, top_k)
    return torch.softmax(logits, dim=-1)


@dataclass(frozen=True)
class DreamGreedy:
    """Upstream's token at temperature 0: argmax of the filtered probabilities."""

    top_k: int | None = 50
    top_p: float | None = None

    def choose(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        return _probs(logits, self.top_k, self.top_p).max(dim=-1).indices


@dataclass(frozen=True)
class DreamConfidence:
    """Upstream's confidence for ``alg`` (``maskgit_plus``, ``topk_margin`` or ``entropy``)."""

    alg: str = "entropy"
    top_k: int | None = 50
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.alg not in _CONFIDENCE:
            raise ValueError(f"alg {self.alg!r} has no confidence (expected one of {_CONFIDENCE})")

    def score(self, logits: torch.Tensor, tokens: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        probs = _probs(logits, self.top_k, self.top_p)
        kind = _CONFIDENCE[self.alg]
        if kind == "margin":
            top2 = torch.sort(probs, dim=-1, descending=True)[0]
            return top2[:, 0] - top2[:, 1]
        if kind == "neg_entropy":
            return torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
        return probs.max(dim=-1).values


@dataclass(frozen=True)
class DreamSchedule:
    """Reveal ``int(masked * (1 - s / t))`` of the most confident masked positions per step."""

    steps: int
    eps: float = 1e-3

    def select(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int, initial_masked: int
    ) -> torch.Tensor:
        chosen = torch.zeros_like(masked)
        per_row = masked.sum() / 1  # float32, as upstream's mean over a batch of rows
        if step >= self.steps - 1:
            count = int(per_row)
        else:
            times = torch.linspace(1, self.eps, self.steps + 1, device=confidence.device)
            count = int(per_row * (1 - times[step + 1] / times[step]))
        if count <= 0:
            return chosen
        full = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
        chosen[torch.topk(full, count).indices] = True
        return chosen

    def max_steps(self, block_len: int) -> int:
        return self.steps


def dream_policy(
    steps: int,
    max_new_tokens: int,
    alg: str = "entropy",
    *,
    top_k: int | None = 50,
    top_p: float | None = None,
    eps: float = 1e-3,
) -> DecodingPolicy:
    """Dream's ``diffusion_generate(steps=..., max_new_tokens=..., alg=..., temperature=0)``
    for the engine's ``Pattern.BIDIRECTIONAL``: one block as long as the reply, no early stop,
    the model may predict the mask token (the position then stays masked), as upstream.
    ``top_k=50`` is upstream's effective default (see :mod:`dlm_runtime.dream_generate`)."""
    if steps < 1:
        raise ValueError("steps must be positive")
    return DecodingPolicy(
        name=f"dream-{alg}",
        chooser=DreamGreedy(top_k, top_p),
        confidence=DreamConfidence(alg, top_k, top_p),
        unmask=DreamSchedule(steps, eps),
        revision=None,
        block_size=max_new_tokens,
        max_new_tokens=max_new_tokens,
        early_stop=False,
        rng_layout="reference",
        forbid_mask_token=False,
    )
