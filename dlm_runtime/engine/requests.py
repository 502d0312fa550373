"""The engine's public types: what a caller submits, the events it gets back, the counters."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from dlm_runtime.decoding import DecodingMode
from dlm_runtime.tokenizer import TokenSpan

FinishReason = Literal["end", "length", "cancelled", "error"]


@dataclass(frozen=True)
class GenerationRequest:
    """One reply to generate."""

    request_id: str
    prompt_ids: list[int]
    decoding: DecodingMode
    seed: int | None = None  # None = a fresh random seed


@dataclass(frozen=True)
class Usage:
    """Work spent on one request."""

    steps: int  # refinement steps (diffusion steps; tokens in autoregressive mode)
    forward_passes: int  # batched forwards the request took part in (adds verify passes)
    tokens: int  # len(Final.token_ids)
    milliseconds: float  # submit to Final


@dataclass(frozen=True)
class Draft:
    """The reply after one step; ``token_ids`` hold the mask id where still masked."""

    request_id: str
    step: int  # 1, 2, ... per request
    token_ids: list[int]  # finished reply + the current block (raw: end/fill tokens included)
    text: str  # masked positions show as the engine's placeholder
    spans: list[TokenSpan]  # one per token position, into ``text``
    committed: list[int]  # reply positions committed this step
    revised: list[int]  # reply positions re-masked this step
    block: int  # block index (autoregressive: token index; speculative: draft round)


@dataclass(frozen=True)
class Final:
    """The last event of a request."""

    request_id: str
    token_ids: list[int]  # the reply, without the end token
    text: str
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None  # set when finish_reason == "error"


Event = Draft | Final


@dataclass
class EngineStats:
    """Counters of the scheduler thread (seconds are wall time on that thread)."""

    forward_passes: int = 0
    rows: int = 0  # sum of batch sizes
    busy_seconds: float = 0.0  # whole iterations that ran a forward
    forward_seconds: float = 0.0  # the model call (synchronised on CUDA)
    # The same two in the scheduler thread's CPU time, which waiting for the GIL or for a
    # core that other processes hold does not inflate: on a shared machine the wall-time
    # share outside the forward mostly measures the neighbours.
    busy_cpu_seconds: float = 0.0
    forward_cpu_seconds: float = 0.0
    build_seconds: float = 0.0  # queries + padding + masks
    consume_seconds: float = 0.0  # per-request steps: policy and bookkeeping
    policy_seconds: float = 0.0  # inside the policy (BlockState.step, token choosers)
    detokenize_seconds: float = 0.0  # rendering draft text (part of deliver_seconds)
    deliver_seconds: float = 0.0
    schedule_seconds: float = 0.0  # admission, cancellation, removal, cache writes
    finished: int = 0
    tokens: int = 0  # reply tokens of finished requests
    prefix_tokens_reused: int = 0  # prompt tokens copied from CausalPrefixCache, not prefilled
    batches: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=4096))

    @property
    def cpu_overhead_per_forward(self) -> float:
        """Scheduler-thread CPU seconds outside the model call, per forward pass."""
        if self.forward_passes <= 0:
            return 0.0
        return (self.busy_cpu_seconds - self.forward_cpu_seconds) / self.forward_passes

    @property
    def overhead(self) -> float:
        """Engine time outside the forward as a share of forward time."""
        if self.forward_seconds <= 0:
            return 0.0
        return (self.busy_seconds - self.forward_seconds) / self.forward_seconds
