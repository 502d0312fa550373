"""The engine: one scheduler thread whose every step admits requests, has the model's runner
run the batched forwards and hand each request its logits, then delivers their events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.diffusion_gemma import DiffusionGemmaModel
from dlm_runtime.engine.batching import CausalPrefixCache, KVPool
from dlm_runtime.engine.calibrate import measure_forward_cost
from dlm_runtime.engine.canvas import CanvasRunner
from dlm_runtime.engine.draft_text import DraftDecoder
from dlm_runtime.engine.patterns import DEFAULT_PATTERNS
from dlm_runtime.engine.requests import (
    EngineStats,
    Event,
    Final,
    FinishReason,
    GenerationRequest,
    Usage,
)
from dlm_runtime.engine.runner import Runner, TokenRunner
from dlm_runtime.engine.states import (
    CausalRow,
    FinalUpdate,
    Handle,
    ModelInfo,
    RequestState,
    Update,
    needs_parallelism,
)
from dlm_runtime.loading import RemoteCodeModel
from dlm_runtime.parallelism import Parallelism
from dlm_runtime.policies import DecodingPolicy

# Adaptive speculation reads the engine's time per row outside the forward once this many
# rows have been stepped (the first steps include warm-up); once per step, for all rows.
OVERHEAD_AFTER_ROWS = 256


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Engine:
    """Continuous-batching scheduler: ``stream = await engine.submit(request)``.

    ``async for event in stream`` yields :class:`Draft` events and ends after the
    :class:`Final`. Closing the stream early cancels the request.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerFast,
        *,
        max_batch: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        mask_placeholder: str = "░",
        exact_batches: bool | None = None,
        parallelism: Parallelism | None = None,
    ) -> None:
        """``exact_batches``: run only rows of identical shape together (no padding), so that
        a request decodes the same batched as alone in every dtype; ``None`` (default) turns
        it on for models below float32 (bfloat16, float16), where padding changes logits.
        ``parallelism``: how ADAPTIVE requests choose block lengths; ``None`` measures this
        device's forward costs when the first such request arrives (a few seconds at most)."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else _model_device(model)
        cfg: Any = model.config
        # Remote-code models accept only the plain uncached full-attention call.
        self.plain_only = isinstance(model, RemoteCodeModel)
        self.max_batch = 1 if self.plain_only else max_batch
        if exact_batches is None:
            param = next(iter(model.parameters()), None)
            exact_batches = param is not None and param.dtype in (torch.bfloat16, torch.float16)
        self.exact_batches = bool(exact_batches)
        context = getattr(cfg, "max_position_embeddings", None)
        self._pool = KVPool(self.max_batch, context)
        self._prefixes = CausalPrefixCache()
        self._stats = EngineStats()
        # DiffusionGemma denoises its own noise canvas (no mask token) with its own encoder and
        # decoder calls; every other model's requests are query rows of batched forwards.
        self.runner: Runner = (
            CanvasRunner(model, self.device, self._stats, self.exact_batches)
            if isinstance(model, DiffusionGemmaModel)
            else TokenRunner(
                model, self.device, self._pool, self._stats, self.exact_batches, self.plain_only
            )
        )
        self.info = ModelInfo(
            mask_id=self.runner.mask_id,
            end_id=None if cfg.eos_token_id is None else int(cfg.eos_token_id),
            fill_id=None if getattr(cfg, "pad_token_id", None) is None else int(cfg.pad_token_id),
            vocab_size=int(cfg.vocab_size),
            context=context,
            device=self.device,
            default_pattern=DEFAULT_PATTERNS.get(
                getattr(cfg, "model_type", ""), Pattern.BIDIRECTIONAL
            ),
            parallelism=parallelism,
        )
        self.mask_placeholder = mask_placeholder
        self._stats_lock = threading.Lock()  # the step log is copied from other threads
        self._cv = threading.Condition()
        self._inbox: deque[Handle] = deque()
        self._cancels: set[Handle] = set()
        self._handles: dict[str, Handle] = {}  # queued or running, by id; guarded by _cv
        self._closing = False
        self._waiting: deque[Handle] = deque()  # scheduler thread only
        self._active: list[RequestState] = []  # scheduler thread only; index = batch row
        self._thread = threading.Thread(target=self._run, name="dlm-engine", daemon=True)
        self._thread.start()

    # --- public API --------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Validate and enqueue ``request``; returns its event stream (ValueError if invalid)."""
        pattern = self._validate(request)
        decoder = DraftDecoder(self.tokenizer, self.info.mask_id, self.mask_placeholder)
        handle = Handle(
            request,
            asyncio.get_running_loop(),
            asyncio.Queue(),
            time.perf_counter(),
            pattern,
            decoder,
        )
        with self._cv:
            if self._closing:
                raise RuntimeError("engine is closed")
            if request.request_id in self._handles:
                raise ValueError(f"request_id {request.request_id!r} is already queued or running")
            self._handles[request.request_id] = handle
            self._inbox.append(handle)
            self._cv.notify()
        return self._events(handle)

    def cancel(self, request_id: str) -> bool:
        """Cancel a queued or running request at the next step; False if it is unknown."""
        with self._cv:
            handle = self._handles.pop(request_id, None)
            if handle is None:
                return False
            self._cancels.add(handle)
            self._cv.notify()
            return True

    def _abandon(self, handle: Handle) -> None:
        """Cancel ``handle`` (its stream was closed) and free its id for reuse at once."""
        with self._cv:
            if self._handles.get(handle.request.request_id) is handle:
                del self._handles[handle.request.request_id]
            self._cancels.add(handle)
            self._cv.notify()

    async def close(self) -> None:
        """Cancel everything (Final "cancelled") and stop the scheduler thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stats(self) -> EngineStats:
        """A copy of the counters."""
        with self._stats_lock:
            snapshot = replace(self._stats)
            snapshot.batches = deque(self._stats.batches, maxlen=self._stats.batches.maxlen)
        return snapshot

    # --- validation --------------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> Pattern:
        """Raise ValueError naming what is wrong; return the pattern to decode with."""
        if not isinstance(request, GenerationRequest):
            raise ValueError(f"expected a GenerationRequest, got {type(request).__name__}")
        if not isinstance(request.request_id, str) or not request.request_id:
            raise ValueError("request_id must be a non-empty string")
        decoding = request.decoding
        if not isinstance(decoding, DecodingMode):
            raise ValueError(f"decoding must be a DecodingMode, got {type(decoding).__name__}")
        policy = decoding.policy
        if not isinstance(policy, DecodingPolicy):
            raise ValueError(f"policy must be a DecodingPolicy, got {type(policy).__name__}")
        prompt = request.prompt_ids
        if not isinstance(prompt, list | tuple):
            raise ValueError(f"prompt_ids must be a list of token ids, got {type(prompt).__name__}")
        if not prompt:
            raise ValueError("prompt_ids is empty: a prompt needs at least one token")
        vocab = self.info.vocab_size
        bad = [
            t for t in prompt if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab
        ]
        if bad:
            raise ValueError(f"prompt_ids holds ids outside [0, {vocab}): {bad[:5]}")
        pattern = decoding.pattern
        if not isinstance(pattern, Pattern):
            raise ValueError(
                f"unknown pattern {pattern!r} in decoding mode {decoding.name!r}; "
                f"choose one of {[p.name for p in Pattern]} (dlm_runtime.decoding.Pattern)"
            )
        if pattern is Pattern.DEFAULT_DIFFUSION:
            pattern = self.info.default_pattern
        self.runner.validate(request, pattern, self.info)
        return pattern

    # --- asyncio side ------------------------------------------------------------------------

    async def _events(self, handle: Handle) -> AsyncIterator[Event]:
        finished = False
        try:
            while True:
                event = await handle.queue.get()
                if isinstance(event, Final):
                    finished = True
                    yield event
                    return
                yield event
        finally:
            if not finished:
                self._abandon(handle)

    @staticmethod
    def _put_all(items: list[tuple[asyncio.Queue[Event], Event]]) -> None:
        for queue, event in items:
            queue.put_nowait(event)

    # --- scheduler thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:  # a bug in the engine itself: fail everyone, accept nothing
            with self._cv:
                self._closing = True
                self._waiting.extend(self._inbox)
                self._inbox.clear()
            self._shutdown("error", f"engine failed: {exc!r}")
            raise

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (
                    self._closing or self._inbox or self._cancels or self._active or self._waiting
                ):
                    self._cv.wait()
                self._waiting.extend(self._inbox)
                self._inbox.clear()
                cancels, self._cancels = self._cancels, set()
                closing = self._closing
            if closing:
                self._shutdown("cancelled")
                return
            started = time.perf_counter()
            self._apply_cancels(cancels)
            self._admit()
            self._stats.schedule_seconds += time.perf_counter() - started
            if self._active:
                self._step()
            else:
                self._pool.release()

    def _deliver(self, items: Sequence[tuple[Handle, Update]]) -> None:
        # Text is rendered here, on the scheduler thread: on the consumer's loop it would hold
        # the GIL while this thread needs it, which costs more than the rendering itself.
        started = time.perf_counter()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        for handle, update in items:
            by_loop.setdefault(handle.loop, []).append((handle.queue, handle.render(update)))
            if isinstance(update, FinalUpdate):
                self._stats.finished += 1
                self._stats.tokens += len(update.token_ids)
                rid = handle.request.request_id
                with self._cv:
                    if self._handles.get(rid) is handle:
                        del self._handles[rid]
        self._stats.detokenize_seconds += time.perf_counter() - started
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._put_all, batch)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                with self._cv:
                    self._cancels.update(h for h, _ in items if h.loop is loop)

    def _idle_final(
        self, handle: Handle, reason: FinishReason, error: str | None = None
    ) -> FinalUpdate:
        elapsed = (time.perf_counter() - handle.submitted) * 1000.0
        return FinalUpdate([], reason, Usage(0, 0, 0, elapsed), error)

    def _apply_cancels(self, cancels: set[Handle]) -> None:
        if not cancels:
            return
        out: list[tuple[Handle, Update]] = []
        for handle in [h for h in self._waiting if h in cancels]:
            self._waiting.remove(handle)
            out.append((handle, self._idle_final(handle, "cancelled")))
        leaving = [i for i, s in enumerate(self._active) if s.handle in cancels]
        out.extend((self._active[i].handle, self._active[i].final("cancelled")) for i in leaving)
        self._remove(leaving)
        self._deliver(out)

    def _admit(self) -> None:
        failed: list[tuple[Handle, Update]] = []
        while self._waiting and len(self._active) < self.max_batch:
            handle = self._waiting.popleft()
            try:
                policy = handle.request.decoding.policy
                if needs_parallelism(handle.pattern, policy) and self.info.parallelism is None:
                    self._calibrate()
                state = self.runner.new_state(handle, self.info)
            except Exception as exc:  # e.g. a policy BlockState rejects
                failed.append((handle, self._idle_final(handle, "error", repr(exc))))
                continue
            self._active.append(state)
            if isinstance(state, CausalRow):
                self._reuse_prefix(len(self._active) - 1, state)
        self._deliver(failed)

    def _calibrate(self) -> None:
        started = time.perf_counter()
        cost = measure_forward_cost(self.model, self.device, self.max_batch)
        self.info = replace(self.info, parallelism=Parallelism(cost))
        self._stats.schedule_seconds += time.perf_counter() - started

    def _reuse_prefix(self, row: int, state: CausalRow) -> None:
        reused, kv = self._prefixes.match(state.prompt)
        if kv is not None:
            self._pool.load(row, kv, reused)
            state.start_after(reused)
            self._stats.prefix_tokens_reused += reused

    def _keep_prefix(self, row: int) -> None:
        state = self._active[row]
        if isinstance(state, CausalRow) and state.cached and self._pool.capacity:
            self._prefixes.put(state.cached_tokens(), self._pool.read(row))

    def _remove(self, rows: Sequence[int]) -> None:
        """Drop batch rows, keeping rows compact: the last request moves into each hole."""
        for row in sorted(rows, reverse=True):
            last = len(self._active) - 1
            self._keep_prefix(row)
            self._pool.clear(row)
            if row != last:
                self._active[row] = self._active[last]
                self._pool.move(last, row)
            self._active.pop()

    def _step(self) -> None:
        """Run every active row one step (the runner's forwards), then deliver the events, log
        the batch and drop the rows that finished."""
        stats = self._stats
        started = time.perf_counter()
        cpu_started = time.thread_time()
        parallelism = self.info.parallelism
        if parallelism is not None:
            parallelism.rows = len(self._active)
            if stats.rows >= OVERHEAD_AFTER_ROWS:  # the engine's own time per row, once steady
                outside = stats.busy_seconds - stats.forward_seconds
                parallelism.set_row_overhead(max(0.0, outside / stats.rows))
        out_events, leaving = self.runner.run(self._active)
        delivering = time.perf_counter()
        self._deliver(out_events)
        delivered = time.perf_counter()
        log = tuple(s.request.request_id for s in self._active)
        self._remove(leaving)
        with self._stats_lock:
            stats.batches.append(log)
        finished = time.perf_counter()
        stats.deliver_seconds += delivered - delivering
        stats.schedule_seconds += finished - delivered
        stats.busy_seconds += finished - started
        stats.busy_cpu_seconds += time.thread_time() - cpu_started

    def _shutdown(self, reason: FinishReason, error: str | None = None) -> None:
        out: list[tuple[Handle, Update]] = [
            (s.handle, s.final(reason, error)) for s in self._active
        ]
        out.extend((h, self._idle_final(h, reason, error)) for h in self._waiting)
        self._active.clear()
        self._waiting.clear()
        self._pool.release()
        self._deliver(out)
