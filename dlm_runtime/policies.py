"""Sampler policies for masked-diffusion decoding: pure tensor logic, no model.

A reply is generated block by block. For each block the engine keeps a :class:`BlockState`
(the block's tokens, mask id where still masked) and calls :meth:`BlockState.step` with the
model's logits for the block's positions until :attr:`BlockState.done`. One step is::

    tokens     = chooser.choose(logits, rng)               # TokenChooser: candidate per position
    confidence = confidence.score(logits, tokens, rng)     # ConfidenceScore
    commit     = unmask.select(confidence, masked, ...)    # UnmaskPolicy: which masked to fill
    revised    = revision.select(...)                      # RevisionPolicy | None: re-mask some
    stop check                                             # StopPolicy: end-of-reply reached?

:class:`DecodingPolicy` bundles the parts; :func:`fixed_schedule`, :func:`fast` and
:func:`fast_revise` are the named presets and :func:`policy_from_dict` parses a config dict.

Reproducing LLaDA's reference ``generate()`` (ML-GSAI/LLaDA generate.py, ported as
:mod:`dlm_runtime.llada_generate`) token for token: use :func:`fixed_schedule`, feed the model
the *whole* sequence (prompt + every block, future blocks still masked) each step, and give
every block ``offset`` (its start in that sequence) and ``seq_len`` (prompt + gen_length). The
reference draws its random numbers over the full ``[1, seq_len, V]`` logits (and
``[1, seq_len]`` for ``remasking="random"``) each step; :class:`ReferenceRandom` draws the same
shapes in the same order and slices out the block, so a ``torch.Generator`` seeded like the
reference's ``torch.manual_seed`` (or ``generator=None``, the global generator itself) gives
identical tokens. Only batch size 1 is reproduced (the engine runs each request as its own
batch of one, and ``cfg_scale`` adds the guidance row as upstream does).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = [
    "MAX_NEW_TOKENS",
    "PRESETS",
    "BlockState",
    "ChosenProbability",
    "ConfidenceScore",
    "ConfidenceThreshold",
    "DecodingPolicy",
    "FixedCount",
    "Greedy",
    "GumbelSampler",
    "MarginConfidence",
    "RandomConfidence",
    "RandomSource",
    "ReferenceRandom",
    "RevisionPolicy",
    "StepResult",
    "StopPolicy",
    "TokenChooser",
    "TopKTopP",
    "TorchRandom",
    "UnmaskPolicy",
    "fast",
    "fast_revise",
    "fast_verify",
    "fixed_schedule",
    "num_transfer_tokens",
    "policy_from_dict",
]

MAX_NEW_TOKENS = 8192
"""Largest reply length a policy accepts; anything above is treated as a config mistake."""

_MAX_TEMPERATURE = 10.0
_NEG_INF = -math.inf


# --------------------------------------------------------------------------------------------
# Validation helpers (every check raises ValueError with the parameter's name)
# --------------------------------------------------------------------------------------------


def _int(name: str, value: object, lo: int, hi: int) -> int:
    # bool is an int subclass; True as a step count is always a config mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _float(
    name: str, value: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok or math.isnan(v):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return v


# --------------------------------------------------------------------------------------------
# Random sources
# --------------------------------------------------------------------------------------------


@runtime_checkable
class RandomSource(Protocol):
    """Where choosers and confidences get uniform [0, 1) numbers for a block of ``L`` positions."""

    def rand(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Uniform samples of ``shape`` (first dim = block positions)."""
        ...


@dataclass
class TorchRandom:
    """Draws exactly the requested shape from ``generator`` (the global one if None)."""

    generator: torch.Generator | None = None

    def rand(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Uniform samples of ``shape``."""
        return torch.rand(shape, dtype=dtype, device=device, generator=self.generator)


@dataclass
class ReferenceRandom:
    """Draws like LLaDA's ``generate()``: over ``[1, seq_len, ...]``, then keeps the block.

    The reference calls ``torch.rand_like`` on the full-sequence logits; drawing the same shape
    from a generator in the same state yields the same numbers, so slicing reproduces it.
    """

    generator: torch.Generator | None
    seq_len: int
    offset: int

    def rand(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Uniform samples of ``shape``, cut from a full-sequence draw."""
        length = shape[0]
        if self.offset + length > self.seq_len:
            raise ValueError(
                f"block [{self.offset}, {self.offset + length}) exceeds seq_len {self.seq_len}"
            )
        full = torch.rand(
            (1, self.seq_len, *shape[1:]), dtype=dtype, device=device, generator=self.generator
        )
        return full[0, self.offset : self.offset + length]


# --------------------------------------------------------------------------------------------
# Token choosers: logits [L, V] -> candidate tokens [L]
# --------------------------------------------------------------------------------------------


@runtime_checkable
class TokenChooser(Protocol):
    """Picks one candidate token per position from logits ``[L, V]``."""

    def choose(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Candidate ids ``[L]`` (int64)."""
        ...


@dataclass(frozen=True)
class Greedy:
    """Argmax (first index on ties, as ``torch.argmax``)."""

    def choose(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Argmax ids ``[L]``."""
        return torch.argmax(logits, dim=-1)


@dataclass(frozen=True)
class GumbelSampler:
    """LLaDA's ``add_gumbel_noise`` + argmax, transcribed op for op (float64).

    ``noise_at_zero_temperature=False`` follows the original release (temperature 0 returns the
    logits untouched and draws nothing); ``True`` follows the later upstream ``generate.py``,
    which always casts to float64 and draws noise (``x ** 0 == 1``), which matters only for
    the random-number stream (e.g. with ``RandomConfidence`` afterwards).
    """

    temperature: float = 0.0
    noise_at_zero_temperature: bool = False

    def __post_init__(self) -> None:
        _float("temperature", self.temperature, 0.0, _MAX_TEMPERATURE)

    def noised(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """``add_gumbel_noise(logits, temperature)`` from the reference."""
        if self.temperature == 0 and not self.noise_at_zero_temperature:
            return logits
        logits64 = logits.to(torch.float64)
        noise = rng.rand(tuple(logits64.shape), torch.float64, logits64.device)
        gumbel_noise = (-torch.log(noise)) ** self.temperature
        return logits64.exp() / gumbel_noise

    def choose(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Argmax of the noised logits."""
        return torch.argmax(self.noised(logits, rng), dim=-1)


@dataclass(frozen=True)
class TopKTopP:
    """Temperature + top-k + nucleus sampling, seedable through the random source."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        _float("temperature", self.temperature, 0.0, _MAX_TEMPERATURE, lo_open=True)
        if self.top_k is not None:
            _int("top_k", self.top_k, 1, 1 << 24)
        if self.top_p is not None:
            _float("top_p", self.top_p, 0.0, 1.0, lo_open=True)

    def filtered_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Tempered logits with tokens outside top-k / top-p set to -inf."""
        scores = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, _NEG_INF)
        if self.top_p is not None and self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            # Drop a token once the mass *before* it already reaches top_p (keeps >= 1 token).
            drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, _NEG_INF)
        return scores

    def choose(self, logits: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Sampled ids ``[L]``."""
        probs = torch.softmax(self.filtered_logits(logits), dim=-1)
        u = rng.rand(tuple(probs.shape), torch.float32, probs.device)
        # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) is a draw from Categorical(p).
        exp = -torch.log(u.clamp_min(torch.finfo(torch.float32).tiny))
        return torch.argmax(probs / exp, dim=-1)


# --------------------------------------------------------------------------------------------
# Confidence scores: (logits [L, V], tokens [L]) -> confidence [L], higher = surer
# --------------------------------------------------------------------------------------------


ConfidenceDtype = Literal["logits", "float64"]


@runtime_checkable
class ConfidenceScore(Protocol):
    """Scores each candidate; unmasking commits high scores first."""

    def score(self, logits: torch.Tensor, tokens: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Confidence ``[L]``."""
        ...


def token_probability(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)[tokens]`` in float32 without materialising the softmax, which
    dominated a step in float64 (figures: docs/benchmarks.md, "Decoding settings and why")."""
    logits = logits.float()
    chosen = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return torch.exp(chosen - torch.logsumexp(logits, dim=-1))


@dataclass(frozen=True)
class ChosenProbability:
    """Softmax probability of the candidate (LLaDA ``remasking="low_confidence"``).

    ``exact=True`` computes it as the reference does, which token-for-token reproduction
    needs: with ``dtype="logits"`` the softmax runs in the logits' own dtype, as LLaDA's
    ``generate()`` has since mid-2025 (commit "Remove float64 in softmax"); ``dtype="float64"``
    is the earlier behaviour, for reproducing results made before it. In bfloat16 the two break
    ties differently. ``exact=False`` uses :func:`token_probability`.
    """

    exact: bool = True
    dtype: ConfidenceDtype = "logits"

    def __post_init__(self) -> None:
        if self.dtype not in ("logits", "float64"):
            raise ValueError(f"confidence dtype must be 'logits' or 'float64', got {self.dtype!r}")

    def score(self, logits: torch.Tensor, tokens: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """``softmax(logits)[tokens]``."""
        if not self.exact:
            return token_probability(logits, tokens)
        p = F.softmax(logits.to(torch.float64) if self.dtype == "float64" else logits, dim=-1)
        return torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(tokens, -1)), -1)


@dataclass(frozen=True)
class RandomConfidence:
    """Uniform random scores (LLaDA ``remasking="random"``): random unmasking order."""

    def score(self, logits: torch.Tensor, tokens: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Uniform ``[L]`` in the default dtype, like the reference's ``torch.rand((B, T))``."""
        return rng.rand((tokens.shape[0],), torch.get_default_dtype(), tokens.device)


@dataclass(frozen=True)
class MarginConfidence:
    """Probability of the candidate minus the best other token's probability."""

    def score(self, logits: torch.Tensor, tokens: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """``p[token] - max_{v != token} p[v]`` in [-1, 1]."""
        p = F.softmax(logits.to(torch.float64), dim=-1)
        chosen = torch.gather(p, -1, tokens.unsqueeze(-1)).squeeze(-1)
        others = p.scatter(-1, tokens.unsqueeze(-1), _NEG_INF).max(dim=-1).values
        return chosen - others


# --------------------------------------------------------------------------------------------
# Unmask policies: which masked positions to commit this step
# --------------------------------------------------------------------------------------------


@runtime_checkable
class UnmaskPolicy(Protocol):
    """Chooses masked positions to commit; must return a subset of ``masked``."""

    def select(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int, initial_masked: int
    ) -> torch.Tensor:
        """Bool ``[L]`` of positions to commit at block step ``step`` (0-based)."""
        ...

    def max_steps(self, block_len: int) -> int:
        """Steps after which a block is fully committed when nothing is re-masked."""
        ...


def num_transfer_tokens(n_masked: int, steps: int) -> list[int]:
    """LLaDA's ``get_num_transfer_tokens`` for one row: ``n // steps`` each, remainder first."""
    base, remainder = divmod(n_masked, steps)
    return [base + 1 if i < remainder else base for i in range(steps)]


@dataclass(frozen=True)
class FixedCount:
    """Reference schedule: commit the ``k_i`` most confident masked positions at step ``i``.

    ``k_i`` comes from :func:`num_transfer_tokens` over the block's initially masked count.
    Past the schedule (only reachable when revision re-masked something) it commits every
    remaining masked position.
    """

    steps: int

    def __post_init__(self) -> None:
        _int("steps", self.steps, 1, MAX_NEW_TOKENS)

    def count(self, step: int, initial_masked: int, n_masked: int) -> int:
        """How many positions to commit at ``step``."""
        if step < self.steps:
            return min(num_transfer_tokens(initial_masked, self.steps)[step], n_masked)
        return n_masked

    def select(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int, initial_masked: int
    ) -> torch.Tensor:
        """Top-k of the confidence over masked positions (others -inf), as the reference."""
        k = self.count(step, initial_masked, int(masked.sum()))
        conf = torch.where(masked, confidence, _NEG_INF)
        _, index = torch.topk(conf, k=k)
        chosen = torch.zeros_like(masked)
        chosen[index] = True
        return chosen & masked

    def max_steps(self, block_len: int) -> int:
        """The schedule length."""
        return self.steps


@dataclass(frozen=True)
class ConfidenceThreshold:
    """Commit every masked position with confidence >= ``tau``; at least the most confident."""

    tau: float

    def __post_init__(self) -> None:
        _float("tau", self.tau, 0.0, 1.0, lo_open=True)

    def select(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int, initial_masked: int
    ) -> torch.Tensor:
        """Masked positions at or above ``tau``, or else the single most confident one."""
        chosen = masked & (confidence >= self.tau)
        if masked.any() and not chosen.any():
            best = torch.argmax(torch.where(masked, confidence, _NEG_INF))
            chosen[best] = True
        return chosen

    def max_steps(self, block_len: int) -> int:
        """At least one commit per step."""
        return block_len


# --------------------------------------------------------------------------------------------
# Self-revision and early stop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionPolicy:
    """Re-mask earlier commits whose probability under the current logits fell below a bound.

    Termination: each step commits >= 1 position (or follows a fixed schedule) and every
    re-mask spends one unit of a finite per-block budget (``max_total``), so a block ends within
    ``unmask.max_steps(L) + max_total`` steps; :class:`BlockState` enforces that bound too.
    """

    threshold: float
    max_per_position: int = 1
    max_total: int = 8
    max_per_step: int | None = None

    def __post_init__(self) -> None:
        _float("revise_below", self.threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        _int("max_revisions_per_position", self.max_per_position, 1, 64)
        _int("max_revisions", self.max_total, 1, MAX_NEW_TOKENS)
        if self.max_per_step is not None:
            _int("max_revisions_per_step", self.max_per_step, 1, MAX_NEW_TOKENS)

    def select(
        self,
        token_prob: torch.Tensor,
        eligible: torch.Tensor,
        budget: int,
        committed_count: int,
    ) -> torch.Tensor:
        """Bool ``[L]``: the least likely eligible positions below the bound, within caps.

        ``eligible`` must already exclude positions committed this step and positions at their
        per-position cap; ``committed_count`` (committed after this step's commits) keeps at
        least one position committed so the block never falls back to all-masked.
        """
        candidates = eligible & (token_prob < self.threshold)
        limit = min(int(candidates.sum()), budget, committed_count - 1)
        if self.max_per_step is not None:
            limit = min(limit, self.max_per_step)
        chosen = torch.zeros_like(eligible)
        if limit <= 0:
            return chosen
        score = torch.where(candidates, -token_prob.to(torch.float64), _NEG_INF)
        _, index = torch.topk(score, k=limit)
        chosen[index] = True
        return chosen & candidates


@dataclass(frozen=True)
class StopPolicy:
    """The reply ends at the first committed ``end_id`` once every position before it is set.

    Positions after it are filled with ``fill_id`` (default ``end_id``, as LLaDA pads with EOS).
    """

    end_id: int
    fill_id: int | None = None

    def find_end(self, x: torch.Tensor, masked: torch.Tensor) -> int | None:
        """Index of the reply's end in ``x``, or None while the reply is not finished."""
        ends = torch.nonzero((x == self.end_id) & ~masked).flatten()
        if ends.numel() == 0:
            return None
        first = int(ends[0])
        if bool(masked[:first].any()):
            return None
        return first

    def apply(self, x: torch.Tensor, end: int) -> None:
        """Overwrite everything after ``end`` with the fill token, in place."""
        x[end + 1 :] = self.end_id if self.fill_id is None else self.fill_id


# --------------------------------------------------------------------------------------------
# Policy bundle and presets
# --------------------------------------------------------------------------------------------

RngLayout = Literal["block", "reference"]


@dataclass(frozen=True)
class DecodingPolicy:
    """Everything that decides how a reply is decoded; token ids come from the model config."""

    name: str
    chooser: TokenChooser
    confidence: ConfidenceScore
    unmask: UnmaskPolicy
    revision: RevisionPolicy | None
    block_size: int
    max_new_tokens: int
    early_stop: bool = True
    rng_layout: RngLayout = "block"
    # The reference lets the model "choose" the mask token (the position then stays masked);
    # production forbids it so every commit makes progress.
    forbid_mask_token: bool = True
    # LLaDA's unsupervised classifier-free guidance: each step also runs the sequence with the
    # prompt masked and decodes from ``un + (cfg_scale + 1) * (cond - un)``; 0 = off. Only the
    # engine's BIDIRECTIONAL pattern offers it (as LLaDA's generate() does).
    cfg_scale: float = 0.0
    # Two neighbouring positions committed in one step with the same token: keep the more
    # confident only (the other is redrawn next step, seeing it). Parallel commits cannot see
    # each other, so an uncertain block writes "the answer answer is"; off in the reference
    # policies, whose outputs are token-exact to upstream samplers.
    serial_repeats: bool = False
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _float("cfg_scale", self.cfg_scale, 0.0, 100.0)
        _int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _int("block_size", self.block_size, 1, self.max_new_tokens)
        if self.rng_layout not in ("block", "reference"):
            raise ValueError(f"rng_layout must be 'block' or 'reference', got {self.rng_layout!r}")

    def max_steps_per_block(self, block_len: int | None = None) -> int:
        """Hard upper bound on steps for a block of ``block_len`` (default ``block_size``)."""
        length = self.block_size if block_len is None else block_len
        extra = self.revision.max_total if self.revision is not None else 0
        return self.unmask.max_steps(length) + extra

    def block_lengths(self) -> list[int]:
        """Lengths of the reply's blocks; the last one may be shorter."""
        full, rest = divmod(self.max_new_tokens, self.block_size)
        return [self.block_size] * full + ([rest] if rest else [])

    def to_dict(self) -> dict[str, Any]:
        """The ``policy_from_dict`` input that rebuilds this policy (presets only)."""
        return {"name": self.name, **self.params}


def fixed_schedule(
    steps: int = 128,
    gen_length: int = 128,
    block_length: int = 128,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    noise_at_zero_temperature: bool = False,
    confidence_dtype: str = "logits",
    cfg_scale: float = 0.0,
) -> DecodingPolicy:
    """LLaDA's ``generate()``: ``steps // blocks`` tokens unmasked per step (the most
    confident, or random ones), Gumbel sampling, no early stop.

    ``cfg_scale`` > 0: unsupervised classifier-free guidance (see :class:`DecodingPolicy`).
    ``confidence_dtype``: ``"logits"`` computes the confidence softmax in the logits' dtype as
    upstream does today; ``"float64"`` as it did before mid-2025 (see :class:`ChosenProbability`).
    """
    _int("gen_length", gen_length, 1, MAX_NEW_TOKENS)
    _int("block_length", block_length, 1, gen_length)
    _int("steps", steps, 1, gen_length)
    if gen_length % block_length:
        raise ValueError(
            f"gen_length {gen_length} is not a multiple of block_length {block_length}"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps {steps} is not a multiple of the number of blocks {num_blocks}")
    confidence: ConfidenceScore
    if remasking == "low_confidence":
        if confidence_dtype not in ("logits", "float64"):
            raise ValueError(
                f"confidence_dtype must be 'logits' or 'float64', got {confidence_dtype!r}"
            )
        confidence = ChosenProbability(
            dtype="float64" if confidence_dtype == "float64" else "logits"
        )
    elif remasking == "random":
        confidence = RandomConfidence()
    else:
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if not isinstance(noise_at_zero_temperature, bool):
        raise ValueError("noise_at_zero_temperature must be a bool")
    return DecodingPolicy(
        name="fixed_schedule",
        chooser=GumbelSampler(temperature, noise_at_zero_temperature),
        confidence=confidence,
        unmask=FixedCount(steps // num_blocks),
        revision=None,
        block_size=block_length,
        max_new_tokens=gen_length,
        early_stop=False,
        rng_layout="reference",
        forbid_mask_token=False,
        cfg_scale=cfg_scale,
        params={
            "steps": steps,
            "gen_length": gen_length,
            "block_length": block_length,
            "temperature": temperature,
            "remasking": remasking,
            "noise_at_zero_temperature": noise_at_zero_temperature,
            "confidence_dtype": confidence_dtype,
            "cfg_scale": cfg_scale,
        },
    )


def _chooser(temperature: float, top_k: int | None, top_p: float | None) -> TokenChooser:
    _float("temperature", temperature, 0.0, _MAX_TEMPERATURE)
    if temperature == 0:
        if top_k is not None or top_p is not None:
            raise ValueError("top_k/top_p need temperature > 0")
        return Greedy()
    return TopKTopP(temperature, top_k, top_p)


def fast(
    threshold: float = 0.9,
    block_size: int = 32,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    serial_repeats: bool = False,
) -> DecodingPolicy:
    """Confidence-threshold parallel unmasking with early stop (Fast-dLLM style);
    ``serial_repeats``: see :class:`DecodingPolicy`."""
    params: dict[str, Any] = {
        "threshold": threshold,
        "block_size": block_size,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
    }
    if serial_repeats:  # only when on, so existing recorded policy dicts stay as they were
        params["serial_repeats"] = True
    return DecodingPolicy(
        name="fast",
        chooser=_chooser(temperature, top_k, top_p),
        confidence=ChosenProbability(exact=False),
        unmask=ConfidenceThreshold(threshold),
        revision=None,
        block_size=block_size,
        max_new_tokens=max_new_tokens,
        serial_repeats=bool(serial_repeats),
        params=params,
    )


def fast_revise(
    threshold: float = 0.9,
    revise_below: float = 0.1,
    max_revisions_per_position: int = 1,
    max_revisions: int = 8,
    max_revisions_per_step: int | None = None,
    block_size: int = 32,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> DecodingPolicy:
    """:func:`fast` plus self-revision; ``max_revisions`` is the per-block budget."""
    return DecodingPolicy(
        name="fast_revise",
        chooser=_chooser(temperature, top_k, top_p),
        confidence=ChosenProbability(exact=False),
        unmask=ConfidenceThreshold(threshold),
        revision=RevisionPolicy(
            revise_below, max_revisions_per_position, max_revisions, max_revisions_per_step
        ),
        block_size=block_size,
        max_new_tokens=max_new_tokens,
        params={
            "threshold": threshold,
            "revise_below": revise_below,
            "max_revisions_per_position": max_revisions_per_position,
            "max_revisions": max_revisions,
            "max_revisions_per_step": max_revisions_per_step,
            "block_size": block_size,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
        },
    )


def fast_verify(
    threshold: float = 0.9,
    verify_floor: float = 1.0,
    block_size: int = 32,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    serial_repeats: bool = False,
    verify_trust: float = 1.0,
) -> DecodingPolicy:
    """:func:`fast` whose finished blocks the causal mode verifies (the VERIFIED pattern of
    ``dlm_runtime.engine``): a block token is kept while it is the causal argmax or its causal
    probability is at least ``verify_floor`` (1: argmax only, 0: keep everything). The last
    block skips its own causal forward when each of its tokens was committed with probability
    at least ``verify_trust`` (1: every block verified; below 1 the reply's tail may differ
    from what the floor alone keeps)."""
    floor = _float("verify_floor", verify_floor, 0.0, 1.0)
    trust = _float("verify_trust", verify_trust, 0.0, 1.0)
    policy = fast(threshold, block_size, max_new_tokens, temperature, top_k, top_p, serial_repeats)
    params = {**policy.params, "verify_floor": floor, "verify_trust": trust}
    return replace(policy, name="fast_verify", params=params)


PRESETS: dict[str, Callable[..., DecodingPolicy]] = {
    "fixed_schedule": fixed_schedule,
    "fast": fast,
    "fast_revise": fast_revise,
    "fast_verify": fast_verify,
}


def policy_from_dict(config: Mapping[str, Any]) -> DecodingPolicy:
    """Build a preset from ``{"name": preset, **params}``; ValueError on anything invalid."""
    if not isinstance(config, Mapping):
        raise ValueError(f"policy config must be a mapping, got {type(config).__name__}")
    params = dict(config)
    name = params.pop("name", None)
    if name not in PRESETS:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    allowed = set(inspect.signature(preset).parameters)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for policy {name!r}; allowed: {sorted(allowed)}"
        )
    try:
        return preset(**params)
    except TypeError as exc:  # e.g. a string where a number belongs, inside torch/math code
        raise ValueError(f"bad parameter for policy {name!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Per-request block state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one step changed (block-relative positions) and whether decoding may stop."""

    committed: list[int]
    revised: list[int]
    block_done: bool
    reply_done: bool
    end_index: int | None
    forced: bool  # the step hit the hard step bound and committed everything left


def serialize_repeats(
    commit: torch.Tensor,
    tokens: torch.Tensor,
    confidence: torch.Tensor,
    exempt: tuple[int, ...] = (),
) -> torch.Tensor:
    """``commit`` without the less confident of each neighbouring pair committed together
    with the same token (ties: the later one waits); at least one of each pair stays.
    ``exempt`` tokens (the end of reply and its fill, which close a block in a run) may
    repeat."""
    pair = commit[1:] & commit[:-1] & (tokens[1:] == tokens[:-1])
    for token in exempt:
        pair &= tokens[1:] != token
    if not bool(pair.any()):
        return commit
    later_waits = confidence[1:] <= confidence[:-1]
    out = commit.clone()
    out[1:][pair & later_waits] = False
    out[:-1][pair & ~later_waits] = False
    return out


def masked_rows_suffice(policy: DecodingPolicy) -> bool:
    """Whether a step needs candidates and confidences only at masked positions: greedy
    choice, a confidence that draws no random numbers, and no revision (which rescores the
    committed ones). Then the step reduces over the vocabulary for those rows only."""
    chooser = policy.chooser
    greedy = isinstance(chooser, Greedy) or (
        isinstance(chooser, GumbelSampler)
        and chooser.temperature == 0
        and not chooser.noise_at_zero_temperature
    )
    return (
        greedy
        and isinstance(policy.confidence, ChosenProbability | MarginConfidence)
        and policy.revision is None
    )


def _spread(values: torch.Tensor, rows: torch.Tensor, length: int, fill: float) -> torch.Tensor:
    """``values`` of ``rows`` laid out over ``length`` positions, ``fill`` elsewhere."""
    out = torch.full((length,), fill, dtype=values.dtype, device=values.device)
    out[rows] = values
    return out


class BlockState:
    """Mutable decoding state of one block of one request; :meth:`step` applies one step."""

    def __init__(
        self,
        policy: DecodingPolicy,
        block_len: int,
        mask_id: int,
        *,
        end_id: int | None = None,
        fill_id: int | None = None,
        offset: int = 0,
        seq_len: int | None = None,
        x: torch.Tensor | None = None,
        revision_budget: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Start a block of ``block_len`` masks (or the given ``x``).

        ``end_id`` (the model config's eos/end-of-reply id) is required when the policy stops
        early. ``offset``/``seq_len`` place the block in the full sequence, needed only for the
        reference random layout. ``revision_budget`` overrides the policy's per-block revision
        cap (pass the previous block's ``revision_budget_left`` for a per-request cap).
        """
        _int("block_len", block_len, 1, MAX_NEW_TOKENS)
        self.policy = policy
        self.mask_id = mask_id
        self.offset = offset
        self.seq_len = offset + block_len if seq_len is None else seq_len
        if policy.rng_layout == "reference" and self.offset + block_len > self.seq_len:
            raise ValueError("block does not fit in seq_len")
        if policy.early_stop and end_id is None:
            raise ValueError("policy stops early: end_id is required")
        self.stop = (
            StopPolicy(end_id, fill_id) if policy.early_stop and end_id is not None else None
        )
        if x is None:
            self.x = torch.full((block_len,), mask_id, dtype=torch.long, device=device)
        else:
            if x.shape != (block_len,):
                raise ValueError(f"x must have shape ({block_len},), got {tuple(x.shape)}")
            self.x = x.to(device=device if device is not None else x.device, dtype=torch.long)
            self.x = self.x.clone()
        masked = self.x == mask_id
        self.initial_masked = int(masked.sum())
        # Step at which each position was last committed by sampling; -1 = masked or given.
        self.committed_at = torch.full((block_len,), -1, dtype=torch.long, device=self.x.device)
        # The confidence each committed position had when committed; -inf = masked or given.
        self.commit_confidence = torch.full(
            (block_len,), _NEG_INF, dtype=torch.float32, device=self.x.device
        )
        self.revision_counts = torch.zeros(block_len, dtype=torch.long, device=self.x.device)
        if revision_budget is not None:
            _int("revision_budget", revision_budget, 0, MAX_NEW_TOKENS)
        self.revision_budget_left = (
            0
            if policy.revision is None
            else (policy.revision.max_total if revision_budget is None else revision_budget)
        )
        self.step_index = 0
        self.max_steps = policy.unmask.max_steps(block_len) + self.revision_budget_left
        self.end_index: int | None = None
        self.reply_done = False

    @property
    def block_len(self) -> int:
        """Number of positions in the block."""
        return int(self.x.shape[0])

    @property
    def masked(self) -> torch.Tensor:
        """Bool ``[L]``: positions still holding the mask id."""
        return self.x == self.mask_id

    @property
    def done(self) -> bool:
        """No more steps: reply ended, block fully committed, or the step bound reached."""
        return self.reply_done or self.step_index >= self.max_steps or not bool(self.masked.any())

    def random_source(self, generator: torch.Generator | None) -> RandomSource:
        """The random source the policy's layout asks for."""
        if self.policy.rng_layout == "reference":
            return ReferenceRandom(generator, self.seq_len, self.offset)
        return TorchRandom(generator)

    def _to(self, device: torch.device) -> None:
        if self.x.device != device:
            self.x = self.x.to(device)
            self.committed_at = self.committed_at.to(device)
            self.commit_confidence = self.commit_confidence.to(device)
            self.revision_counts = self.revision_counts.to(device)

    def _select(self, confidence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        unmask = self.policy.unmask
        if self.policy.rng_layout != "reference":
            return unmask.select(confidence, masked, self.step_index, self.initial_masked)
        # torch.topk breaks ties differently on different lengths, so lay the scores out over
        # the whole sequence (-inf outside the block) exactly as the reference does.
        start, stop = self.offset, self.offset + self.block_len
        conf_full = torch.full(
            (self.seq_len,), _NEG_INF, dtype=confidence.dtype, device=confidence.device
        )
        conf_full[start:stop] = confidence
        masked_full = torch.zeros(self.seq_len, dtype=torch.bool, device=masked.device)
        masked_full[start:stop] = masked
        chosen = unmask.select(conf_full, masked_full, self.step_index, self.initial_masked)
        return chosen[start:stop]

    def step(
        self,
        logits: torch.Tensor,
        generator: torch.Generator | None = None,
        rng: RandomSource | None = None,
        masked_only: bool = False,
    ) -> StepResult:
        """Apply one decoding step given this block's logits ``[L, V]``, or with
        ``masked_only`` those of its masked positions only, in order (policies for which
        :func:`masked_rows_suffice`; the BLOCK_CACHE engine pattern computes no others).

        Random numbers come from ``rng`` if given, else from ``generator`` laid out per the
        policy (``None`` = torch's global generator).
        """
        if self.done:
            raise RuntimeError("step() called on a finished block")
        self._to(logits.device)
        masked = self.masked
        # Committed positions' candidates and confidences are never read unless the policy
        # revises (or draws random numbers per position): skip their vocabulary reductions.
        suffice = masked_rows_suffice(self.policy)
        if masked_only and not suffice:
            raise ValueError(f"policy {self.policy.name!r} reads committed positions' logits")
        rows = torch.nonzero(masked).flatten() if suffice else None
        if rows is not None and int(rows.shape[0]) == self.block_len:
            rows = None  # all masked (a block's first step): no row copy, nothing to spread
        expected = self.block_len if rows is None or not masked_only else int(rows.shape[0])
        if logits.dim() != 2 or logits.shape[0] != expected:
            raise ValueError(f"logits must be [{expected}, V], got {tuple(logits.shape)}")
        source = rng if rng is not None else self.random_source(generator)
        scores = logits if rows is None or masked_only else logits.index_select(0, rows)
        if self.policy.forbid_mask_token and 0 <= self.mask_id < logits.shape[-1]:
            if rows is None or masked_only:  # index_select made a copy already
                scores = scores.clone()
            scores[:, self.mask_id] = _NEG_INF

        tokens = self.policy.chooser.choose(scores, source)
        confidence = self.policy.confidence.score(scores, tokens, source)
        if rows is not None:
            tokens, confidence = (
                _spread(tokens, rows, self.block_len, 0),
                _spread(confidence, rows, self.block_len, _NEG_INF),
            )
        commit = self._select(confidence, masked) & masked
        if self.policy.serial_repeats:
            stop = self.stop
            ends = (
                ()
                if stop is None
                else tuple(t for t in (stop.end_id, stop.fill_id) if t is not None)
            )
            commit = serialize_repeats(commit, tokens, confidence, ends)
        # Safety net for the step bound: the last allowed step commits whatever is left and
        # does not revise. The bound is chosen so that correct policies never need it.
        last = self.step_index + 1 >= self.max_steps
        forced = last and bool((masked & ~commit).any())
        if forced:
            commit = masked.clone()
        self.x[commit] = tokens[commit]
        self.committed_at[commit] = self.step_index
        self.commit_confidence[commit] = confidence[commit].float()

        # Built only when a revision can happen: a tensor, a nonzero and a list per step that
        # no revising policy needs (one step of a request is a few dozen small ops).
        revised_at: list[int] = []
        revision = self.policy.revision
        if revision is not None and not last and self.revision_budget_left > 0:
            # Only earlier commits: this step's choices were not visible in the logits' input.
            eligible = (
                (self.committed_at >= 0)
                & (self.committed_at < self.step_index)
                & (self.revision_counts < revision.max_per_position)
            )
            if eligible.any():
                token_prob = token_probability(scores, self.x)
                committed_count = int((~self.masked).sum())
                revised = revision.select(
                    token_prob, eligible, self.revision_budget_left, committed_count
                )
                n_revised = int(revised.sum())
                if n_revised:
                    self.x[revised] = self.mask_id
                    self.committed_at[revised] = -1
                    self.commit_confidence[revised] = _NEG_INF
                    self.revision_counts[revised] += 1
                    self.revision_budget_left -= n_revised
                    revised_at = torch.nonzero(revised).flatten().tolist()

        self.step_index += 1
        masked = self.masked  # after this step's commits and revisions
        if self.stop is not None:
            end = self.stop.find_end(self.x, masked)
            if end is not None:
                self.stop.apply(self.x, end)
                self.end_index = end
                self.reply_done = True
        # As :attr:`done`, reusing ``masked``: stop.apply changes x only when the reply ended.
        block_done = self.reply_done or self.step_index >= self.max_steps or not bool(masked.any())
        return StepResult(
            committed=torch.nonzero(commit).flatten().tolist(),
            revised=revised_at,
            block_done=block_done,
            reply_done=self.reply_done,
            end_index=self.end_index,
            forced=forced,
        )
