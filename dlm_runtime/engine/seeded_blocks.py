"""The SEEDED_BLOCKS pattern: block diffusion over an exact causal cache whose every block starts
from the causal prediction after the cache and is written into it by a causal forward of its own.

This is Nemotron-Labs-Diffusion's ``generate`` (:func:`dlm_runtime.nemotron_generate.generate`,
with :func:`dlm_runtime.nemotron_policy.nemotron_policy` as the per-step rule). A request
alternates two kinds of forward:

* a causal one over the pending tokens (the prompt at first, then the block just finished): their
  K/V join the cache row, and the last one's logits give the next token, which becomes the
  first position of the next block (its "seed");
* bidirectional steps over the block (seed, then masks) against the cache, one policy step each,
  until the block is final; the block's tokens are then pending for the next causal forward.

The last block is not written (nothing reads it), so a request's forward passes are upstream's
``nfe`` (which leaves out the prompt's prefill and counts the last block's write). PREFIX_CAUSAL
differs in both places: its blocks start fully masked, and a finished block rides along with the
next block's first step, so the block's causal logits never seed anything.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from dlm_runtime.decoding import Pattern
from dlm_runtime.engine.batching import Query
from dlm_runtime.engine.requests import EngineStats
from dlm_runtime.engine.states import (
    CausalRow,
    Handle,
    ModelInfo,
    RowCache,
    Update,
    _BlockDiffusion,
)
from dlm_runtime.policies import BlockState, GumbelSampler

__all__ = ["SeededBlockState"]


class SeededBlockState(CausalRow, _BlockDiffusion):
    """A request of the SEEDED_BLOCKS pattern (the module's docstring describes it)."""

    pattern: ClassVar[Pattern] = Pattern.SEEDED_BLOCKS

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0
        self.seeding = True  # the next forward is the causal one (write pending, seed a block)
        self.room = self.policy.max_new_tokens  # reply positions left for the next block

    def query(self) -> Query:
        return self._causal_query() if self.seeding else self._block_query(self.block)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        if not self.seeding:
            return self._advance(logits[: self.block.block_len])
        self._feed_pending(cache)
        return self._start_block(self._seed(logits[0]))

    def _seed(self, logits: torch.Tensor) -> int:
        """The causal next token: the policy's choice at temperature 0; with a Gumbel sampler's
        temperature, a multinomial draw from the tempered softmax, the draw Nemotron's
        ``generate`` makes (so a seeded request follows it at temperature > 0 too)."""
        chooser = self.policy.chooser
        if isinstance(chooser, GumbelSampler) and chooser.temperature > 0:
            probs = torch.softmax(logits / chooser.temperature, dim=-1)
            return int(torch.multinomial(probs, num_samples=1, generator=self.generator))
        return self._choose(logits[None])[0]

    def _start_block(self, seed: int) -> list[Update]:
        """The next block: ``seed``, then masks, as many positions as the policy's blocks (the
        last one shorter)."""
        info = self.info
        length = min(self.policy.block_size, self.room)
        x = torch.full((length,), info.mask_id, dtype=torch.long, device=info.device)
        x[0] = seed
        if not bool((x == info.mask_id).any()):
            # A one-position block is final already (upstream's denoising loop finds no mask):
            # the seed is the reply's next token, written by the next causal forward.
            events = self._append_token(seed, self.block_index)
            self.block_index += 1
            if not self.done:
                self.pending = x
                self.room = self.policy.max_new_tokens - len(self.reply)
            return events
        self.block = self._new_block(length, x)  # the schedule counts its masks only
        self.seeding = False
        self.steps += 1
        start = len(self.reply)
        return [
            self._draft(self.reply + x.tolist(), self._settled(), [start], [], self.block_index)
        ]

    def _block_finished(self, block: BlockState) -> None:
        self.pending = block.x.clone()
        self.seeding = True

    def _next_block(self, room: int) -> None:
        self.room = room  # the block starts once the causal forward has chosen its seed
