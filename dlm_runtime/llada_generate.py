"""Port of LLaDA's published reference sampler (``generate.py`` in ML-GSAI/LLaDA).

THIS IS THE REFERENCE the project's own sampler is checked against: keep it a faithful,
unoptimised transcription (same arithmetic, same order of random draws). It calls any callable
``model(x).logits`` on the full sequence at every step (no cache, full bidirectional attention).

Deviations from the published file, none of which change results:
* ``x`` is created on ``prompt.device`` (instead of ``model.device``) and sized from
  ``prompt.shape[0]``, so a batch of equal-length prompts works as in the current upstream version;
* ``-inf`` comes from ``float`` instead of numpy;
* ``confidence_dtype="float64"`` brings back the float64 confidence softmax that upstream
  dropped in mid-2025 (commit "Remove float64 in softmax, which is unnecessary"), for
  reproducing results made before it; the default follows upstream today (the logits' dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["add_gumbel_noise", "generate", "get_num_transfer_tokens"]


def add_gumbel_noise(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Gumbel-max perturbation in float64: ``exp(logits) / (-log(u)) ** temperature``.

    The published comment: low-precision Gumbel-max improves perplexity but hurts generation
    quality for masked diffusion models (arXiv:2409.02908), hence float64. ``temperature == 0``
    returns ``logits`` unchanged and draws no random numbers.
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits, dtype=torch.float64)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """How many masked tokens to unmask at each of ``steps`` steps, per row ``[B, steps]``.

    LLaDA's linear noise schedule unmasks the same expected number per step; the remainder goes
    to the earliest steps.
    """
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = (
        torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    )
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, : int(remainder[i])] += 1
    return num_transfer_tokens


@torch.no_grad()
def generate(
    model: Callable[[torch.Tensor], Any],
    prompt: torch.Tensor,
    steps: int = 128,
    gen_length: int = 128,
    block_length: int = 128,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int = 126336,
    confidence_dtype: str = "logits",
) -> torch.Tensor:
    """LLaDA's semi-autoregressive masked-diffusion sampling; returns ``[B, L + gen_length]``.

    Args:
        model: mask predictor, called as ``model(x).logits``.
        prompt: ``[B, L]`` token ids (all rows the same length).
        steps: total sampling steps, split evenly over the blocks.
        gen_length: reply length.
        block_length: block length; less than ``gen_length`` = semi-autoregressive remasking.
        temperature: Gumbel-max sampling temperature (0 = greedy).
        cfg_scale: unsupervised classifier-free guidance scale (prompt replaced by masks).
        remasking: ``"low_confidence"`` or ``"random"``.
        mask_id: the [MASK] token id (126336 for LLaDA-8B).
        confidence_dtype: ``"logits"`` (upstream today) or ``"float64"`` (upstream before
            mid-2025) for the ``low_confidence`` softmax.
    """
    x = torch.full(
        (prompt.shape[0], prompt.shape[1] + gen_length),
        mask_id,
        dtype=torch.long,
        device=prompt.device,
    )
    x[:, : prompt.shape[1]] = prompt.clone()

    prompt_index = x != mask_id

    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length

    assert steps % num_blocks == 0
    steps = steps // num_blocks

    for num_block in range(num_blocks):
        block_start = prompt.shape[1] + num_block * block_length
        block_end = prompt.shape[1] + (num_block + 1) * block_length
        block_mask_index = x[:, block_start:block_end] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            if cfg_scale > 0.0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                x_ = torch.cat([x, un_x], dim=0)
                logits = model(x_).logits
                logits, un_logits = torch.chunk(logits, 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x).logits

            logits_with_noise = add_gumbel_noise(logits, temperature=temperature)
            x0 = torch.argmax(logits_with_noise, dim=-1)  # b, l

            if remasking == "low_confidence":
                if confidence_dtype == "float64":
                    p = F.softmax(logits.to(torch.float64), dim=-1)
                else:
                    p = F.softmax(logits, dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            elif remasking == "random":
                x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=x0.device)
            else:
                raise NotImplementedError(remasking)

            x0_p[:, block_end:] = -float("inf")

            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -float("inf"))

            transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=int(num_transfer_tokens[j, i]))
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]

    return x
