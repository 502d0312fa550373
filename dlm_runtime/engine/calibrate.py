"""Measure what a cached forward costs on this device, by rows and positions per row.

The load-adaptive pattern (``Pattern.ADAPTIVE``) chooses block lengths from these figures
(:mod:`dlm_runtime.parallelism`); they differ between a 2-core CPU, where a forward is
latency-bound up to hundreds of positions, and a GPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dlm_runtime.parallelism import BLOCK_LENGTHS, ForwardCost

# A typical prompt after trimming; the cost of attending to it is part of every step.
CALIBRATION_PREFIX = 128


def row_counts(max_rows: int) -> list[int]:
    """1, 2, 4, ... up to and including ``max_rows``."""
    counts = [1]
    while counts[-1] * 2 < max_rows:
        counts.append(counts[-1] * 2)
    if max_rows > 1:
        counts.append(max_rows)
    return counts


def _seconds(call: Callable[[], object], device: torch.device, reps: int) -> float:
    call()  # warm-up: first-call allocations are not the steady state
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_forward_cost(
    model: nn.Module,
    device: torch.device,
    max_rows: int,
    lengths: Sequence[int] = BLOCK_LENGTHS,
    prefix: int = CALIBRATION_PREFIX,
    reps: int = 3,
) -> ForwardCost:
    """Median seconds of one forward of ``rows`` rows of ``q`` positions over a cached prefix
    of ``prefix`` positions, for every row count up to ``max_rows`` (powers of two) and every
    ``q`` in ``lengths``; random token ids (the cost does not depend on them)."""
    cfg: Any = model.config
    context = getattr(cfg, "max_position_embeddings", None) or prefix + max(lengths)
    prefix = max(1, min(prefix, context - max(lengths)))
    generator = torch.Generator().manual_seed(0)
    table: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for rows in row_counts(max_rows):
            ids = torch.randint(
                0, int(cfg.vocab_size), (rows, prefix + max(lengths)), generator=generator
            ).to(device)
            past = model(input_ids=ids[:, :prefix]).new_key_values
            for q in lengths:
                mask = torch.ones(rows, 1, q, prefix + q, dtype=torch.bool, device=device)
                positions = torch.arange(prefix, prefix + q, device=device).expand(rows, q)
                tokens = ids[:, prefix : prefix + q]

                def forward(
                    tokens: torch.Tensor = tokens,
                    positions: torch.Tensor = positions,
                    mask: torch.Tensor = mask,
                    past: object = past,
                ) -> object:
                    return model(
                        input_ids=tokens,
                        position_ids=positions,
                        attention_mask=mask,
                        past_key_values=past,
                    )

                table[(rows, q)] = _seconds(forward, device, reps)
    return ForwardCost(table)
