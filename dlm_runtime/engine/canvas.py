"""DiffusionGemma under the engine: each request's own noise canvas, encoder cache and
self-conditioning logits, its rows batched into one decoder forward per step.

transformers' ``DiffusionGemmaForBlockDiffusion.generate`` decodes canvas after canvas: the
encoder writes the prompt (later each finished canvas) into a KV cache, then up to
``max_denoising_steps`` decoder forwards refine a canvas of ``canvas_length`` tokens that starts
as uniform noise, each step reading the previous step's logits (self-conditioning), sampling a
token per position, accepting the lowest-entropy ones under an entropy bound and renoising the
rest, until the canvas is stable and confident (adaptive stopping) or the steps run out.
:class:`CanvasState` is that loop for one request, one step per engine step, with the same
arithmetic and the same random draws in the same order from the request's own generator, so a
request decodes exactly as ``torch.manual_seed(seed)`` then ``generate`` on its prompt alone.

:class:`CanvasRunner` is the engine's :class:`~dlm_runtime.engine.runner.Runner` for the
model: it checks requests, makes their states and runs a step for many of them: each new
prompt or finished canvas goes through the encoder on its own (into the request's own
``DynamicCache``), then one decoder forward takes every row's canvas, its positions and its
self-conditioning logits (rows at a canvas's first step get a zeroed signal through
``self_conditioning_mask``, as upstream's first step does), over the rows' caches stacked and
left-padded to the longest, with a 2D mask hiding the padding: the layout of upstream's own
left-padded batch. With ``exact_batches`` only rows with caches of equal length share a
forward (no padding).

Nothing of the model's code is copied: the encoder, the decoder, the mask functions and the
cache are transformers' own. What is reproduced is the sampler loop of ``generate`` (its
``_denoising_step``, ``EntropyBoundSampler``, ``StableAndConfidentStoppingCriteria``, the
linear temperature schedule and the end-of-sequence check), which takes no model code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

from dlm_runtime.decoding import Pattern
from dlm_runtime.diffusion_gemma import DiffusionGemmaModel, generation_settings
from dlm_runtime.engine.batching import Query
from dlm_runtime.engine.requests import EngineStats, GenerationRequest
from dlm_runtime.engine.runner import Events, Runner
from dlm_runtime.engine.states import Handle, ModelInfo, RequestState, Update

__all__ = ["CanvasRunner", "CanvasState"]


def _entropy(scores: torch.Tensor) -> torch.Tensor:
    """Each position's entropy, as upstream computes it (``Categorical(logits=...)``)."""
    entropy: torch.Tensor = cast(Any, torch.distributions.Categorical(logits=scores)).entropy()
    return entropy


class CanvasState(RequestState):
    """One DiffusionGemma request: its cache, its canvas and where it is in its steps."""

    def __init__(
        self, handle: Handle, info: ModelInfo, stats: EngineStats, model: DiffusionGemmaModel
    ) -> None:
        super().__init__(handle, info, stats)
        from transformers import DynamicCache

        inner: Any = model.inner
        self.settings: Any = generation_settings(model, self.policy)
        # generate()'s own reading of max_new_tokens against max_length, for this prompt.
        _, max_new = inner._prepare_generated_length(self.settings, len(self.request.prompt_ids))
        self.canvas_length = int(inner.config.canvas_length)
        self.vocab = int(inner.config.text_config.vocab_size)
        self.embed_dtype = inner.model.decoder.embed_tokens.weight.dtype
        self.cache = DynamicCache(config=inner.config.get_text_config(decoder=True))
        self.cached = 0  # tokens in the cache
        self.pending: list[int] = list(self.request.prompt_ids)  # to encode before the canvas
        self.max_canvases = math.ceil(max_new / self.canvas_length)
        self.canvases = 0
        eos = self.settings.eos_token_id
        self.ends = set() if eos is None else ({eos} if isinstance(eos, int) else set(eos))
        self.canvas = torch.empty(0)  # the current canvas [1, C]; drawn after the encoder runs
        self.self_conditioning: torch.Tensor | None = None  # previous step's logits [1, C, V]
        self.step_left = 0  # upstream's ``cur_step``: steps remaining, counted down to 1
        self.history: torch.Tensor | None = None  # the last argmax canvases (stability)

    # The runner builds this state's rows itself (its forward is not the runtime's contract).
    def query(self) -> Query:
        raise NotImplementedError("a DiffusionGemma request is run by CanvasRunner")

    def begin_canvas(self) -> None:
        """A new canvas of uniform noise (the pending tokens are encoded by then)."""
        self.canvas = torch.randint(
            0,
            self.vocab,
            (1, self.canvas_length),
            device=self.info.device,
            generator=self.generator,
        )
        self.self_conditioning = None
        self.step_left = int(self.settings.max_denoising_steps)
        self.history = None

    def consume(self, logits: torch.Tensor, cache: object = None) -> list[Update]:
        """One denoising step from the decoder's logits ``[C, V]`` for this row."""
        s, g = self.settings, self.generator
        started = time.perf_counter()
        self.forward_passes += 1
        self.steps += 1
        scores = logits[None]
        if s.t_min is not None and s.t_max is not None:  # the linear temperature schedule
            step = torch.tensor(self.step_left, device=scores.device, dtype=torch.int32)
            scores = scores / (s.t_min + (s.t_max - s.t_min) * (step / s.max_denoising_steps))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        drawn = torch.multinomial(probs.view(-1, self.vocab), num_samples=1, generator=g)
        drawn = drawn.view(1, self.canvas_length)
        argmax = torch.argmax(scores, dim=-1)
        # Entropy-bound acceptance: the k lowest-entropy positions whose summed entropy less its
        # largest stays within the bound; the others are renoised.
        entropy = _entropy(scores)
        ordered, order = torch.sort(entropy, dim=-1, descending=False)
        chosen = torch.cumsum(ordered, dim=-1) - ordered <= s.sampler_config.entropy_bound
        accepted = torch.scatter(torch.zeros_like(chosen), -1, order, chosen)
        kept = torch.where(accepted, drawn, self.canvas)
        noise = torch.randint(
            0, self.vocab, (1, self.canvas_length), device=kept.device, generator=g
        )
        self.canvas = torch.where(~accepted, noise, kept)
        finished = self._stops(argmax, scores)
        self.self_conditioning = scores.to(self.embed_dtype)
        self.step_left -= 1
        ending = finished or self.step_left == 0
        # The draft is upstream's: the argmax canvas after the reply so far. Nothing in it is
        # final until the canvas ends (an accepted token is still re-predicted each step).
        start = len(self.reply)
        tokens: list[int] = argmax[0].tolist()
        committed = list(range(start, start + len(tokens))) if ending else []
        events: list[Update] = [
            self._draft(self.reply + tokens, start, committed, [], self.canvases)
        ]
        self.stats.policy_seconds += time.perf_counter() - started
        if ending:
            events.extend(self._end_canvas(tokens))
        return events

    def _stops(self, argmax: torch.Tensor, scores: torch.Tensor) -> bool:
        """Upstream's adaptive stopping: the argmax canvas unchanged for ``stability_threshold``
        steps and the mean entropy of the scaled logits below ``confidence_threshold``."""
        s = self.settings
        if s.stability_threshold is None or s.confidence_threshold is None:
            return False
        if s.stability_threshold == 0:
            stable = True
        else:
            if self.history is None:
                self.history = torch.full(
                    (s.stability_threshold, *argmax.shape),
                    -1,
                    dtype=argmax.dtype,
                    device=argmax.device,
                )
            stable = bool((self.history == argmax[None]).all())
            self.history = torch.roll(self.history, shifts=-1, dims=0)
            self.history[-1] = argmax
        return stable and bool(torch.mean(_entropy(scores), dim=-1)[0] < s.confidence_threshold)

    def _end_canvas(self, tokens: list[int]) -> list[Update]:
        """The argmax canvas joins the reply; the reply ends at an end token or the budget."""
        self.canvases += 1
        end = next((i for i, t in enumerate(tokens) if t in self.ends), None)
        if end is not None:
            self.reply.extend(tokens[:end])
            return [self.final("end")]
        self.reply.extend(tokens)
        if self.canvases >= self.max_canvases:
            return [self.final("length")]
        self.pending = tokens
        return []


class CanvasRunner(Runner):
    """DiffusionGemma's requests (it has no mask token: :data:`mask_id` is -1): one engine
    step is their encoder calls, then a decoder forward over their canvases."""

    mask_id = -1

    def __init__(
        self,
        model: DiffusionGemmaModel,
        device: torch.device,
        stats: EngineStats,
        exact_batches: bool,
    ) -> None:
        self.model = model
        self.inner: Any = model.inner
        self.canvas_length = int(self.inner.config.canvas_length)
        self.device = device
        self.stats = stats
        self.exact_batches = exact_batches

    def validate(self, request: GenerationRequest, pattern: Pattern, info: ModelInfo) -> None:
        """Its own pattern only, and whole canvases within the context."""
        policy = request.decoding.policy
        if pattern is not Pattern.BIDIRECTIONAL or policy.cfg_scale > 0:
            raise ValueError(
                f"DiffusionGemma decodes only with its own sampler (the DEFAULT_DIFFUSION "
                f"pattern, dlm_runtime.diffusion_gemma.diffusion_gemma_policy), got "
                f"{pattern.name} (decoding mode {request.decoding.name!r})"
            )
        context, canvas = info.context, self.canvas_length
        room = -(-policy.max_new_tokens // canvas) * canvas  # it writes whole canvases
        if context is not None and len(request.prompt_ids) + room > context:
            raise ValueError(
                f"prompt too long: {len(request.prompt_ids)} prompt tokens + {room} canvas "
                f"positions (max_new_tokens={policy.max_new_tokens} in canvases of {canvas}) "
                f"exceed the model context of {context}"
            )

    def new_state(self, handle: Handle, info: ModelInfo) -> CanvasState:
        return CanvasState(handle, info, self.stats, self.model)

    def run(self, active: list[RequestState]) -> tuple[Events, list[int]]:
        """One denoising step of every row (encoder calls for new canvases first)."""
        stats = self.stats
        started = time.perf_counter()
        states = [s for s in active if isinstance(s, CanvasState)]
        out_events: Events = []
        leaving: list[int] = []
        cpu_started = time.thread_time()
        try:
            logits = self.decode(states)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # e.g. out of memory: these rows fail, the engine goes on
            out_events.extend((s.handle, s.final("error", repr(exc))) for s in states)
            leaving.extend(range(len(states)))
            return out_events, leaving
        forwarded = time.perf_counter()
        stats.forward_seconds += forwarded - started
        stats.forward_cpu_seconds += time.thread_time() - cpu_started
        stats.forward_passes += len({s.cached for s in states}) if self.exact_batches else 1
        stats.rows += len(states)
        for row, (state, row_logits) in enumerate(zip(states, logits, strict=True)):
            try:
                produced = state.consume(row_logits)
            except Exception as exc:
                produced = [state.final("error", repr(exc))]
            out_events.extend((state.handle, event) for event in produced)
            if state.done:
                leaving.append(row)
        stats.consume_seconds += time.perf_counter() - forwarded
        return out_events, leaving

    def encode(self, state: CanvasState) -> None:
        """Write ``state``'s pending tokens into its cache, then draw its new canvas."""
        inner, device = self.inner, state.info.device
        ids = torch.tensor([state.pending], dtype=torch.long, device=device)
        start, n = state.cached, len(state.pending)
        positions = torch.arange(start, start + n, dtype=torch.int32, device=device)[None]
        seen = torch.ones((1, start + n), dtype=torch.bool, device=device)
        mask = inner.model.encoder.create_masks_for_generate(
            config=inner.config,
            inputs_embeds=torch.empty((1, n, 0), dtype=inner.dtype, device=device),
            attention_mask=seen,
            cache=state.cache,
            position_ids=positions,
        )
        inner.model.encoder(
            input_ids=ids, attention_mask=mask, cache=state.cache, position_ids=positions
        )
        state.cached += n
        state.pending = []
        state.begin_canvas()

    def decode(self, states: Sequence[CanvasState]) -> list[torch.Tensor]:
        """Each state's logits ``[C, V]`` for its current canvas, in order."""
        for state in states:
            if state.pending:
                self.encode(state)
        groups: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(state.cached if self.exact_batches else 0, []).append(i)
        logits: list[torch.Tensor] = [torch.empty(0)] * len(states)
        for rows in groups.values():
            out = self._decoder([states[i] for i in rows])
            for j, i in enumerate(rows):
                logits[i] = out[j]
        return logits

    def _decoder(self, states: Sequence[CanvasState]) -> torch.Tensor:
        from transformers import DynamicCache

        inner = self.inner
        device = states[0].info.device
        lengths = [s.cached for s in states]
        longest = max(lengths)
        if len(states) == 1:
            cache, mask = states[0].cache, None
        else:
            # The rows' caches side by side, each left-padded to the longest (per layer: the
            # sliding-window layers keep fewer positions), as a left-padded batch's would be.
            cache = DynamicCache(config=inner.config.get_text_config(decoder=True))
            layers: list[Any] = list(cache.layers)
            for index, layer in enumerate(layers):
                rows: list[Any] = [s.cache.layers[index] for s in states]
                width = max(r.keys.shape[2] for r in rows)
                keys = torch.cat([F.pad(r.keys, (0, 0, width - r.keys.shape[2], 0)) for r in rows])
                values = torch.cat(
                    [F.pad(r.values, (0, 0, width - r.values.shape[2], 0)) for r in rows]
                )
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
                if hasattr(layer, "cumulative_length"):  # sliding layers count what they saw
                    layer.cumulative_length = longest
            mask = torch.zeros(
                (len(states), longest + states[0].canvas_length), dtype=torch.bool, device=device
            )
            for i, n in enumerate(lengths):
                mask[i, longest - n :] = True
        canvas_length = states[0].canvas_length
        positions = torch.stack(
            [torch.arange(n, n + canvas_length, dtype=torch.int32, device=device) for n in lengths]
        )
        signals = [s.self_conditioning for s in states]
        signal: torch.Tensor | None = None
        present: torch.Tensor | None = None
        if any(x is not None for x in signals):
            blank = torch.zeros((1, canvas_length, states[0].vocab), device=device)
            signal = torch.cat(
                [x if x is not None else blank.to(states[0].embed_dtype) for x in signals]
            )
            if not all(x is not None for x in signals):
                present = torch.tensor([x is not None for x in signals], device=device)
        out = inner(
            decoder_input_ids=torch.cat([s.canvas for s in states]),
            self_conditioning_logits=signal,
            self_conditioning_mask=present,
            decoder_attention_mask=mask,
            cache=cache,
            decoder_position_ids=positions,
        )
        logits: torch.Tensor = out.logits
        return logits
