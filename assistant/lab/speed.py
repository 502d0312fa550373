"""Speed of the served decoding modes side by side, at several loads, on a real checkpoint.

Every prompt goes through a fresh engine per (mode, load); a new request starts as one ends,
so ``load`` requests are in flight throughout. Modes take turns and each figure is the best
of ``repeats`` runs, because these machines are shared: compare the ratios, which come from
one run, not absolute figures across runs. Replies are compared with autoregressive mode's
(speculative mode must equal it at temperature 0).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from assistant.agent.decoding import DecodingMode
from dlm_runtime.decoding import Pattern
from dlm_runtime.engine import Engine, Final, GenerationRequest
from dlm_runtime.engine.calibrate import measure_forward_cost
from dlm_runtime.parallelism import Parallelism
from dlm_runtime.tokenizer import encode_chat


def chat_prompts(
    tok: PreTrainedTokenizerFast, path: Path, count: int, room: int, context: int | None
) -> list[list[int]]:
    """The first ``count`` prompts of a corpus file (lines with "messages" ending in an
    assistant turn; the prompt is the turns before it) that leave ``room`` reply positions."""
    prompts: list[list[int]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            messages = json.loads(line)["messages"]
            if messages[-1]["role"] != "assistant":
                continue
            ids = encode_chat(tok, messages[:-1])
            if context is not None and len(ids) + room > context:
                continue
            prompts.append(ids)
            if len(prompts) >= count:
                break
    return prompts


@dataclass(frozen=True)
class Run:
    seconds: float
    finals: list[Final]
    parallelism: str  # adaptive mode: the block length chosen at each row count seen

    @property
    def tokens(self) -> int:
        return sum(f.usage.tokens for f in self.finals)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def p50_ms(self) -> float:
        """Median time from submitting a request to its last token."""
        return statistics.median(f.usage.milliseconds for f in self.finals)

    @property
    def forwards_per_token(self) -> float:
        return sum(f.usage.forward_passes for f in self.finals) / max(self.tokens, 1)


async def serve_all(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerFast,
    mode: DecodingMode,
    prompts: Sequence[list[int]],
    load: int,
    max_batch: int,
    parallelism: Parallelism | None = None,
) -> Run:
    engine = Engine(model, tok, max_batch=max_batch, parallelism=parallelism)
    gate = asyncio.Semaphore(load)
    rows_seen: set[int] = set()

    async def one(i: int, ids: list[int]) -> Final:
        async with gate:
            request = GenerationRequest(f"{mode.name}-{i}", ids, mode, seed=0)
            async for event in await engine.submit(request):
                parallelism = engine.info.parallelism
                if parallelism is not None:
                    rows_seen.add(parallelism.rows)
                if isinstance(event, Final):
                    return event
        raise RuntimeError(f"no Final for request {i}")

    started = time.perf_counter()
    finals = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    elapsed = time.perf_counter() - started
    chosen = ""
    if engine.info.parallelism is not None:
        plan = engine.info.parallelism.plan(sorted(rows_seen), mode.policy.block_size)
        chosen = " ".join(f"{rows}:{length}" for rows, length in plan.items())
    await engine.close()
    return Run(elapsed, list(finals), chosen)


def speed_report(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerFast,
    modes: Sequence[DecodingMode],
    prompts: Sequence[list[int]],
    loads: Sequence[int],
    repeats: int,
) -> list[str]:
    """One table row per load: each mode's tokens/s, forward passes per token, median reply
    latency (ms), and for the others their tokens/s ratio to the first mode and the replies
    identical to its replies."""
    base = modes[0]
    max_batch = max(16, max(loads))
    asyncio.run(serve_all(model, tok, base, prompts[:4], 2, max_batch))  # warm-up
    # Measured once, as a serving engine would (not inside every timed run); the commit
    # rates it learns carry over from run to run, as they do in a long-lived engine.
    device = next(model.parameters()).device
    parallelism = Parallelism(measure_forward_cost(model, device, max_batch))
    head = f"   {'load':>4}"
    for mode in modes:
        head += f" | {mode.name[:22]:>22} tok/s  fwd/tok  p50 ms"
        if mode is not base:
            head += f"  {'vs ' + base.name[:4]:>8}  same"
    rows = [head]
    notes: list[str] = []
    for load in loads:
        best: dict[str, Run] = {}
        for _ in range(repeats):
            for mode in modes:
                run = asyncio.run(
                    serve_all(model, tok, mode, prompts, load, max_batch, parallelism)
                )
                if mode.name not in best or run.seconds < best[mode.name].seconds:
                    best[mode.name] = run
        line = f"   {load:>4}"
        reference = best[base.name]
        for mode in modes:
            run = best[mode.name]
            line += (
                f" | {run.tokens_per_second:>28.1f}  {run.forwards_per_token:>7.3f}"
                f"  {run.p50_ms:>6.0f}"
            )
            if mode is not base:
                ratio = run.tokens_per_second / reference.tokens_per_second
                same = sum(
                    a.token_ids == b.token_ids
                    for a, b in zip(reference.finals, run.finals, strict=True)
                )
                line += f"  {ratio:>7.2f}x  {same:>2}/{len(prompts)}"
            if mode.pattern is Pattern.ADAPTIVE:
                notes.append(f"   load {load}, {mode.name}: rows:block length {run.parallelism}")
        rows.append(line)
    return rows + notes
