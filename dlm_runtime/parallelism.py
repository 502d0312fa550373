"""Load-adaptive parallelism: how many positions each row decodes in the next forward.

A diffusion block of ``q`` positions commits several tokens per forward, but a forward over
``rows x q`` positions costs more than one over ``rows x 1``. While rows are few the forward
is latency-bound (its fixed cost dominates) and a full block is nearly free; as rows are
added it becomes compute-bound and the extra positions cost real time. The engine's
throughput with ``rows`` requests decoding blocks of ``q`` is about

    rows * tokens_per_forward(q) / forward_seconds(rows, q)

and :class:`Parallelism` picks, for the rows at hand, the ``q`` that maximises it, from a
forward-cost table measured on the device (:class:`ForwardCost`, made by the engine's
calibration) and commit rates learned from the blocks decoded so far (:class:`CommitRate`).
``q = 1`` means a causal step: one token from the autoregressive logits, which costs one
position instead of a masked position beside the previous token.

Pure logic: no torch, no I/O.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BLOCK_LENGTHS", "CommitRate", "ForwardCost", "Parallelism"]

# Block lengths the engine chooses among (and calibrates): powers of two, as trained.
BLOCK_LENGTHS = (1, 2, 4, 8, 16, 32)
# A cached choice is remade after this many more finished blocks have taught the rates.
RECHOOSE_EVERY = 32


@dataclass(frozen=True)
class ForwardCost:
    """Seconds of one cached forward, measured by (rows, positions per row).

    Between measured row counts the cost is interpolated linearly; beyond the largest it is
    extrapolated in proportion to the rows, the compute-bound limit.
    """

    seconds_by_shape: Mapping[tuple[int, int], float]
    _rows_by_positions: dict[int, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.seconds_by_shape:
            raise ValueError("a forward cost table needs at least one measurement")
        for (rows, positions), seconds in self.seconds_by_shape.items():
            if rows < 1 or positions < 1 or not seconds > 0 or math.isinf(seconds):
                raise ValueError(f"bad forward cost entry ({rows}, {positions}): {seconds}")
        # Row counts measured for each positions value, sorted: looked up at every block start.
        by_positions: dict[int, list[int]] = {}
        for rows, positions in sorted(self.seconds_by_shape):
            by_positions.setdefault(positions, []).append(rows)
        object.__setattr__(self, "_rows_by_positions", by_positions)

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions-per-row values measured."""
        return tuple(self._rows_by_positions)

    def seconds(self, rows: int, positions: int) -> float:
        """Estimated seconds of a forward of ``rows`` rows of ``positions`` positions."""
        measured = self._rows_by_positions.get(positions)
        if not measured:
            raise KeyError(f"no forward cost measured for {positions} positions per row")
        table = {r: self.seconds_by_shape[(r, positions)] for r in measured}
        if rows <= measured[0]:
            return table[measured[0]]
        if rows >= measured[-1]:
            return table[measured[-1]] * rows / measured[-1]
        i = bisect.bisect_left(measured, rows)
        lo, hi = measured[i - 1], measured[i]
        if hi == rows:
            return table[hi]
        share = (rows - lo) / (hi - lo)
        return table[lo] + share * (table[hi] - table[lo])


@dataclass
class CommitRate:
    """Tokens a block of each length commits per forward, learned from finished blocks.

    Until blocks of a length have been seen, its rate is ``prior_share`` of its positions
    (at least one token: a causal step always commits one). Observations outweigh the prior
    after ``prior_weight`` forwards of that length.
    """

    prior_share: float = 0.45
    prior_weight: float = 8.0
    observations: int = 0
    _tokens: dict[int, float] = field(default_factory=dict)
    _forwards: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prior(self, length: int) -> float:
        return max(1.0, self.prior_share * length)

    def observe(self, length: int, tokens: int, forwards: int) -> None:
        """A block of ``length`` positions committed ``tokens`` tokens in ``forwards``."""
        if length < 1 or forwards < 1 or tokens < 0:
            raise ValueError(f"bad observation: length {length}, {tokens} tokens, {forwards}")
        with self._lock:
            self._tokens[length] = self._tokens.get(length, 0.0) + tokens
            self._forwards[length] = self._forwards.get(length, 0.0) + forwards
            self.observations += 1

    def rate(self, length: int) -> float:
        """Expected tokens per forward for a block of ``length`` positions."""
        if length == 1:
            return 1.0
        with self._lock:
            tokens = self._tokens.get(length, 0.0)
            forwards = self._forwards.get(length, 0.0)
        weight = self.prior_weight
        return (weight * self.prior(length) + tokens) / (weight + forwards)


@dataclass
class Parallelism:
    """Chooses each new block's length from the rows the engine is running.

    ``rows`` is set by the scheduler before every step; request states ask
    :meth:`block_length` when they start a block.
    """

    cost: ForwardCost
    rates: CommitRate = field(default_factory=CommitRate)
    rows: int = 1
    # Choices by (rows, longest), with the observation count they were made at: a block
    # starts at every few steps of every row, and the rates move slowly.
    _chosen: dict[tuple[int, int], tuple[int, int]] = field(
        default_factory=dict, init=False, repr=False
    )

    def throughput(self, rows: int, length: int) -> float:
        """Estimated tokens per second with ``rows`` rows decoding blocks of ``length``."""
        return rows * self.rates.rate(length) / self.cost.seconds(rows, length)

    def block_length(self, longest: int, rows: int | None = None) -> int:
        """The block length (at most ``longest``) that maximises throughput at ``rows``
        rows (default: the rows now running); ties go to the longer block (lower latency)."""
        if longest < 1:
            raise ValueError(f"longest must be at least 1, got {longest}")
        rows = max(1, self.rows if rows is None else rows)
        seen = self.rates.observations
        cached = self._chosen.get((rows, longest))
        if cached is not None and seen - cached[1] < RECHOOSE_EVERY:
            return cached[0]
        best = self._best_length(rows, longest)
        self._chosen[(rows, longest)] = (best, seen)
        return best

    def _best_length(self, rows: int, longest: int) -> int:
        choices = [q for q in self.cost.positions if q <= longest]
        if not choices:
            raise ValueError(f"no block length of at most {longest} has a measured cost")
        best, best_rate = choices[0], -1.0
        for q in choices:
            rate = self.throughput(rows, q)
            if rate >= best_rate:
                best, best_rate = q, rate
        return best

    def plan(self, row_counts: Sequence[int], longest: int) -> dict[int, int]:
        """The block length chosen at each row count (for reports)."""
        return {rows: self.block_length(longest, rows) for rows in row_counts}
