"""Continuous-batching inference engine for masked-diffusion language models.

One scheduler thread owns the model, every request's decoding state and the KV cache. Each
iteration it admits waiting requests (up to ``max_batch``), drops cancelled ones, asks every
active request for its query rows, runs ONE batched forward pass and hands each request its
logits; events go back to each request's asyncio queue via ``loop.call_soon_threadsafe``. The
model never carries flags: every pattern below is only a mask plus a choice of what is written
to the request's cache.

Attention patterns of ``mode="diffusion"`` (``GenerationRequest.attention``):

* ``"prefix-causal"`` (default for native ``"dlm"`` models; how :mod:`dlm_runtime.train`
  trains them): the prompt and every finished block are cached exactly as a causal pass
  computes them. The block being decoded attends to the cache and bidirectionally to itself.
  Tokens not yet cached ("pending": the prompt at first, then each finished block) ride along
  in the first step of the next block: pending rows attend causally, block rows see cache +
  pending + block, and the pending rows' K/V are appended afterwards. Replies are open-ended.
* ``"prefix-causal-nocache"``: the same attention pattern with no cache: every step
  recomputes the prompt and the finished blocks. Same tokens, more work; the baseline the
  cache's saving is measured against ("vanilla" diffusion in the evaluation).
* ``"bidirectional"`` (default for LLaDA): no cache; every step runs prompt + all blocks
  (future ones masked) with full attention, which is what LLaDA's ``generate()`` does; the
  ``reference`` preset reproduces it token for token.
* ``"prefix-cache"`` (APPROXIMATE, Fast-dLLM's prefix cache): at a block's first step the
  whole sequence runs bidirectionally and the K/V of everything before the block is cached;
  the block's later steps run only the block and the masked suffix against that stale cache.

Other modes: ``"autoregressive"`` (causal, one token per forward, prefill in the first) and
``"speculative"`` (a block drafted by prefix-causal diffusion, then verified by one causal
forward; the longest prefix the autoregressive sampler agrees with is kept plus the
verifier's own next token, so at temperature 0 it equals autoregressive mode).

Policies with ``early_stop`` end at the model's ``eos_token_id`` in every mode (the end token
is not part of :attr:`Final.token_ids`); the ``reference`` preset never stops early.

Batching: request ``i`` of the batch owns row ``i`` of a :class:`KVPool` (per-layer tensors
``[max_batch, H, capacity, D]``), so a forward reads the caches as one right-padded view, the
same layout :func:`dlm_runtime.attention.kv_pad_stack` builds, without copying them each step.
Query rows are right-padded and each row's mask comes from per-token visibility ranks.
:attr:`Engine.stats` splits the scheduler thread's time (forward, policy, detokenizing, ...).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dlm_runtime.attention import KV, ForwardOutput
from dlm_runtime.loading import RemoteCodeModel
from dlm_runtime.policies import BlockState, DecodingPolicy, StepResult, TorchRandom
from dlm_runtime.tokenizer import DraftText, TokenSpan, _token_table, decode_draft

__all__ = [
    "ATTENTIONS",
    "MODES",
    "BatchBuilder",
    "Draft",
    "DraftDecoder",
    "Engine",
    "EngineStats",
    "Event",
    "Final",
    "GenerationRequest",
    "KVPool",
    "Query",
    "Usage",
]

MODES = ("diffusion", "autoregressive", "speculative")
ATTENTIONS = ("prefix-causal", "prefix-causal-nocache", "bidirectional", "prefix-cache")
FinishReason = Literal["end", "length", "cancelled", "error"]


# --------------------------------------------------------------------------------------------
# Public request / event types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    """One reply to generate."""

    request_id: str
    prompt_ids: list[int]
    policy: DecodingPolicy
    mode: str = "diffusion"  # "diffusion" | "autoregressive" | "speculative"
    attention: str | None = None  # diffusion only; None = the model's default pattern
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
    build_seconds: float = 0.0  # queries + padding + masks
    consume_seconds: float = 0.0  # per-request steps: policy and bookkeeping
    policy_seconds: float = 0.0  # inside the policy (BlockState.step, token choosers)
    detokenize_seconds: float = 0.0  # rendering draft text (part of deliver_seconds)
    deliver_seconds: float = 0.0
    schedule_seconds: float = 0.0  # admission, cancellation, removal, cache writes
    finished: int = 0
    tokens: int = 0  # reply tokens of finished requests
    prefix_tokens_reused: int = 0  # prompt tokens copied from PrefixStore, not prefilled
    batches: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=4096))

    def reset(self) -> None:
        """Zero every counter."""
        fresh = EngineStats()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    @property
    def overhead(self) -> float:
        """Engine time outside the forward as a share of forward time."""
        if self.forward_seconds <= 0:
            return 0.0
        return (self.busy_seconds - self.forward_seconds) / self.forward_seconds


# --------------------------------------------------------------------------------------------
# Incremental draft text
# --------------------------------------------------------------------------------------------

_REPLACEMENT = "\ufffd".encode()
# Per tokenizer: token id -> its text when it decodes on its own with no UTF-8 bytes left
# pending (most tokens), or None. Filled lazily; shared by every request.
_PIECES: weakref.WeakKeyDictionary[Any, dict[int, str | None]] = weakref.WeakKeyDictionary()


class DraftDecoder:
    """Draft text of one reply that re-decodes only the part that may still change.

    The caller says how many leading ids are final (``stable``); the text of the longest final
    prefix that ends on a whole UTF-8 character is kept, the rest is decoded per call (by a
    lookup per token when no character spans two tokens, else by ``decode_draft``). The
    result always equals ``decode_draft(tok, ids, mask_id, placeholder)``.
    """

    def __init__(self, tok: PreTrainedTokenizerFast, mask_id: int, placeholder: str) -> None:
        self._tok = tok
        self._mask_id = mask_id
        self._placeholder = placeholder
        self._table, self._special = _token_table(tok)
        self._pieces = _PIECES.setdefault(tok, {})
        self._cut = 0
        self._text = ""
        self._spans: list[TokenSpan] = []

    def _bytes(self, token: int) -> bytes:
        return self._table[token] if 0 <= token < len(self._table) else _REPLACEMENT

    def _clean(self, ids: Sequence[int], cut: int) -> bool:
        """True when decoding ``ids[:cut]`` leaves no bytes of an unfinished character."""
        data = b""
        i = cut - 1
        # A pending sequence is at most 3 bytes after its lead byte: 4 bytes back suffice.
        while i >= 0 and len(data) < 4:
            token = ids[i]
            if token == self._mask_id or token in self._special:
                break  # decode_draft restarts its UTF-8 decoder there
            data = self._bytes(token) + data
            i -= 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder.decode(data)
        return decoder.getstate()[0] == b""

    def _piece(self, token: int) -> str | None:
        if token in self._special:
            return ""  # decode_draft skips special tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(self._bytes(token))
        piece = text if decoder.getstate()[0] == b"" else None
        self._pieces[token] = piece
        return piece

    def _decode_from(self, ids: Sequence[int], offset: int) -> DraftText:
        """``decode_draft(ids)`` with every span shifted by ``offset``."""
        pieces, mask_id, placeholder = self._pieces, self._mask_id, self._placeholder
        parts: list[str] = []
        spans: list[TokenSpan] = []
        pos = offset
        for token in ids:
            if token == mask_id:
                piece, masked = placeholder, True
            else:
                piece_or_none = pieces[token] if token in pieces else self._piece(token)
                if piece_or_none is None:  # a character spans tokens: the general decoder
                    part = decode_draft(self._tok, ids, mask_id, placeholder)
                    shifted = [
                        TokenSpan(s.start + offset, s.end + offset, s.masked) for s in part.spans
                    ]
                    return DraftText(part.text, shifted)
                piece, masked = piece_or_none, False
            end = pos + len(piece)
            parts.append(piece)
            spans.append(TokenSpan(pos, end, masked))
            pos = end
        return DraftText("".join(parts), spans)

    def _advance(self, ids: Sequence[int], stable: int) -> None:
        for cut in range(stable, max(self._cut, stable - 8), -1):
            if self._clean(ids, cut):
                part = self._decode_from(ids[self._cut : cut], len(self._text))
                self._spans.extend(part.spans)
                self._text += part.text
                self._cut = cut
                return

    def decode(self, ids: Sequence[int], stable: int) -> DraftText:
        """Text and spans of ``ids``, of which the first ``stable`` never change again."""
        if stable > self._cut:
            self._advance(ids, stable)
        tail = self._decode_from(ids[self._cut :], len(self._text))
        return DraftText(self._text + tail.text, self._spans + tail.spans)


# --------------------------------------------------------------------------------------------
# KV cache pool and batch assembly
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheWrite:
    """Append output positions ``start:start+count`` of batch row ``row`` to cache row ``row``."""

    row: int
    start: int
    count: int
    reset: bool = False  # empty the row first


class KVPool:
    """Every active request's cache as one row of per-layer tensors ``[rows, H, capacity, D]``.

    Batch row ``i`` is cache row ``i``, so a forward reads the pool through a view (no
    per-step pad-stacking copy) and new K/V are scattered in with one indexed copy per layer.
    Slots past a row's length are stale or zero, never NaN, and the masks hide them. Capacity
    grows by doubling; :meth:`release` drops the memory when the engine is idle.
    """

    def __init__(self, rows: int, limit: int | None = None) -> None:
        self.rows = rows
        self.limit = limit  # most positions a row can ever need (the model context)
        self.lengths = [0] * rows
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []

    @property
    def capacity(self) -> int:
        """Positions per row currently allocated."""
        return int(self._k[0].shape[2]) if self._k else 0

    def view(self, n_rows: int, length: int, first_row: int = 0) -> KV | None:
        """Rows ``first_row:first_row + n_rows``, positions ``:length`` (None if nothing cached)."""
        if length == 0 or not self._k:
            return None
        rows = slice(first_row, first_row + n_rows)
        return [
            (k[rows, :, :length], v[rows, :, :length])
            for k, v in zip(self._k, self._v, strict=True)
        ]

    def _reserve(self, like: KV, needed: int) -> None:
        if self._k and needed <= self.capacity:
            return
        k0 = like[0][0]
        capacity = max(2 * self.capacity, -(-needed // 64) * 64)
        if self.limit is not None:
            capacity = max(needed, min(capacity, self.limit))
        shape = (self.rows, int(k0.shape[1]), capacity, int(k0.shape[3]))
        # Zeros, not empty: masked slots still enter the attention matmul, and 0 * NaN = NaN.
        new_k = [torch.zeros(shape, dtype=k.dtype, device=k.device) for k, _ in like]
        new_v = [torch.zeros(shape, dtype=v.dtype, device=v.device) for _, v in like]
        old = self.capacity
        if old:
            for dst, src in zip(new_k + new_v, self._k + self._v, strict=True):
                dst[:, :, :old] = src
        self._k, self._v = new_k, new_v

    def write(self, new_kv: KV, writes: Sequence[CacheWrite], first_row: int = 0) -> None:
        """Apply ``writes`` from a forward's ``new_key_values`` (batch row = cache row - first)."""
        for w in writes:
            if w.reset:
                self.lengths[w.row] = 0
        writes = [w for w in writes if w.count > 0]
        if not writes:
            return
        self._reserve(new_kv, max(self.lengths[w.row] + w.count for w in writes))
        rows: list[int] = []
        dst: list[int] = []
        src: list[int] = []
        for w in writes:
            base = self.lengths[w.row]
            rows.extend([w.row] * w.count)
            dst.extend(range(base, base + w.count))
            src.extend(range(w.start, w.start + w.count))
            self.lengths[w.row] += w.count
        device = self._k[0].device
        r, d, s = (torch.tensor(x, dtype=torch.long, device=device) for x in (rows, dst, src))
        b = r - first_row
        for (k, v), (nk, nv) in zip(zip(self._k, self._v, strict=True), new_kv, strict=True):
            k[r, :, d] = nk[b, :, s].to(k.dtype)
            v[r, :, d] = nv[b, :, s].to(v.dtype)

    def move(self, src: int, dst: int) -> None:
        """Move row ``src`` to row ``dst`` (keeps rows compact when a request leaves)."""
        n = self.lengths[src]
        if n and self._k:
            for t in self._k + self._v:
                t[dst, :, :n] = t[src, :, :n]
        self.lengths[dst], self.lengths[src] = n, 0

    def read(self, row: int) -> KV:
        """A copy of row ``row``'s cache, ``[1, H, length, D]`` per layer."""
        n = self.lengths[row]
        return [
            (k[row : row + 1, :, :n].clone(), v[row : row + 1, :, :n].clone())
            for k, v in zip(self._k, self._v, strict=True)
        ]

    def load(self, row: int, kv: KV, length: int) -> None:
        """Make the first ``length`` positions of ``kv`` row ``row``'s whole cache."""
        self._reserve(kv, length)
        for (k, v), (saved_k, saved_v) in zip(zip(self._k, self._v, strict=True), kv, strict=True):
            k[row, :, :length] = saved_k[0, :, :length].to(k.dtype)
            v[row, :, :length] = saved_v[0, :, :length].to(v.dtype)
        self.lengths[row] = length

    def swap(self, a: int, b: int) -> None:
        """Exchange rows ``a`` and ``b`` (the batch is reordered so like rows sit together)."""
        na, nb = self.lengths[a], self.lengths[b]
        if self._k and (na or nb):
            for t in self._k + self._v:
                saved = t[a, :, :na].clone()
                t[a, :, :nb] = t[b, :, :nb]
                t[b, :, :na] = saved
        self.lengths[a], self.lengths[b] = nb, na

    def clear(self, row: int) -> None:
        """Forget row ``row``'s cache."""
        self.lengths[row] = 0

    def release(self) -> None:
        """Free all memory (only when no row is in use)."""
        self._k, self._v = [], []
        self.lengths = [0] * self.rows


class PrefixStore:
    """Causal K/V of recently finished requests, reused by requests whose prompt extends one.

    An agent's second round (after a tool) sends the first round's prompt again with the
    tool call and result appended; the causal K/V of those leading tokens is the same
    whatever follows, so a new request copies it into its cache row and prefills only the
    rest. Entries are matched on the longest common token prefix and evicted oldest first.
    """

    def __init__(self, capacity: int = 32, min_tokens: int = 16) -> None:
        self.capacity = capacity
        self.min_tokens = min_tokens  # shorter matches are not worth a copy
        self._entries: deque[tuple[torch.Tensor, KV]] = deque()

    def put(self, tokens: torch.Tensor, kv: KV) -> None:
        if int(tokens.shape[0]) < self.min_tokens:
            return
        self._entries.append((tokens, kv))
        while len(self._entries) > self.capacity:
            self._entries.popleft()

    def match(self, prompt: torch.Tensor) -> tuple[int, KV | None]:
        """The longest reusable prefix of ``prompt`` (leaving its last token to compute)."""
        best, found = 0, None
        limit = int(prompt.shape[0]) - 1
        for tokens, kv in self._entries:
            n = min(limit, int(tokens.shape[0]))
            if n <= best:
                continue
            differs = (tokens[:n] != prompt[:n]).nonzero()
            common = int(differs[0, 0]) if differs.numel() else n
            if common > best:
                best, found = common, kv
        return (best, found) if best >= self.min_tokens else (0, None)


@dataclass
class Query:
    """One request's rows in the next forward pass."""

    tokens: torch.Tensor  # [T] long on the model device
    start: int  # absolute position of tokens[0]; positions are contiguous
    cache_len: int  # leading slots of this request's cache row that every row attends to
    # Key j is visible to query i iff ranks[j] <= ranks[i]; None = all equal (full attention).
    ranks: torch.Tensor | None
    # The first position whose logits ``consume`` reads; it gets the logits from there on
    # (a prompt's prefill needs only the last ones: the output projection is not free).
    logits_from: int = 0


@dataclass
class Batch:
    """Inputs of one forward pass."""

    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor | None  # [B, T]; None when every row starts at 0 (plain call)
    attention_mask: torch.Tensor | None  # [B, 1, T, S + T]; None = full attention, no padding
    past: KV | None
    lengths: list[int]  # real query rows per batch row
    # Positions whose logits the model returns, [B, K] (None: all); ``logit_rows`` per batch
    # row: how many of the K are that query's (from its ``logits_from`` to its end).
    logits_index: torch.Tensor | None = None
    logit_rows: list[int] = field(default_factory=list)


class BatchBuilder:
    """Right-pads query rows, views the cache pool and builds each row's boolean mask."""

    def __init__(self, device: torch.device, pad_id: int) -> None:
        self.device = device
        self.pad_id = pad_id
        self._arange = torch.arange(0, device=device)

    def _range(self, n: int) -> torch.Tensor:
        if self._arange.shape[0] < n:
            self._arange = torch.arange(max(n, 2 * self._arange.shape[0]), device=self.device)
        return self._arange[:n]

    def _logits_index(
        self, queries: Sequence[Query], lengths: list[int], t: int
    ) -> tuple[torch.Tensor | None, list[int]]:
        starts = [q.logits_from for q in queries]
        rows = [n - f for n, f in zip(lengths, starts, strict=True)]
        if not any(starts):
            return None, rows
        k = max(rows)
        offsets = torch.tensor(starts, device=self.device)[:, None]
        return (offsets + self._range(k)[None, :]).clamp(max=t - 1), rows

    def build(self, queries: Sequence[Query], pool: KVPool, first_row: int = 0) -> Batch:
        """Stack ``queries`` (batch row i = cache row first_row + i) into one forward's inputs."""
        lengths = [int(q.tokens.shape[0]) for q in queries]
        b, t = len(queries), max(lengths)
        s = max(q.cache_len for q in queries)
        index, logit_rows = self._logits_index(queries, lengths, t)
        if s == 0 and all(
            q.ranks is None and q.start == 0 and n == t
            for q, n in zip(queries, lengths, strict=True)
        ):
            # Full attention with nothing to hide: the plain call LLaDA's generate() makes.
            ids = queries[0].tokens[None] if b == 1 else torch.stack([q.tokens for q in queries])
            return Batch(ids, None, None, None, lengths, index, logit_rows)
        ids = torch.full((b, t), self.pad_id, dtype=torch.long, device=self.device)
        pos = torch.zeros((b, t), dtype=torch.long, device=self.device)
        q_rank = torch.full((b, t), -1, dtype=torch.long, device=self.device)
        k_rank = torch.full((b, t), t + 1, dtype=torch.long, device=self.device)
        span = self._range(t)
        for i, (q, n) in enumerate(zip(queries, lengths, strict=True)):
            ids[i, :n] = q.tokens
            pos[i, :n] = span[:n] + q.start
            if q.ranks is None:
                q_rank[i, :n] = 0
                k_rank[i, :n] = 0
            else:
                q_rank[i, :n] = q.ranks
                k_rank[i, :n] = q.ranks
        # Padded query rows (rank -1) see nothing; the model lets them attend to themselves.
        mask = k_rank[:, None, :] <= q_rank[:, :, None]
        if s:
            cached = torch.tensor([q.cache_len for q in queries], device=self.device)
            valid = self._range(s)[None, :] < cached[:, None]
            mask = torch.cat([valid[:, None, :] & (q_rank >= 0)[:, :, None], mask], dim=-1)
        return Batch(
            ids, pos, mask[:, None], pool.view(b, s, first_row), lengths, index, logit_rows
        )


# What a model call costs beyond its positions, in padded positions: kernel launches and
# per-layer Python for a small model (measured on the bundled model, 2-core CPU: one row of
# 16 positions costs about what 30 extra padded positions do in a batch of 16).
FORWARD_OVERHEAD = 64


def plan_forwards(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` row ranges, one forward each, for rows sorted by length.

    A forward pads its rows to the longest, so rows of 8 positions (a decoding step) next to
    one of 16 (a block finished: its tokens enter the cache) or 250 (a new prompt) would all
    cost the longest. Splitting costs a call each; the plan minimises padded positions plus
    ``FORWARD_OVERHEAD`` per call, over splits between runs of equal length.
    """
    if list(lengths) != sorted(lengths):
        raise ValueError("plan_forwards needs rows sorted by length")
    runs: list[tuple[int, int]] = []  # (end row, length) of each run of equal lengths
    for row, n in enumerate(lengths):
        if runs and runs[-1][1] == n:
            runs[-1] = (row + 1, n)
        else:
            runs.append((row + 1, n))
    best: list[tuple[float, list[tuple[int, int]]]] = [(0.0, [])]
    for i in range(1, len(runs) + 1):
        end, longest = runs[i - 1]
        options = []
        for j in range(i):
            start = runs[j - 1][0] if j else 0
            cost = best[j][0] + (end - start) * longest + FORWARD_OVERHEAD
            options.append((cost, [*best[j][1], (start, end)]))
        best.append(min(options, key=lambda option: option[0]))
    return best[-1][1]


def sort_rows(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """Row swaps that sort rows by length, moving as few rows as possible.

    Rows of equal length are interchangeable, so a row stays where its length already fits;
    each swap copies two cache rows, and most steps need none or one.
    """
    now = list(lengths)
    wanted = sorted(now)
    swaps: list[tuple[int, int]] = []
    for target in range(len(now)):
        if now[target] == wanted[target]:
            continue
        candidates = [j for j in range(target + 1, len(now)) if now[j] == wanted[target]]
        # Prefer a row that is out of place itself: one swap then fixes two positions.
        misplaced = [j for j in candidates if now[j] != wanted[j]]
        other = (misplaced or candidates)[0]
        swaps.append((target, other))
        now[target], now[other] = now[other], now[target]
    return swaps


@functools.lru_cache(maxsize=512)
def _causal_ranks(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=512)
def _prefix_ranks(pending: int, block: int, device: torch.device) -> torch.Tensor:
    """Pending rows causal (0..n-1); block rows all rank n: they see pending and each other."""
    return torch.cat(
        [torch.arange(pending, device=device), torch.full((block,), pending, device=device)]
    )


# --------------------------------------------------------------------------------------------
# Per-request decoding state, one class per mode / pattern
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What request states need to know about the model."""

    mask_id: int
    end_id: int | None
    fill_id: int | None
    vocab_size: int
    context: int | None
    device: torch.device
    default_attention: str


class RowCache:
    """A request's handle on its cache row for the step being consumed."""

    def __init__(self, row: int, writes: list[CacheWrite]) -> None:
        self._row = row
        self._writes = writes

    def keep(self, start: int, count: int) -> None:
        """Append this step's K/V of query rows ``start:start+count`` to the cache."""
        if count > 0:
            self._writes.append(CacheWrite(self._row, start, count))

    def replace(self, start: int, count: int) -> None:
        """Make query rows ``start:start+count`` the whole cache."""
        self._writes.append(CacheWrite(self._row, start, count, reset=True))


@dataclass(frozen=True)
class _DraftUpdate:
    """A :class:`Draft` before its text exists (the scheduler thread makes these)."""

    step: int
    token_ids: list[int]
    stable: int  # leading token_ids that never change again
    committed: list[int]
    revised: list[int]
    block: int


@dataclass(frozen=True)
class _FinalUpdate:
    """A :class:`Final` before its text exists."""

    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None


Update = _DraftUpdate | _FinalUpdate


@dataclass(eq=False)  # compared and hashed by identity: an id may be reused later
class _Handle:
    """Where a request's events go; renders their text (scheduler thread only)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]
    submitted: float
    attention: str
    decoder: DraftDecoder

    def render(self, update: Update) -> Event:
        """The public event for ``update`` (called in step order)."""
        rid = self.request.request_id
        if isinstance(update, _FinalUpdate):
            ids = update.token_ids
            text = self.decoder.decode(ids, len(ids)).text
            return Final(rid, ids, text, update.finish_reason, update.usage, update.error)
        draft = self.decoder.decode(update.token_ids, update.stable)
        return Draft(
            rid,
            update.step,
            update.token_ids,
            draft.text,
            draft.spans,
            update.committed,
            update.revised,
            update.block,
        )


class CausalRow:
    """A request whose cache row holds the causal K/V of prompt + reply tokens fed so far.

    Such a row can start from a stored prefix (:class:`PrefixStore`) and be stored in turn.
    """

    prompt: torch.Tensor
    reply: list[int]
    pending: torch.Tensor  # tokens not in the cache yet (prefilled with the next step)
    cached: int

    def start_after(self, reused: int) -> None:
        """The first ``reused`` prompt tokens are in the cache row already (a prefix hit)."""
        self.cached = reused
        self.pending = self.prompt[reused:]

    def cached_tokens(self) -> torch.Tensor:
        """The tokens whose K/V fill the row: the prompt, then the fed reply tokens."""
        if self.cached <= int(self.prompt.shape[0]):
            return self.prompt[: self.cached]
        done = torch.tensor(self.reply, dtype=torch.long, device=self.prompt.device)
        return torch.cat([self.prompt, done])[: self.cached]


class RequestState(ABC):
    """Decoding state of one request; the scheduler calls :meth:`query` then :meth:`consume`."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        self.handle = handle
        self.request = handle.request
        self.policy = handle.request.policy
        self.info = info
        self.stats = stats
        self.prompt = torch.tensor(self.request.prompt_ids, dtype=torch.long, device=info.device)
        self.reply: list[int] = []  # final tokens (finished blocks / accepted tokens)
        self.generator = torch.Generator(device=info.device)
        if self.request.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.request.seed)
        self.steps = 0
        self.forward_passes = 0
        self.drafts = 0
        self.done = False

    @abstractmethod
    def query(self) -> Query:
        """The rows this request adds to the next forward."""

    @abstractmethod
    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        """Apply the forward's logits (``[T - logits_from, V]``: this request's rows from its
        query's ``logits_from`` on); return its events."""

    # --- shared helpers -----------------------------------------------------------------

    def _new_block(self, length: int) -> BlockState:
        policy, info = self.policy, self.info
        plen = len(self.request.prompt_ids)
        return BlockState(
            policy,
            length,
            info.mask_id,
            end_id=info.end_id if policy.early_stop else None,
            fill_id=info.fill_id,
            offset=plen + len(self.reply),
            seq_len=plen + policy.max_new_tokens,
            device=info.device,
        )

    def _choose(self, logits: torch.Tensor) -> list[int]:
        """The policy's token chooser on rows ``[k, V]`` (autoregressive sampling)."""
        mask_id = self.info.mask_id
        if self.policy.forbid_mask_token and 0 <= mask_id < logits.shape[-1]:
            logits = logits.clone()
            logits[:, mask_id] = float("-inf")
        started = time.perf_counter()
        chosen = self.policy.chooser.choose(logits, TorchRandom(self.generator))
        self.stats.policy_seconds += time.perf_counter() - started
        tokens: list[int] = chosen.tolist()
        return tokens

    def _draft(
        self,
        token_ids: list[int],
        stable: int,
        committed: list[int],
        revised: list[int],
        block: int,
    ) -> _DraftUpdate:
        self.drafts += 1
        return _DraftUpdate(self.drafts, token_ids, stable, committed, revised, block)

    def final(self, reason: FinishReason, error: str | None = None) -> _FinalUpdate:
        """Finish now with the reply so far."""
        self.done = True
        usage = Usage(
            steps=self.steps,
            forward_passes=self.forward_passes,
            tokens=len(self.reply),
            milliseconds=(time.perf_counter() - self.handle.submitted) * 1000.0,
        )
        return _FinalUpdate(list(self.reply), reason, usage, error)

    def _step_block(
        self, block: BlockState, block_logits: torch.Tensor, index: int
    ) -> tuple[StepResult, _DraftUpdate]:
        """One policy step on ``block`` and the Draft showing it after the finished reply."""
        started = time.perf_counter()
        result = block.step(block_logits, generator=self.generator)
        self.stats.policy_seconds += time.perf_counter() - started
        self.steps += 1
        start = len(self.reply)
        draft = self._draft(
            self.reply + block.x.tolist(),
            start,
            [start + j for j in result.committed],
            [start + j for j in result.revised],
            index,
        )
        return result, draft


class _BlockDiffusion(RequestState):
    """Diffusion over the policy's blocks; subclasses say how a step's rows are built."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.block_lengths = self.policy.block_lengths()
        self.block_index = 0
        self.block = self._new_block(self.block_lengths[0])

    def _advance(self, block_logits: torch.Tensor) -> list[Update]:
        block = self.block
        result, draft = self._step_block(block, block_logits, self.block_index)
        self._stepped(block)
        events: list[Update] = [draft]
        if not block.done:
            return events
        tokens = block.x.tolist()
        if result.reply_done and block.end_index is not None:
            self.reply.extend(tokens[: block.end_index])
            events.append(self.final("end"))
            return events
        self.reply.extend(tokens)
        self.block_index += 1
        if self.block_index >= len(self.block_lengths):
            events.append(self.final("length"))
            return events
        self._block_finished(block)
        self.block = self._new_block(self.block_lengths[self.block_index])
        return events

    def _stepped(self, block: BlockState) -> None:
        """Hook: ``block`` just took a step."""

    def _block_finished(self, block: BlockState) -> None:
        """Hook: ``block`` is final and another block follows."""


class PrefixCausalState(CausalRow, _BlockDiffusion):
    """Exact causal cache of prompt + finished blocks; the block attends bidirectionally."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0

    def query(self) -> Query:
        n, device = int(self.pending.shape[0]), self.info.device
        tokens = torch.cat([self.pending, self.block.x]) if n else self.block.x
        ranks = _prefix_ranks(n, self.block.block_len, device)
        return Query(tokens, self.cached, self.cached, ranks, logits_from=n)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        n = int(self.pending.shape[0])
        cache.keep(0, n)
        self.cached += n
        self.pending = self.prompt[:0]
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def _block_finished(self, block: BlockState) -> None:
        self.pending = block.x.clone()


class PrefixCausalNoCacheState(_BlockDiffusion):
    """The prefix-causal pattern recomputed from scratch at every step (no cache)."""

    def query(self) -> Query:
        done = torch.tensor(self.reply, dtype=torch.long, device=self.info.device)
        prefix = torch.cat([self.prompt, done]) if self.reply else self.prompt
        n = int(prefix.shape[0])
        tokens = torch.cat([prefix, self.block.x])
        ranks = _prefix_ranks(n, self.block.block_len, self.info.device)
        return Query(tokens, 0, 0, ranks, logits_from=n)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])


class BidirectionalState(_BlockDiffusion):
    """No cache: prompt + every block (future ones masked) with full attention each step."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        masks = torch.full(
            (self.policy.max_new_tokens,), info.mask_id, dtype=torch.long, device=info.device
        )
        self.canvas = torch.cat([self.prompt, masks])

    @property
    def _offset(self) -> int:
        return int(self.prompt.shape[0]) + len(self.reply)

    def query(self) -> Query:
        return Query(self.canvas, 0, 0, None, logits_from=self._offset)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def _stepped(self, block: BlockState) -> None:
        self.canvas[self._offset : self._offset + block.block_len] = block.x


class PrefixCacheState(BidirectionalState):
    """APPROXIMATE (Fast-dLLM prefix cache): prefix K/V refreshed only at each block's start."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.refresh = True  # next step runs the whole sequence and re-caches the prefix

    def query(self) -> Query:
        offset = self._offset
        if self.refresh:
            return Query(self.canvas, 0, 0, None, logits_from=offset)
        return Query(self.canvas[offset:], offset, offset, None)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        if self.refresh:
            cache.replace(0, self._offset)
            self.refresh = False
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def _block_finished(self, block: BlockState) -> None:
        self.refresh = True


class AutoregressiveState(CausalRow, RequestState):
    """Causal decoding, one token per forward; the first forward prefills the prompt."""

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0

    def query(self) -> Query:
        n = int(self.pending.shape[0])
        ranks = _causal_ranks(n, self.info.device)
        return Query(self.pending, self.cached, self.cached, ranks, logits_from=n - 1)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        n = int(self.pending.shape[0])
        cache.keep(0, n)
        self.cached += n
        token = self._choose(logits[:1])[0]
        self.steps += 1
        self.forward_passes += 1
        self.reply.append(token)
        position = len(self.reply) - 1
        events: list[Update] = [
            self._draft(list(self.reply), len(self.reply), [position], [], position)
        ]
        if self.policy.early_stop and token == self.info.end_id:
            self.reply.pop()
            events.append(self.final("end"))
        elif len(self.reply) >= self.policy.max_new_tokens:
            events.append(self.final("length"))
        else:
            self.pending = torch.tensor([token], dtype=torch.long, device=self.info.device)
        return events


class SpeculativeState(RequestState):
    """Self-speculation: prefix-causal diffusion drafts a block, one causal pass verifies it.

    The verifier's target for the block's first position comes from the last pending row of
    the first draft step (those rows attend causally, so it is the autoregressive prediction);
    the verify pass over the drafted block gives the targets for the rest. Every emitted token
    is a target drawn by the policy's chooser given the emitted prefix, so the output follows
    the autoregressive sampler exactly (token for token at temperature 0).
    """

    def __init__(self, handle: _Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0
        self.round = 0
        self.verifying = False
        self.first_target = -1
        self.block = self._new_block(self._draft_len())
        self.accepted = 0  # drafted tokens accepted, over all rounds

    def _draft_len(self) -> int:
        return min(self.policy.block_size, self.policy.max_new_tokens - len(self.reply))

    def query(self) -> Query:
        device, block = self.info.device, self.block
        if self.verifying:
            return Query(block.x, self.cached, self.cached, _causal_ranks(block.block_len, device))
        n = int(self.pending.shape[0])
        tokens = torch.cat([self.pending, block.x]) if n else block.x
        ranks = _prefix_ranks(n, block.block_len, device)
        # The last pending position's logits (the verifier's first target), then the block's.
        return Query(tokens, self.cached, self.cached, ranks, logits_from=max(0, n - 1))

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        if self.verifying:
            return self._verify(logits, cache)
        n = int(self.pending.shape[0])
        if n:
            cache.keep(0, n)
            self.cached += n
            self.first_target = self._choose(logits[:1])[0]
            self.pending = self.prompt[:0]
            logits = logits[1:]
        _, draft = self._step_block(self.block, logits[: self.block.block_len], self.round)
        self.verifying = self.block.done
        return [draft]

    def _verify(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        drafted = self.block.x.tolist()
        length = len(drafted)
        targets = [self.first_target, *self._choose(logits[:length])]
        k = 0
        while k < length and drafted[k] == targets[k]:
            k += 1
        self.accepted += k
        cache.keep(0, k)  # causal K/V of the accepted drafted tokens
        self.cached += k
        start = len(self.reply)
        self.reply.extend(targets[: k + 1])
        events: list[Update] = [
            self._draft(
                list(self.reply), len(self.reply), list(range(start, start + k + 1)), [], self.round
            )
        ]
        end_id = self.info.end_id
        new = targets[: k + 1]
        if self.policy.early_stop and end_id in new:
            del self.reply[start + new.index(end_id) :]
            events.append(self.final("end"))
        elif len(self.reply) >= self.policy.max_new_tokens:
            del self.reply[self.policy.max_new_tokens :]
            events.append(self.final("length"))
        else:
            self.pending = torch.tensor([targets[k]], dtype=torch.long, device=self.info.device)
            self.round += 1
            self.verifying = False
            self.block = self._new_block(self._draft_len())
        return events


_STATES: dict[tuple[str, str], type[RequestState]] = {
    ("diffusion", "prefix-causal"): PrefixCausalState,
    ("diffusion", "prefix-causal-nocache"): PrefixCausalNoCacheState,
    ("diffusion", "bidirectional"): BidirectionalState,
    ("diffusion", "prefix-cache"): PrefixCacheState,
    ("autoregressive", "causal"): AutoregressiveState,
    ("speculative", "prefix-causal"): SpeculativeState,
}


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


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
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else _model_device(model)
        cfg: Any = model.config
        if getattr(cfg, "mask_token_id", None) is None:
            raise ValueError("model.config.mask_token_id is not set")
        # Remote-code models accept only the plain uncached full-attention call.
        self.plain_only = isinstance(model, RemoteCodeModel)
        self.max_batch = 1 if self.plain_only else max_batch
        self.info = ModelInfo(
            mask_id=int(cfg.mask_token_id),
            end_id=None if cfg.eos_token_id is None else int(cfg.eos_token_id),
            fill_id=None if getattr(cfg, "pad_token_id", None) is None else int(cfg.pad_token_id),
            vocab_size=int(cfg.vocab_size),
            context=getattr(cfg, "max_position_embeddings", None),
            device=self.device,
            default_attention="prefix-causal"
            if getattr(cfg, "model_type", "") == "dlm"
            else "bidirectional",
        )
        self.mask_placeholder = mask_placeholder
        pad = self.info.fill_id if self.info.fill_id is not None else self.info.mask_id
        self._builder = BatchBuilder(self.device, pad)
        self._pool = KVPool(self.max_batch, self.info.context)
        self._prefixes = PrefixStore()
        self._stats = EngineStats()
        self._stats_lock = threading.Lock()  # the step log is copied from other threads
        self._cv = threading.Condition()
        self._inbox: deque[_Handle] = deque()
        self._cancels: set[_Handle] = set()
        self._handles: dict[str, _Handle] = {}  # queued or running, by id; guarded by _cv
        self._closing = False
        self._waiting: deque[_Handle] = deque()  # scheduler thread only
        self._active: list[RequestState] = []  # scheduler thread only; index = batch row
        self._thread = threading.Thread(target=self._run, name="dlm-engine", daemon=True)
        self._thread.start()

    # --- public API --------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Validate and enqueue ``request``; returns its event stream (ValueError if invalid)."""
        attention = self._validate(request)
        decoder = DraftDecoder(self.tokenizer, self.info.mask_id, self.mask_placeholder)
        handle = _Handle(
            request,
            asyncio.get_running_loop(),
            asyncio.Queue(),
            time.perf_counter(),
            attention,
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

    def _abandon(self, handle: _Handle) -> None:
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

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._stats_lock:
            self._stats.reset()

    # --- validation --------------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> str:
        """Raise ValueError naming what is wrong; return the resolved attention pattern."""
        if not isinstance(request, GenerationRequest):
            raise ValueError(f"expected a GenerationRequest, got {type(request).__name__}")
        if not isinstance(request.request_id, str) or not request.request_id:
            raise ValueError("request_id must be a non-empty string")
        policy = request.policy
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
        if request.mode not in MODES:
            raise ValueError(f"unknown mode {request.mode!r}; choose one of {list(MODES)}")
        if request.mode == "diffusion":
            attention = (
                self.info.default_attention if request.attention is None else request.attention
            )
            if attention not in ATTENTIONS:
                raise ValueError(
                    f"unknown attention {attention!r}; choose one of {list(ATTENTIONS)}"
                )
        else:
            attention = "causal" if request.mode == "autoregressive" else "prefix-causal"
            if request.attention not in (None, attention):
                raise ValueError(
                    f"mode {request.mode!r} always uses {attention!r} attention, "
                    f"got {request.attention!r}"
                )
        if self.plain_only and (request.mode, attention) != ("diffusion", "bidirectional"):
            raise ValueError(
                "this remote-code model supports only mode 'diffusion' "
                "with 'bidirectional' attention"
            )
        context, new = self.info.context, policy.max_new_tokens
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
        if policy.early_stop and self.info.end_id is None:
            raise ValueError(
                "the policy stops at the end token but model.config.eos_token_id is None"
            )
        seed = request.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        return attention

    # --- asyncio side ------------------------------------------------------------------------

    async def _events(self, handle: _Handle) -> AsyncIterator[Event]:
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

    def _deliver(self, items: Sequence[tuple[_Handle, Update]]) -> None:
        # Text is rendered here, on the scheduler thread: on the consumer's loop it would hold
        # the GIL while this thread needs it, which costs more than the rendering itself.
        started = time.perf_counter()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        for handle, update in items:
            by_loop.setdefault(handle.loop, []).append((handle.queue, handle.render(update)))
            if isinstance(update, _FinalUpdate):
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
        self, handle: _Handle, reason: FinishReason, error: str | None = None
    ) -> _FinalUpdate:
        elapsed = (time.perf_counter() - handle.submitted) * 1000.0
        return _FinalUpdate([], reason, Usage(0, 0, 0, elapsed), error)

    def _apply_cancels(self, cancels: set[_Handle]) -> None:
        if not cancels:
            return
        out: list[tuple[_Handle, Update]] = []
        for handle in [h for h in self._waiting if h in cancels]:
            self._waiting.remove(handle)
            out.append((handle, self._idle_final(handle, "cancelled")))
        leaving = [i for i, s in enumerate(self._active) if s.handle in cancels]
        out.extend((self._active[i].handle, self._active[i].final("cancelled")) for i in leaving)
        self._remove(leaving)
        self._deliver(out)

    def _admit(self) -> None:
        failed: list[tuple[_Handle, Update]] = []
        while self._waiting and len(self._active) < self.max_batch:
            handle = self._waiting.popleft()
            try:
                state = _STATES[(handle.request.mode, handle.attention)](
                    handle, self.info, self._stats
                )
            except Exception as exc:  # e.g. a policy BlockState rejects
                failed.append((handle, self._idle_final(handle, "error", repr(exc))))
                continue
            self._active.append(state)
            if isinstance(state, CausalRow):
                self._reuse_prefix(len(self._active) - 1, state)
        self._deliver(failed)

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
        stats = self._stats
        started = time.perf_counter()
        active = self._active
        queries = [state.query() for state in active]
        lengths = [int(q.tokens.shape[0]) for q in queries]
        for a, b in sort_rows(lengths):
            active[a], active[b] = active[b], active[a]
            queries[a], queries[b] = queries[b], queries[a]
            self._pool.swap(a, b)
        lengths.sort()
        out_events: list[tuple[_Handle, Update]] = []
        leaving: list[int] = []
        for first, end in plan_forwards(lengths):
            self._forward_rows(first, queries[first:end], out_events, leaving)
        delivering = time.perf_counter()
        self._deliver(out_events)
        delivered = time.perf_counter()
        log = tuple(s.request.request_id for s in active)
        self._remove(leaving)
        with self._stats_lock:
            stats.batches.append(log)
        stats.deliver_seconds += delivered - delivering
        finished = time.perf_counter()
        stats.schedule_seconds += finished - delivered
        stats.busy_seconds += finished - started

    def _forward_rows(
        self,
        first: int,
        queries: Sequence[Query],
        out_events: list[tuple[_Handle, Update]],
        leaving: list[int],
    ) -> None:
        """One forward over active rows ``first:first + len(queries)``; collects their events."""
        stats = self._stats
        started = time.perf_counter()
        states = self._active[first : first + len(queries)]
        batch = self._builder.build(queries, self._pool, first)
        built = time.perf_counter()
        try:
            out: ForwardOutput = self.model(
                input_ids=batch.input_ids,
                position_ids=batch.position_ids,
                attention_mask=batch.attention_mask,
                past_key_values=batch.past,
                logits_index=batch.logits_index,
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # e.g. out of memory: these rows fail, the engine goes on
            out_events.extend((s.handle, s.final("error", repr(exc))) for s in states)
            leaving.extend(range(first, first + len(states)))
            return
        forwarded = time.perf_counter()
        writes: list[CacheWrite] = []
        for offset, (state, n) in enumerate(zip(states, batch.logit_rows, strict=True)):
            row = first + offset
            try:
                produced = state.consume(out.logits[offset, :n], RowCache(row, writes))
            except Exception as exc:
                produced = [state.final("error", repr(exc))]
            out_events.extend((state.handle, event) for event in produced)
            if state.done:
                leaving.append(row)
        consumed = time.perf_counter()
        self._pool.write(out.new_key_values, writes, first)
        stats.forward_passes += 1
        stats.rows += len(queries)
        stats.build_seconds += built - started
        stats.forward_seconds += forwarded - built
        stats.consume_seconds += consumed - forwarded
        stats.schedule_seconds += time.perf_counter() - consumed

    def _shutdown(self, reason: FinishReason, error: str | None = None) -> None:
        out: list[tuple[_Handle, Update]] = [
            (s.handle, s.final(reason, error)) for s in self._active
        ]
        out.extend((h, self._idle_final(h, reason, error)) for h in self._waiting)
        self._active.clear()
        self._waiting.clear()
        self._pool.release()
        self._deliver(out)
