"""Engine benchmark on random weights: ``python -m dlm_runtime.bench [--quick]``.

The model has the shape of the bundled checkpoint (``assistant/checkpoints/train_bundled.json``:
hidden 192, intermediate 576, 6 layers, 6 heads, 6 kv heads, tied embeddings, vocab 8192,
context 512); the tokenizer is trained on this package's own source text. Random weights make
confidence meaningless, so every diffusion figure uses a fixed schedule: greedy tokens, the
``FixedCount`` unmasking of the ``fixed_schedule`` preset, 32-token blocks, no early stop, so
the work per request does not depend on the weights. Prints one plain-text report.

The served modes on the real checkpoint and real prompts are compared by ``assistant speed``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.engine import Engine, EngineStats, Final, GenerationRequest
from dlm_runtime.engine.calibrate import CALIBRATION_PREFIX, measure_forward_cost, row_counts
from dlm_runtime.modeling import DLMConfig, DLMModel
from dlm_runtime.policies import ChosenProbability, DecodingPolicy, FixedCount, Greedy
from dlm_runtime.tokenizer import special_token_ids, train_tokenizer

PROMPT_LEN = 64
BLOCK = 32
# The bundled model's shape (mirrors assistant/checkpoints/train_bundled.json; context as train.py).
SHAPE = {
    "hidden_size": 192,
    "intermediate_size": 576,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
}


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform fallback elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average when the run starts (other work skews every figure)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def build_model() -> tuple[DLMModel, PreTrainedTokenizerFast]:
    """Random-weight model of the bundled size and a tokenizer trained on this package."""
    texts = [p.read_text() for p in sorted(Path(__file__).parent.glob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=8192)
    sp = special_token_ids(tok)
    torch.manual_seed(0)
    cfg = DLMConfig(
        vocab_size=8192,
        hidden_size=SHAPE["hidden_size"],
        intermediate_size=SHAPE["intermediate_size"],
        num_hidden_layers=SHAPE["num_hidden_layers"],
        num_attention_heads=SHAPE["num_attention_heads"],
        num_key_value_heads=SHAPE["num_key_value_heads"],
        max_position_embeddings=512,
        tie_word_embeddings=True,
        mask_token_id=sp.mask,
        eos_token_id=sp.end,
        pad_token_id=sp.pad,
    )
    return DLMModel(cfg).eval(), tok


def fixed_policy(tokens_per_step: int, max_new: int) -> DecodingPolicy:
    """Greedy + FixedCount over 32-token blocks: ``32 / tokens_per_step`` steps per block."""
    return DecodingPolicy(
        name=f"fixed-{tokens_per_step}",
        chooser=Greedy(),
        confidence=ChosenProbability(exact=False),
        unmask=FixedCount(BLOCK // tokens_per_step),
        revision=None,
        block_size=BLOCK,
        max_new_tokens=max_new,
        early_stop=False,
    )


def prompt(seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(64, 8192, (PROMPT_LEN,), generator=g).tolist()


def timed(fn: Callable[[], object], reps: int) -> float:
    """Best-of-``reps`` seconds of ``fn`` after one warm-up call (robust to other load)."""
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def step_cost_at(model: DLMModel, reply: int, reps: int) -> tuple[float, float]:
    """Seconds of one step of the reply's last block: (whole sequence, block on the cache)."""
    total = PROMPT_LEN + reply
    ids = torch.randint(64, 8192, (1, total))
    prefix = total - BLOCK
    ranks = torch.cat([torch.arange(prefix), torch.full((BLOCK,), prefix)])
    full_mask = (ranks[None, :] <= ranks[:, None])[None, None]
    cache = model(ids[:, :prefix]).new_key_values  # contents do not matter for timing
    block_mask = torch.ones(1, 1, BLOCK, total, dtype=torch.bool)
    pos = torch.arange(prefix, total)[None]
    without = timed(lambda: model(ids, attention_mask=full_mask), reps)
    with_cache = timed(lambda: model(ids[:, prefix:], pos, block_mask, cache), reps)
    return without, with_cache


def step_cost(model: DLMModel, reply_lengths: Sequence[int], reps: int) -> list[str]:
    """Forward cost of one refinement step of the last block, with and without the cache."""
    rows = [
        "1. Cost of one refinement step (batch 1, prompt 64, 32-token block = last block of the "
        "reply; best of N)",
        f"   {'reply':>6} {'no cache (ms)':>14} {'prefix-causal cache (ms)':>25} {'ratio':>7}",
    ]
    with torch.inference_mode():
        for reply in reply_lengths:
            a, b = step_cost_at(model, reply, reps)
            rows.append(f"   {reply:>6} {a * 1e3:>14.2f} {b * 1e3:>25.2f} {a / b:>6.1f}x")
    return rows


async def run_engine(
    model: nn.Module,
    tok: PreTrainedTokenizerFast,
    requests: Sequence[GenerationRequest],
    exact_batches: bool | None = None,
    warm: Sequence[GenerationRequest] = (),
) -> tuple[float, list[list[int]], EngineStats]:
    """Submit all ``requests`` at once; return (seconds, each reply's ids, engine counters).

    ``exact_batches`` goes to the :class:`Engine`. ``warm`` requests run first on the same
    engine and are left out of the counters: a fresh engine's first forwards also allocate
    its KV pool (every row, zeroed). A request the engine ends with an error raises
    ``RuntimeError`` (its figures would lie)."""
    engine = Engine(model, tok, max_batch=max(16, len(requests)), exact_batches=exact_batches)

    async def one(request: GenerationRequest) -> list[int]:
        reply: list[int] = []
        async for event in await engine.submit(request):
            if isinstance(event, Final):
                if event.finish_reason == "error":
                    raise RuntimeError(f"request {event.request_id}: {event.error}")
                reply = event.token_ids
        return reply

    try:
        await asyncio.gather(*(one(r) for r in warm))
        before = engine.stats
        started = time.perf_counter()
        replies = await asyncio.gather(*(one(r) for r in requests))
        elapsed = time.perf_counter() - started
    finally:
        await engine.close()  # the last step's counters are complete once the thread is done
    stats = engine.stats
    for counter in dataclasses.fields(EngineStats):
        value = getattr(stats, counter.name)
        if isinstance(value, int | float):
            setattr(stats, counter.name, value - getattr(before, counter.name))
    return elapsed, replies, stats


def requests_for(
    n: int, policy: DecodingPolicy, pattern: Pattern = Pattern.PREFIX_CAUSAL, tag: str = ""
) -> list[GenerationRequest]:
    decoding = DecodingMode(pattern.value, pattern, policy)
    return [GenerationRequest(f"{tag}{i}", prompt(i), decoding, seed=i) for i in range(n)]


async def throughput(
    model: DLMModel, tok: PreTrainedTokenizerFast, max_new: int
) -> tuple[list[str], EngineStats]:
    policy = fixed_policy(4, max_new)
    rows = [
        "",
        f"2. Engine throughput, prefix-causal, policy fixed-4 (greedy, FixedCount(8) per 32-token "
        f"block = 4 tokens/step), reply {max_new}, prompt 64",
        f"   {'requests':>8} {'tokens/s':>10} {'vs 1':>6} {'forwards':>9} {'ms/forward':>11}",
    ]
    await run_engine(model, tok, requests_for(2, fixed_policy(4, BLOCK), tag="warm"))
    base = 0.0
    stats16 = EngineStats()
    for n in (1, 4, 16):
        elapsed, replies, stats = await run_engine(model, tok, requests_for(n, policy))
        rate = sum(map(len, replies)) / elapsed
        base = base or rate
        per = stats.forward_seconds / max(stats.forward_passes, 1) * 1e3
        rows.append(
            f"   {n:>8} {rate:>10.1f} {rate / base:>5.2f}x {stats.forward_passes:>9} {per:>11.1f}"
        )
        stats16 = stats
    return rows, stats16


def overhead(stats: EngineStats) -> list[str]:
    fwd = stats.forward_seconds

    def share(seconds: float) -> str:
        return f"{seconds / fwd * 100:5.1f}%"

    bookkeeping = stats.consume_seconds - stats.policy_seconds
    hand_off = stats.deliver_seconds - stats.detokenize_seconds
    outside = stats.busy_seconds - fwd
    return [
        "",
        "3. Engine overhead at 16 requests (share of forward time; scheduler thread wall time)",
        f"   total outside forward           {share(outside)}",
        f"     policy (BlockState.step)      {share(stats.policy_seconds)}",
        f"     engine's own                  {share(outside - stats.policy_seconds)}",
        f"       batch assembly              {share(stats.build_seconds)}",
        f"       request state bookkeeping   {share(bookkeeping)}",
        f"       draft text (detokenizing)   {share(stats.detokenize_seconds)}",
        f"       event hand-off              {share(hand_off)}",
        f"       scheduling + KV cache write {share(stats.schedule_seconds)}",
    ]


async def modes(model: DLMModel, tok: PreTrainedTokenizerFast, max_new: int) -> list[str]:
    rows = [
        "",
        f"4. One request, reply {max_new}, prompt 64 (same weights); last column: the "
        "engine's CPU time per forward outside the model call (scheduler thread: no GIL waits)",
        f"   {'mode':<44} {'tokens/s':>9} {'forwards':>9} {'outside ms':>11}",
    ]
    cases = [
        (
            "autoregressive (causal, 1 token/forward)",
            fixed_policy(1, max_new),
            Pattern.AUTOREGRESSIVE,
        ),
        (
            "diffusion prefix-causal, fixed-1 (1 token/forward)",
            fixed_policy(1, max_new),
            Pattern.PREFIX_CAUSAL,
        ),
        (
            "diffusion prefix-causal, fixed-4 (4 tokens/forward)",
            fixed_policy(4, max_new),
            Pattern.PREFIX_CAUSAL,
        ),
        # Approximate: a block's later steps run only what the last one committed and the
        # masks, so the same forwards are shorter (a different reply, on random weights).
        (
            "diffusion block-cache, fixed-1 (1 token/forward)",
            fixed_policy(1, max_new),
            Pattern.BLOCK_CACHE,
        ),
        (
            "diffusion block-cache, fixed-4 (4 tokens/forward)",
            fixed_policy(4, max_new),
            Pattern.BLOCK_CACHE,
        ),
    ]
    for label, policy, pattern in cases:
        # Another prompt: the same one would start from the warm-up's cached prefix.
        warm = requests_for(2, policy, pattern, tag="warm")[1:]
        elapsed, replies, stats = await run_engine(
            model, tok, requests_for(1, policy, pattern), warm=warm
        )
        outside = stats.cpu_overhead_per_forward * 1e3
        rows.append(
            f"   {label:<44} {len(replies[0]) / elapsed:>9.1f} {stats.forward_passes:>9}"
            f" {outside:>11.2f}"
        )
    return rows


def prefill_cost(model: DLMModel, prompt_lengths: Sequence[int], reps: int) -> list[str]:
    """A prompt's prefill computing every position's logits, or only the block's it reads."""
    rows = [
        "",
        f"5. Prefill of a prompt followed by a {BLOCK}-token block (batch 1, best of N): logits "
        "of every position, or of the block's only (what the engine computes)",
        f"   {'prompt':>6} {'all logits (ms)':>16} {'block logits (ms)':>18} {'ratio':>7}",
    ]
    with torch.inference_mode():
        for length in prompt_lengths:
            ids = torch.randint(64, 8192, (1, length + BLOCK))
            read = torch.arange(length, length + BLOCK)[None]
            every = timed(lambda ids=ids: model(ids), reps)
            block = timed(lambda ids=ids, read=read: model(ids, logits_index=read), reps)
            rows.append(
                f"   {length:>6} {every * 1e3:>16.2f} {block * 1e3:>18.2f} {every / block:>6.2f}x"
            )
    return rows


def forward_cost(model: DLMModel, max_rows: int) -> list[str]:
    """The table the load-adaptive pattern chooses block lengths from (``calibrate``)."""
    cost = measure_forward_cost(model, torch.device("cpu"), max_rows, reps=5)
    lengths = cost.positions
    rows = [
        f"6. One cached forward (prefix {CALIBRATION_PREFIX}) by rows and positions per row, "
        "median of 5 (ms); last column: an 8-position block against a 1-position forward",
        "   " + f"{'rows':>5}" + "".join(f"{f'{q} pos':>9}" for q in lengths) + f"{'8 / 1':>8}",
    ]
    for n in row_counts(max_rows):
        times = [cost.seconds(n, q) * 1e3 for q in lengths]
        rows.append(
            f"   {n:>5}"
            + "".join(f"{t:>9.2f}" for t in times)
            + f"{cost.seconds(n, 8) / cost.seconds(n, 1):>7.2f}x"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter replies, fewer repetitions")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tok = build_model()
    # As a server should after loading: a full GC pass over what torch and transformers leave
    # behind would land inside some engine step (docs/benchmarks.md has its cost).
    gc.collect()
    gc.freeze()
    command = "python -m dlm_runtime.bench" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    n_params = sum(p.numel() for p in model.parameters())
    head = [
        f"command:  {command}",
        f"hardware: {cpu_name()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"load average {load_average()}, gc.freeze() after loading",
        f"model:    DLMConfig hidden {SHAPE['hidden_size']}, intermediate "
        f"{SHAPE['intermediate_size']}, {SHAPE['num_hidden_layers']} layers, "
        f"{SHAPE['num_attention_heads']} heads, vocab 8192, tied, context 512, "
        f"{n_params / 1e6:.1f}M parameters, random weights, CPU float32",
        "",
    ]
    for line in head:
        print(line)
    lengths = (64, 128) if args.quick else (64, 128, 256)
    for line in step_cost(model, lengths, reps=3 if args.quick else 7):
        print(line)
    max_new = 64 if args.quick else 128
    rows, stats16 = asyncio.run(throughput(model, tok, max_new))
    for line in rows + overhead(stats16):
        print(line)
    for line in asyncio.run(modes(model, tok, max_new)):
        print(line)
    for line in prefill_cost(model, (64, 256) if args.quick else (64, 128, 256), reps=7):
        print(line)
    for line in forward_cost(model, 8 if args.quick else 32):
        print(line)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
