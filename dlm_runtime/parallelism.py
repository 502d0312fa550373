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

Self-speculation chooses the same way how many masks each row drafts with
(:meth:`Parallelism.draft_masks`): a steady forward of ``m`` masks holds the last token, the
``m - 1`` tokens the previous forward's masks drafted and the ``m`` masks (``2m`` positions),
and emits one token plus the drafted ones accepted, which :class:`DraftRate` learns; ``m = 0``
is a plain causal step. Only the cost changes with ``m``, never the tokens emitted.

Pure logic: no torch, no I/O.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BLOCK_LENGTHS",
    "CommitRate",
    "DraftRate",
    "ForwardCost",
    "Parallelism",
    "speculative_positions",
]

# Block lengths the engine chooses among (and calibrates): powers of two, as trained.
BLOCK_LENGTHS = (1, 2, 4, 8, 16, 32)
# A cached choice is remade after this many more finished blocks have taught the rates.
RECHOOSE_EVERY = 32
# A speculative row drafts with fewer masks only for this much more estimated throughput
# (divided by the rows in flight).
FEWER_MASKS_MARGIN = 0.1


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

    def monotone(self) -> ForwardCost:
        """This table with every entry lowered to the least cost of any shape measured with
        as many rows and positions or more: a bigger forward never costs less, so an entry
        above that was slowed by something else (a busy core) and the lower figure stands."""
        cached: ForwardCost | None = self.__dict__.get("_monotone")
        if cached is not None:
            return cached
        table = self.seconds_by_shape
        envelope = {
            (rows, positions): min(
                seconds for (r, q), seconds in table.items() if r >= rows and q >= positions
            )
            for rows, positions in table
        }
        result = self if envelope == dict(table) else ForwardCost(envelope)
        object.__setattr__(self, "_monotone", result)
        return result

    def seconds_at(self, rows: int, positions: int) -> float:
        """:meth:`seconds` for any positions per row: interpolated linearly between the
        measured ones, the smallest's cost below them and in proportion beyond the largest."""
        if positions < 1:
            raise ValueError(f"positions must be at least 1, got {positions}")
        measured = sorted(self._rows_by_positions)
        if positions in self._rows_by_positions:
            return self.seconds(rows, positions)
        if positions < measured[0]:
            return self.seconds(rows, measured[0])
        if positions > measured[-1]:
            return self.seconds(rows, measured[-1]) * positions / measured[-1]
        i = bisect.bisect_left(measured, positions)
        lo, hi = measured[i - 1], measured[i]
        share = (positions - lo) / (hi - lo)
        low = self.seconds(rows, lo)
        return low + share * (self.seconds(rows, hi) - low)


@dataclass
class _TokensPerForward:
    """Tokens and forwards tallied by a key (a block length, a mask count), read as tokens per
    forward blended with a prior that counts as ``weight`` forwards. Callers hold their lock."""

    _tokens: dict[int, float] = field(default_factory=dict)
    _forwards: dict[int, float] = field(default_factory=dict)

    def add(self, key: int, tokens: float, forwards: float) -> None:
        self._tokens[key] = self._tokens.get(key, 0.0) + tokens
        self._forwards[key] = self._forwards.get(key, 0.0) + forwards

    def blended(self, key: int, prior: float, weight: float) -> float:
        tokens, forwards = self._tokens.get(key, 0.0), self._forwards.get(key, 0.0)
        return (weight * prior + tokens) / (weight + forwards)


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
    _tally: _TokensPerForward = field(default_factory=_TokensPerForward)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prior(self, length: int) -> float:
        return max(1.0, self.prior_share * length)

    def observe(self, length: int, tokens: int, forwards: int) -> None:
        """A block of ``length`` positions committed ``tokens`` tokens in ``forwards``."""
        if length < 1 or forwards < 1 or tokens < 0:
            raise ValueError(f"bad observation: length {length}, {tokens} tokens, {forwards}")
        with self._lock:
            self._tally.add(length, tokens, forwards)
            self.observations += 1

    def rate(self, length: int) -> float:
        """Expected tokens per forward for a block of ``length`` positions."""
        if length == 1:
            return 1.0
        with self._lock:
            return self._tally.blended(length, self.prior(length), self.prior_weight)


def speculative_positions(masks: int) -> int:
    """Positions per row of a steady speculative forward with ``masks`` masks: the last token,
    the ``masks - 1`` tokens the previous forward's masks drafted, and the masks; one (a
    plain causal step) without masks."""
    if masks < 0:
        raise ValueError(f"masks must be at least 0, got {masks}")
    return 2 * masks if masks else 1


@dataclass
class DraftRate:
    """Tokens a speculative forward emits, by the masks its row drafted with the forward before.

    A forward emits one token plus the drafted tokens kept, so with ``masks`` masks at most
    ``masks`` (its first mask's guess is dropped: the bonus token goes there). Until forwards
    after ``masks`` masks have been seen, the rate is a prior from two learned figures: the
    chance that each offered draft position yields a kept token given the ones before it did
    (the draft stops at a guess below the threshold or at a rejected token), and the share of
    stops that were rejections, after which the next forward has no draft and emits one token.
    Observations of a mask count outweigh its prior after ``prior_weight`` forwards; the two
    figures' own priors count as ``prior_weight`` positions and stops.
    """

    prior_acceptance: float = 0.8
    prior_rejected: float = 0.5
    prior_weight: float = 8.0
    observations: int = 0
    _kept: float = 0.0  # offered positions that yielded a kept token
    _stopped: float = 0.0  # drafts that ended before their offered positions did
    _rejected: float = 0.0  # of those, the ones that ended at a rejected token
    _tally: _TokensPerForward = field(default_factory=_TokensPerForward)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if (
            not 0.0 <= self.prior_acceptance < 1.0
            or not 0.0 <= self.prior_rejected <= 1.0
            or not self.prior_weight > 0
        ):
            raise ValueError(
                f"bad draft rate prior: acceptance {self.prior_acceptance}, rejected "
                f"{self.prior_rejected}, weight {self.prior_weight}"
            )

    def acceptance(self) -> float:
        """The chance that an offered draft position yields a kept token, as learned so far."""
        with self._lock:
            kept, stopped = self._kept, self._stopped
        weight = self.prior_weight
        return min((weight * self.prior_acceptance + kept) / (weight + kept + stopped), 0.999)

    def rejected_share(self) -> float:
        """The share of drafts that stopped early at a rejected token, as learned so far."""
        with self._lock:
            stopped, rejected = self._stopped, self._rejected
        weight = self.prior_weight
        return (weight * self.prior_rejected + rejected) / (weight + stopped)

    def prior(self, masks: int) -> float:
        """Tokens per forward with ``masks`` masks if every offered position were kept with
        :meth:`acceptance` and stops were rejections in :meth:`rejected_share` (1 without a
        draft)."""
        offered = masks - 1
        if offered <= 0:
            return 1.0
        p = self.acceptance()
        kept = p * (1.0 - p**offered) / (1.0 - p)  # expected drafted tokens kept
        draftless = (1.0 - p**offered) * self.rejected_share()  # forwards after a rejection
        return (1.0 + kept + draftless) / (1.0 + draftless)

    def observe(self, masks: int, offered: int, drafted: int, kept: int) -> None:
        """A forward whose row drafted with ``masks`` masks the forward before emitted
        ``kept`` of the ``drafted`` tokens plus one; ``offered``: the positions its draft
        could fill (0 when the draft before was rejected, its guesses then dropped)."""
        if masks < 0 or not 0 <= kept <= drafted <= offered or offered > max(0, masks - 1):
            raise ValueError(
                f"bad observation: {masks} masks, {kept} of {drafted} kept, {offered} offered"
            )
        with self._lock:
            self._tally.add(masks, kept + 1, 1)
            if offered:
                self._kept += kept
                self._stopped += kept < offered
                self._rejected += kept < drafted
            self.observations += 1

    def rate(self, masks: int) -> float:
        """Expected tokens per forward for rows drafting with ``masks`` masks."""
        if masks <= 1:
            return 1.0
        prior = self.prior(masks)  # takes the lock itself
        with self._lock:
            return self._tally.blended(masks, prior, self.prior_weight)


@dataclass
class Parallelism:
    """Chooses each new block's length from the rows the engine is running.

    ``rows`` is set by the scheduler before every step; request states ask
    :meth:`block_length` when they start a block.
    """

    cost: ForwardCost
    rates: CommitRate = field(default_factory=CommitRate)
    rows: int = 1
    # What speculative rows emit per forward by their masks (SPECULATIVE's "adaptive").
    draft_rates: DraftRate = field(default_factory=DraftRate)
    # Choices by (rows, longest), with the observation count they were made at: a block
    # starts at every few steps of every row, and the rates move slowly.
    _chosen: dict[tuple[int, int], tuple[int, int]] = field(
        default_factory=dict, init=False, repr=False
    )
    _masks_chosen: dict[tuple[int, int], tuple[int, int]] = field(
        default_factory=dict, init=False, repr=False
    )
    # Seconds per row of a step outside the forward (building queries, choosing tokens,
    # delivering events), which every step pays whatever its masks: set_row_overhead.
    row_overhead: float = field(default=0.0, init=False)

    def throughput(self, rows: int, length: int) -> float:
        """Estimated tokens per second with ``rows`` rows decoding blocks of ``length``."""
        return rows * self.rates.rate(length) / self.cost.seconds(rows, length)

    def block_length(self, longest: int, rows: int | None = None) -> int:
        """The block length (at most ``longest``) that maximises throughput at ``rows``
        rows (default: the rows now running); ties go to the longer block (lower latency)."""
        if longest < 1:
            raise ValueError(f"longest must be at least 1, got {longest}")
        rows = max(1, self.rows if rows is None else rows)
        return _remembered(
            self._chosen,
            (rows, longest),
            self.rates.observations,
            lambda: self._best_length(rows, longest),
        )

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

    def set_row_overhead(self, seconds: float) -> None:
        """The engine's time per row of a step outside the forward; a move of more than a
        tenth remakes the cached mask choices."""
        if not seconds >= 0 or math.isinf(seconds):
            raise ValueError(f"bad row overhead: {seconds}")
        if abs(seconds - self.row_overhead) > 0.1 * self.row_overhead:
            self.row_overhead = seconds
            self._masks_chosen.clear()

    def draft_throughput(self, rows: int, masks: int) -> float:
        """Estimated tokens per second with ``rows`` speculative rows drafting with ``masks``:
        a step costs the forward (the :meth:`ForwardCost.monotone` table, interpolated at
        :func:`speculative_positions`) and :attr:`row_overhead` per row."""
        forward = self.cost.monotone().seconds_at(rows, speculative_positions(masks))
        return rows * self.draft_rates.rate(masks) / (forward + rows * self.row_overhead)

    def draft_masks(self, longest: int, rows: int | None = None) -> int:
        """The masks (at most ``longest``; 0: a plain causal step) a speculative row drafts
        with that maximise throughput at ``rows`` rows (default: the rows now running).
        Candidates are ``longest`` and the halves of the measured positions (their forwards
        are measured); one mask drafts nothing, so it is never chosen. Fewer masks must
        promise :data:`FEWER_MASKS_MARGIN` (divided by the rows) more throughput: near a tie
        (the costs and the rates are estimates) the longer draft keeps the replies' latency
        low, which weighs less the more rows share the device."""
        if longest < 0:
            raise ValueError(f"longest must be at least 0, got {longest}")
        rows = max(1, self.rows if rows is None else rows)
        return _remembered(
            self._masks_chosen,
            (rows, longest),
            self.draft_rates.observations,
            lambda: self._best_masks(rows, longest),
        )

    def _best_masks(self, rows: int, longest: int) -> int:
        choices = {0} | {q // 2 for q in self.cost.positions if 2 <= q // 2 < longest}
        if longest >= 2:
            choices.add(longest)
        best, best_rate = -1, -1.0
        for masks in sorted(choices, reverse=True):
            rate = self.draft_throughput(rows, masks)
            if rate > best_rate * (1.0 + FEWER_MASKS_MARGIN / rows):
                best, best_rate = masks, rate
        return best

    def plan(self, row_counts: Sequence[int], longest: int) -> dict[int, int]:
        """The block length chosen at each row count (for reports)."""
        return {rows: self.block_length(longest, rows) for rows in row_counts}


def _remembered(
    memo: dict[tuple[int, int], tuple[int, int]],
    key: tuple[int, int],
    seen: int,
    choose: Callable[[], int],
) -> int:
    """``memo[key]``'s choice while fewer than :data:`RECHOOSE_EVERY` observations have come
    since it was made (``seen`` counts them), else ``choose()``, remembered."""
    cached = memo.get(key)
    if cached is not None and seen - cached[1] < RECHOOSE_EVERY:
        return cached[0]
    best = choose()
    memo[key] = (best, seen)
    return best
