"""The KV cache pool, the cache of finished requests' prefixes, and how query rows are stacked
into forward passes."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from dlm_runtime.attention import KV


@dataclass(frozen=True)
class CacheWrite:
    """Append output positions ``start:start+count`` of batch row ``row`` to cache row ``row``."""

    row: int
    start: int
    count: int
    reset: bool = False  # empty the row first
    # Stage them instead, this many slots after the row's length, without growing it (a
    # block's committed positions, reused by its later steps: BLOCK_CACHE); the row's staged
    # slots are then the ones up to these.
    staged_at: int | None = None


class KVPool:
    """Every active request's cache as one row of per-layer tensors ``[rows, H, capacity, D]``.

    Batch row ``i`` is cache row ``i``, so a forward reads the pool through a view (no
    per-step pad-stacking copy) and new K/V are scattered in with one indexed copy per layer.
    Slots past a row's length are stale or zero, never NaN, and the masks hide them. Capacity
    grows by doubling; :meth:`release` drops the memory when the engine is idle.

    A row may also hold ``staged[row]`` slots right after its length: K/V that its own later
    queries read (they count them in ``cache_len``) but that are not its causal prefix, so
    the next appended write overwrites them and :meth:`read` leaves them out. Moves and swaps
    carry them along; a staged write at offset 0 starts them afresh.
    """

    def __init__(self, rows: int, limit: int | None = None) -> None:
        self.rows = rows
        self.limit = limit  # most positions a row can ever need (the model context)
        self.lengths = [0] * rows
        self.staged = [0] * rows
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
                self.staged[w.row] = 0
        writes = [w for w in writes if w.count > 0]
        if not writes:
            return
        bases: list[int] = []
        for w in writes:
            if w.staged_at is not None:
                base = self.lengths[w.row] + w.staged_at
                self.staged[w.row] = w.staged_at + w.count
            else:  # the row's causal prefix grows over whatever was staged
                base = self.lengths[w.row]
                self.staged[w.row] = 0
                self.lengths[w.row] += w.count
            bases.append(base)
        self._reserve(new_kv, max(base + w.count for base, w in zip(bases, writes, strict=True)))
        if len(writes) == 1 or sum(w.count for w in writes) >= 8 * len(writes):
            # Two slice copies per write and layer (about 80 us a write at the bundled model's
            # shape, one thread) against about 130 us plus 7 us per position for the indexed
            # copy below: slices win for one write (one request) and for long ones (prompts,
            # blocks), the indexed copy for many one-token writes (autoregressive rows).
            layers = list(zip(zip(self._k, self._v, strict=True), new_kv, strict=True))
            for w, base in zip(writes, bases, strict=True):
                row = w.row - first_row
                into, out_of = slice(base, base + w.count), slice(w.start, w.start + w.count)
                for (k, v), (nk, nv) in layers:
                    k[w.row, :, into] = nk[row, :, out_of]
                    v[w.row, :, into] = nv[row, :, out_of]
            return
        rows: list[int] = []
        dst: list[int] = []
        src: list[int] = []
        for w, base in zip(writes, bases, strict=True):
            rows.extend([w.row] * w.count)
            dst.extend(range(base, base + w.count))
            src.extend(range(w.start, w.start + w.count))
        device = self._k[0].device
        r, d, s = (torch.tensor(x, dtype=torch.long, device=device) for x in (rows, dst, src))
        b = r - first_row
        for (k, v), (nk, nv) in zip(zip(self._k, self._v, strict=True), new_kv, strict=True):
            k[r, :, d] = nk[b, :, s].to(k.dtype)
            v[r, :, d] = nv[b, :, s].to(v.dtype)

    def move(self, src: int, dst: int) -> None:
        """Move row ``src`` to row ``dst`` (keeps rows compact when a request leaves)."""
        n = self.lengths[src] + self.staged[src]
        if n and self._k:
            for t in self._k + self._v:
                t[dst, :, :n] = t[src, :, :n]
        self.lengths[dst], self.lengths[src] = self.lengths[src], 0
        self.staged[dst], self.staged[src] = self.staged[src], 0

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
        self.staged[row] = 0

    def swap(self, a: int, b: int) -> None:
        """Exchange rows ``a`` and ``b`` (the batch is reordered so like rows sit together)."""
        na, nb = self.lengths[a] + self.staged[a], self.lengths[b] + self.staged[b]
        if self._k and (na or nb):
            for t in self._k + self._v:
                saved = t[a, :, :na].clone()
                t[a, :, :nb] = t[b, :, :nb]
                t[b, :, :na] = saved
        self.lengths[a], self.lengths[b] = self.lengths[b], self.lengths[a]
        self.staged[a], self.staged[b] = self.staged[b], self.staged[a]

    def clear(self, row: int) -> None:
        """Forget row ``row``'s cache."""
        self.lengths[row] = 0
        self.staged[row] = 0

    def release(self) -> None:
        """Free all memory (only when no row is in use)."""
        self._k, self._v = [], []
        self.lengths = [0] * self.rows
        self.staged = [0] * self.rows


class CausalPrefixCache:
    """Causal K/V of recently finished requests, reused by requests whose prompt extends one.

    An agent's second round (after a tool) sends the first round's prompt again with the
    tool call and result appended; the causal K/V of those leading tokens is the same
    whatever follows, so a new request copies it into its cache row and prefills only the
    rest. Entries are matched on the longest common token prefix and evicted oldest first.
    (Exact, unlike the approximate ``prefix-cache`` pattern, which caches within one request.)
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
    # Classifier-free guidance: the unconditional tokens (prompt masked), run as an extra row
    # of the same shape; its logits go to ``consume`` beside the row's own.
    guidance: torch.Tensor | None = None
    # Absolute position of each token, [T], where they are not ``start, start + 1, ...`` (a
    # block's still-masked positions between committed ones: BLOCK_CACHE).
    positions: torch.Tensor | None = None


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

    def _stack(self, rows: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
        """``rows`` as ``[B, T]``, right-padded with ``pad`` (one op; one row: a view)."""
        if len(rows) == 1:
            return rows[0][None]
        return pad_sequence(list(rows), batch_first=True, padding_value=pad)

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
            q.ranks is None and q.start == 0 and q.positions is None and n == t
            for q, n in zip(queries, lengths, strict=True)
        ):
            # Full attention with nothing to hide: the plain call LLaDA's generate() makes.
            ids = queries[0].tokens[None] if b == 1 else torch.stack([q.tokens for q in queries])
            return Batch(ids, None, None, None, lengths, index, logit_rows)
        # One tensor op per input over the whole batch, not a few per row: at the bundled
        # model's size each op costs about as much as a layer's matmul, and a step of 8 rows
        # built row by row spent more time here than in the policy.
        span = self._range(t)
        padded = any(n != t for n in lengths)
        real = (
            span[None, :] < torch.tensor(lengths, device=self.device)[:, None] if padded else None
        )
        ids = self._stack([q.tokens for q in queries], self.pad_id)
        if all(q.positions is None for q in queries):
            starts = torch.tensor([q.start for q in queries], device=self.device)
            pos = span[None, :] + starts[:, None]
            if real is not None:
                pos = pos * real  # padding rows at position 0
        else:
            pos = self._stack(
                [
                    span[:n] + q.start if q.positions is None else q.positions
                    for q, n in zip(queries, lengths, strict=True)
                ],
                0,
            )
        ranks = [
            full_ranks(n, self.device) if q.ranks is None else q.ranks
            for q, n in zip(queries, lengths, strict=True)
        ]
        q_rank = self._stack(ranks, -1)
        k_rank = q_rank if real is None else self._stack(ranks, t + 1)
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
# per-layer Python for a small model (measured: docs/benchmarks.md, "Decoding settings and why").
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


def query_shape(query: Query) -> tuple[int, int, bool, int]:
    """What decides a row's arithmetic in a forward besides its own values: its length, its
    cache length, whether it is the plain call (no mask) and where its logits start."""
    plain = (
        query.ranks is None
        and query.start == 0
        and query.cache_len == 0
        and query.positions is None
    )
    return (int(query.tokens.shape[0]), query.cache_len, plain, query.logits_from)


def plan_exact_forwards(queries: Sequence[Query]) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` row ranges of identical :func:`query_shape`, one forward each.

    In bfloat16 a row's logits move by a unit in the last place when it shares a forward with
    longer rows (its padding changes the kernels' blocking and the attention's reduction
    length), so a batched request would decode differently from the same request alone.
    Rows that share a forward here have the same length, cache length and mask kind as they
    would alone: no padding, and the same kernels.
    """
    plan: list[tuple[int, int]] = []
    for row, q in enumerate(queries):
        if plan and query_shape(queries[plan[-1][0]]) == query_shape(q):
            plan[-1] = (plan[-1][0], row + 1)
        else:
            plan.append((row, row + 1))
    return plan


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
def causal_ranks(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=512)
def full_ranks(n: int, device: torch.device) -> torch.Tensor:
    """Equal ranks: every row sees every other (full attention)."""
    return torch.zeros(n, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=512)
def prefix_ranks(pending: int, block: int, device: torch.device) -> torch.Tensor:
    """Pending rows causal (0..n-1); block rows all rank n: they see pending and each other."""
    return torch.cat(
        [torch.arange(pending, device=device), torch.full((block,), pending, device=device)]
    )
