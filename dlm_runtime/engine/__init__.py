"""Continuous-batching inference engine for masked-diffusion language models.

One scheduler thread owns the model, every request's decoding state and the KV cache. Each
iteration it admits waiting requests (up to ``max_batch``), drops cancelled ones, asks every
active request for its query rows, runs them in batched forward passes (one, unless rows of
very different lengths are cheaper apart: ``plan_forwards``) and hands each request its
logits; events go back to each request's asyncio queue via ``loop.call_soon_threadsafe``. The
model never carries flags: every pattern below is only a mask plus a choice of what is written
to the request's cache.

A request names its :class:`~dlm_runtime.decoding.DecodingMode`: a policy and a
:class:`~dlm_runtime.decoding.Pattern`, which picks the request's state class. Diffusion
patterns (``DEFAULT_DIFFUSION`` is PREFIX_CAUSAL for native ``"dlm"`` models, SEEDED_BLOCKS for
Nemotron-Labs-Diffusion, BIDIRECTIONAL for LLaDA):

* PREFIX_CAUSAL (how :mod:`dlm_runtime.train` trains native models): the prompt and every
  finished block are cached exactly as a causal pass computes them. The block being decoded
  attends to the cache and bidirectionally to itself. Tokens not yet cached ("pending": the
  prompt at first, then each finished block) ride along in the first step of the next block:
  pending rows attend causally, block rows see cache + pending + block, and the pending rows'
  K/V are appended afterwards. Replies are open-ended.
* PREFIX_CAUSAL_NOCACHE: the same attention pattern with no cache: every step recomputes the
  prompt and the finished blocks. Same tokens, more work; the baseline the cache's saving is
  measured against ("vanilla" diffusion in the evaluation).
* BIDIRECTIONAL: no cache; every step runs prompt + all blocks (future ones masked) with full
  attention, which is what LLaDA's ``generate()`` does; the ``fixed_schedule`` policy preset
  reproduces it token for token.
* PREFIX_CACHE (APPROXIMATE, Fast-dLLM's prefix cache): at a block's first step the whole
  sequence runs bidirectionally and the K/V of everything before the block is cached; the
  block's later steps run only the block and the masked suffix against that stale cache.
* BLOCK_CACHE (APPROXIMATE, the delayed block caching of dKV-Cache and d2Cache): PREFIX_CAUSAL
  whose block steps after the first run only the positions the previous step committed (now
  with their tokens; their K/V are staged in the cache row and reused by the block's later
  steps) and those still masked, whose logits alone are computed. Greedy policies without
  revision only; others decode as PREFIX_CAUSAL.
* SEEDED_BLOCKS (Nemotron-Labs-Diffusion's ``generate``): the exact causal cache of
  PREFIX_CAUSAL, but each block's first position is the causal next token after the cache, and a
  finished block is written by a causal forward of its own, whose last logits seed the next
  block (:mod:`~dlm_runtime.engine.seeded_blocks`).

Left to right: AUTOREGRESSIVE (causal, one token per forward, prefill in the first) and
SPECULATIVE (a block drafted by prefix-causal diffusion, then verified by one causal forward;
the longest prefix the autoregressive sampler agrees with is kept plus the verifier's own next
token, so at temperature 0 it equals autoregressive decoding). VERIFIED is PREFIX_CAUSAL whose
finished blocks the causal mode checks: the pending rows' logits are the block's
autoregressive predictions; the first token below the policy's ``verify_floor`` (and not the
causal argmax) becomes the causal choice and the block is redrafted after it (floor 1 equals
autoregressive decoding at temperature 0, floor 0 PREFIX_CAUSAL).

A DiffusionGemma model has no mask token and no pattern of these: each of its requests is a
:class:`~dlm_runtime.engine.canvas.CanvasState` (its own noise canvas, encoder cache and
self-conditioning logits, transformers' sampler loop), every row's canvas in one decoder
forward per step; its settings come from
:func:`~dlm_runtime.diffusion_gemma.diffusion_gemma_policy` or the checkpoint's generation config.

Policies with ``early_stop`` end at the model's ``eos_token_id`` in every pattern (the end token
is not part of :attr:`Final.token_ids`); the ``fixed_schedule`` preset never stops early.

Batching: request ``i`` of the batch owns row ``i`` of a :class:`KVPool` (per-layer tensors
``[max_batch, H, capacity, D]``), so a forward reads the caches as one right-padded view, the
same layout :func:`dlm_runtime.attention.kv_pad_stack` builds, without copying them each step.
Query rows are right-padded and each row's mask comes from per-token visibility ranks. Below
float32 (``exact_batches``, on by default for bfloat16/float16 models) only rows of identical
shape share a forward, since padding moves bf16 logits by a unit and a batched request would
decode differently from the same request alone. Its cost, measured on CPU with a small bf16
LLaDA: 8 requests of 8 different prompt lengths take 2.7x the forwards and 4-19% more time;
requests of equal length cost nothing extra. A BIDIRECTIONAL request with ``cfg_scale`` adds
its guidance row (prompt masked) to the forward, as LLaDA's ``generate()`` does.
:attr:`Engine.stats` splits the scheduler thread's time (forward, policy, detokenizing, ...).

Modules: :mod:`~dlm_runtime.engine.requests` (what a caller submits and gets back),
:mod:`~dlm_runtime.engine.scheduler` (the :class:`Engine`: each step schedules, has the
model's runner run the forwards, then hands out events), :mod:`~dlm_runtime.engine.runner`
(the runner interface, and the runner of every model with a mask token: validates a request,
makes its state, runs a step), :mod:`~dlm_runtime.engine.states` (per-request decoding
state, one class per pattern), :mod:`~dlm_runtime.engine.patterns` (which state class each
pattern uses), :mod:`~dlm_runtime.engine.batching` (KV cache pool, prefix reuse, batch
assembly), :mod:`~dlm_runtime.engine.canvas` (DiffusionGemma's requests and runner),
:mod:`~dlm_runtime.engine.seeded_blocks` (the SEEDED_BLOCKS state) and
:mod:`~dlm_runtime.engine.draft_text` (incremental draft text).
"""

from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.engine.batching import BatchBuilder, KVPool, Query
from dlm_runtime.engine.draft_text import DraftDecoder
from dlm_runtime.engine.requests import (
    Draft,
    EngineStats,
    Event,
    Final,
    GenerationRequest,
    Usage,
)
from dlm_runtime.engine.scheduler import Engine

__all__ = [
    "BatchBuilder",
    "DecodingMode",
    "Draft",
    "DraftDecoder",
    "Engine",
    "EngineStats",
    "Event",
    "Final",
    "GenerationRequest",
    "KVPool",
    "Pattern",
    "Query",
    "Usage",
]
