"""What runs a model's requests: the :class:`Runner` interface, and :class:`TokenRunner` for
models with a mask token (DiffusionGemma's is :class:`~dlm_runtime.engine.canvas.CanvasRunner`).

The engine picks its runner once, from the model, and never asks which it has: the runner
checks what a request asks of this model, makes each admitted request's state, and runs one
step over the active states (the forwards and each state's logits), returning their events
and the rows that finished."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dlm_runtime.attention import ForwardOutput
from dlm_runtime.decoding import Pattern
from dlm_runtime.engine.batching import (
    Batch,
    BatchBuilder,
    CacheWrite,
    KVPool,
    Query,
    plan_exact_forwards,
    plan_forwards,
    sort_rows,
)
from dlm_runtime.engine.patterns import STATE_BY_PATTERN
from dlm_runtime.engine.requests import EngineStats, GenerationRequest
from dlm_runtime.engine.states import Handle, ModelInfo, RequestState, RowCache, Update

__all__ = ["Events", "Runner", "TokenRunner"]

Events = list[tuple[Handle, Update]]


class Runner(ABC):
    """Runs one kind of model's requests for the engine."""

    mask_id: int  # the token drafts show as the mask placeholder (-1: the model has none)

    @abstractmethod
    def validate(self, request: GenerationRequest, pattern: Pattern, info: ModelInfo) -> None:
        """Raise ValueError if this model cannot decode ``request`` with ``pattern`` (resolved,
        never DEFAULT_DIFFUSION); the engine has checked what holds for every model."""

    @abstractmethod
    def new_state(self, handle: Handle, info: ModelInfo) -> RequestState:
        """The decoding state of an admitted request."""

    @abstractmethod
    def run(self, active: list[RequestState]) -> tuple[Events, list[int]]:
        """One step of every active state (row ``i`` is ``active[i]``; the runner may reorder
        the rows, the cache pool's with them): their events, and the rows that finished."""


class TokenRunner(Runner):
    """Models with a mask token: each request's state names its query rows, which share
    batched forwards of the model over the engine's cache pool."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        pool: KVPool,
        stats: EngineStats,
        exact_batches: bool,
        plain_only: bool,
    ) -> None:
        cfg: Any = model.config
        if getattr(cfg, "mask_token_id", None) is None:
            raise ValueError("model.config.mask_token_id is not set")
        self.mask_id = int(cfg.mask_token_id)
        fill = getattr(cfg, "pad_token_id", None)
        self.model = model
        self.device = device
        self.pool = pool
        self.stats = stats
        self.exact_batches = exact_batches
        self.plain_only = plain_only  # remote code: only the plain uncached full-attention call
        self._builder = BatchBuilder(device, self.mask_id if fill is None else int(fill))

    def validate(self, request: GenerationRequest, pattern: Pattern, info: ModelInfo) -> None:
        decoding = request.decoding
        policy, prompt = decoding.policy, request.prompt_ids
        if policy.cfg_scale > 0 and pattern is not Pattern.BIDIRECTIONAL:
            raise ValueError(
                f"cfg_scale={policy.cfg_scale} (classifier-free guidance) needs the "
                f"BIDIRECTIONAL pattern, got {pattern.name} (decoding mode {decoding.name!r})"
            )
        needs_both = pattern in (Pattern.ADAPTIVE, Pattern.VERIFIED)
        if needs_both and info.default_pattern is Pattern.BIDIRECTIONAL:
            raise ValueError(
                f"the {pattern.name} pattern mixes prefix-causal blocks with causal steps, which "
                f"only a model trained both ways (model_type 'dlm', Nemotron-Labs-Diffusion) can "
                f"run (decoding mode {decoding.name!r})"
            )
        if self.plain_only and pattern is not Pattern.BIDIRECTIONAL:
            raise ValueError(
                "this remote-code model supports only the BIDIRECTIONAL diffusion pattern, "
                f"got {pattern.name} (decoding mode {decoding.name!r})"
            )
        context, new = info.context, policy.max_new_tokens
        if context is not None:
            if new >= context:
                raise ValueError(
                    f"policy max_new_tokens={new} exceeds the model context of {context} positions"
                )
            if len(prompt) + new > context:
                raise ValueError(
                    f"prompt too long: {len(prompt)} prompt tokens + max_new_tokens={new} = "
                    f"{len(prompt) + new} positions, but the model context is {context} "
                    f"(at most {context - new} prompt tokens)"
                )
        if policy.early_stop and info.end_id is None:
            raise ValueError(
                "the policy stops at the end token but model.config.eos_token_id is None"
            )
        seed = request.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")

    def new_state(self, handle: Handle, info: ModelInfo) -> RequestState:
        return STATE_BY_PATTERN[handle.pattern](handle, info, self.stats)

    def run(self, active: list[RequestState]) -> tuple[Events, list[int]]:
        """Every row's query, in as few forwards as pay (``plan_forwards``; rows of one shape
        only with ``exact_batches``), each row's logits to its state."""
        queries = [state.query() for state in active]
        lengths = [int(q.tokens.shape[0]) for q in queries]
        plan = None if self.exact_batches else plan_forwards(sorted(lengths))
        # A plan of one forward takes the rows in any order: sorting them would only copy
        # cache rows (a block's first step is longer than its others, so most steps would).
        if plan is None or len(plan) > 1:
            for a, b in sort_rows(lengths):
                active[a], active[b] = active[b], active[a]
                queries[a], queries[b] = queries[b], queries[a]
                self.pool.swap(a, b)
        if plan is None:
            plan = plan_exact_forwards(queries)
        out_events: Events = []
        leaving: list[int] = []
        for first, end in plan:
            self._forward_rows(active, first, queries[first:end], out_events, leaving)
        return out_events, leaving

    def _forward_rows(
        self,
        active: list[RequestState],
        first: int,
        queries: Sequence[Query],
        out_events: Events,
        leaving: list[int],
    ) -> None:
        """One forward over active rows ``first:first + len(queries)``; collects their events."""
        stats = self.stats
        started = time.perf_counter()
        states = active[first : first + len(queries)]
        # Guidance rows (cache_len 0, no cache writes) ride after the real rows, as LLaDA's
        # generate() stacks [x, un_x]; beside cached rows they get a forward of their own,
        # since the cache view has one row per request.
        guided = [i for i, q in enumerate(queries) if q.guidance is not None]
        extra = [
            Query(q.guidance, 0, 0, None, q.logits_from) for q in queries if q.guidance is not None
        ]
        together = bool(extra) and all(q.cache_len == 0 for q in queries)
        batch = self._builder.build([*queries, *extra] if together else queries, self.pool, first)
        built = time.perf_counter()
        cpu_built = time.thread_time()
        try:
            out: ForwardOutput = self._call(batch)
            un_logits: list[torch.Tensor] = []
            if together:
                un_logits = [
                    out.logits[len(queries) + j, :n]
                    for j, n in enumerate(batch.logit_rows[len(queries) :])
                ]
            elif extra:
                un_batch = self._builder.build(extra, self.pool, first)
                un_out = self._call(un_batch)
                un_logits = [un_out.logits[j, :n] for j, n in enumerate(un_batch.logit_rows)]
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # e.g. out of memory: these rows fail, the engine goes on
            out_events.extend((s.handle, s.final("error", repr(exc))) for s in states)
            leaving.extend(range(first, first + len(states)))
            return
        forwarded = time.perf_counter()
        stats.forward_cpu_seconds += time.thread_time() - cpu_built
        writes: list[CacheWrite] = []
        for offset, (state, n) in enumerate(
            zip(states, batch.logit_rows[: len(queries)], strict=True)
        ):
            row = first + offset
            try:
                if offset in guided:
                    un = un_logits[guided.index(offset)]
                    produced = state.consume_guided(
                        out.logits[offset, :n], un, RowCache(row, writes)
                    )
                else:
                    produced = state.consume(out.logits[offset, :n], RowCache(row, writes))
            except Exception as exc:
                produced = [state.final("error", repr(exc))]
            out_events.extend((state.handle, event) for event in produced)
            if state.done:
                leaving.append(row)
        consumed = time.perf_counter()
        self.pool.write(out.new_key_values, writes, first)
        stats.forward_passes += 1 + (bool(extra) and not together)
        stats.rows += len(queries) + len(extra)
        stats.build_seconds += built - started
        stats.forward_seconds += forwarded - built
        stats.consume_seconds += consumed - forwarded
        stats.schedule_seconds += time.perf_counter() - consumed

    def _call(self, batch: Batch) -> ForwardOutput:
        out: ForwardOutput = self.model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=batch.attention_mask,
            past_key_values=batch.past,
            logits_index=batch.logits_index,
        )
        return out
