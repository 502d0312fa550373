"""Nemotron-Labs-Diffusion's block diffusion rule as a
:class:`~dlm_runtime.policies.DecodingPolicy`, so the engine's SEEDED_BLOCKS pattern decodes as
:func:`dlm_runtime.nemotron_generate.generate`.

The pattern does what ``generate`` does between steps (a causal forward writes each finished
block and seeds the next one with its next token); the policy is its per-step rule, upstream's
``_get_transfer_index``:

* tokens: the argmax, or with a temperature LLaDA's float64 Gumbel noise
  (:class:`~dlm_runtime.policies.GumbelSampler`, the same draws as upstream's
  ``add_gumbel_noise``); the state draws each block's seed token as upstream does, a multinomial
  draw at that temperature;
* confidence: the candidate's softmax probability in the logits' dtype;
* commits: with a threshold, every masked position ranked by ``torch.topk`` and all but the
  first dropped below the threshold (:class:`TopThenThreshold`, upstream's order, so ties break
  as upstream's do); without, an even share of the block's masks per step
  (:class:`~dlm_runtime.policies.FixedCount` over ``block_length`` steps).

Upstream may write the mask token (an argmax like any other); so does this policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlm_runtime.policies import (
    ChosenProbability,
    DecodingPolicy,
    FixedCount,
    GumbelSampler,
    UnmaskPolicy,
)

__all__ = ["TopThenThreshold", "nemotron_policy"]


@dataclass(frozen=True)
class TopThenThreshold:
    """Upstream's threshold rule: the most confident masked position, and every other one whose
    confidence reaches ``threshold`` (compared in the confidence's dtype, as upstream does).

    Same set as :class:`~dlm_runtime.policies.ConfidenceThreshold`, except which position a tie
    for the top gives when none reaches the threshold: this one takes ``torch.topk``'s first,
    as upstream does, not ``torch.argmax``'s.
    """

    threshold: float

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0 or math.isnan(self.threshold):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def select(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int, initial_masked: int
    ) -> torch.Tensor:
        """Bool ``[L]``: upstream's choice among the masked positions."""
        chosen = torch.zeros_like(masked)
        k = int(masked.sum())
        if k == 0:
            return chosen
        conf = torch.where(masked, confidence, -math.inf)
        _, index = torch.topk(conf, k=k)
        chosen[index[0]] = True
        rest = index[1:]
        chosen[rest[conf[rest] >= self.threshold]] = True
        return chosen

    def max_steps(self, block_len: int) -> int:
        """At least one commit per step."""
        return block_len


def nemotron_policy(
    max_new_tokens: int,
    block_length: int,
    threshold: float | None = None,
    temperature: float = 0.0,
) -> DecodingPolicy:
    """``generate(max_new_tokens, block_length, threshold, temperature)``'s rule, stopping at the
    model's end token as upstream does (its ``eos_token_id=None``)."""
    unmask: UnmaskPolicy = (
        FixedCount(block_length) if threshold is None else TopThenThreshold(threshold)
    )
    return DecodingPolicy(
        name="nemotron",
        chooser=GumbelSampler(temperature),
        confidence=ChosenProbability(exact=True, dtype="logits"),
        unmask=unmask,
        revision=None,
        block_size=block_length,
        max_new_tokens=max_new_tokens,
        forbid_mask_token=False,
        params={
            "max_new_tokens": max_new_tokens,
            "block_length": block_length,
            "threshold": threshold,
            "temperature": temperature,
        },
    )
