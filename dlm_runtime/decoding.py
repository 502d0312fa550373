"""A decoding mode: one value naming how a request is decoded, from a caller's settings to the
engine's choice of per-request state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dlm_runtime.policies import DecodingPolicy

__all__ = ["DecodingMode", "Pattern"]


class Pattern(Enum):
    """What each forward of a request runs, what it attends to and what its cache keeps.

    The diffusion patterns decode the policy's blocks; AUTOREGRESSIVE and SPECULATIVE decode
    left to right. :mod:`dlm_runtime.engine` describes each one.
    """

    # The model's own diffusion pattern: PREFIX_CAUSAL for native "dlm" models (how
    # dlm_runtime.train trains them), SEEDED_BLOCKS for Nemotron-Labs-Diffusion, BIDIRECTIONAL
    # for LLaDA.
    DEFAULT_DIFFUSION = "default-diffusion"
    PREFIX_CAUSAL = "prefix-causal"
    PREFIX_CAUSAL_NOCACHE = "prefix-causal-nocache"
    BIDIRECTIONAL = "bidirectional"
    PREFIX_CACHE = "prefix-cache"
    # APPROXIMATE: PREFIX_CAUSAL whose block steps compute only the masked positions (and
    # those the last step committed), reusing the K/V of the block's earlier commits.
    BLOCK_CACHE = "block-cache"
    # A causal cache; each block starts from the causal next token after it and is written into
    # the cache by a causal forward of its own, which also gives the next block's first token
    # (Nemotron-Labs-Diffusion's generate()).
    SEEDED_BLOCKS = "seeded-blocks"
    AUTOREGRESSIVE = "autoregressive"
    SPECULATIVE = "speculative"
    # PREFIX_CAUSAL with each block's length chosen from the engine's load, down to causal
    # one-token steps (dlm_runtime.parallelism): needs a model trained both ways.
    ADAPTIVE = "adaptive"
    # PREFIX_CAUSAL whose finished blocks the causal mode verifies and corrects (policy
    # parameter ``verify_floor``): needs a model trained both ways.
    VERIFIED = "verified"

    @property
    def is_diffusion(self) -> bool:
        """Whether the pattern decodes whole blocks by iterative unmasking."""
        return self not in (
            Pattern.AUTOREGRESSIVE,
            Pattern.SPECULATIVE,
            Pattern.ADAPTIVE,
            Pattern.VERIFIED,
        )


@dataclass(frozen=True)
class DecodingMode:
    """A named way to decode: the pattern every forward follows and the policy choosing tokens.

    ``GenerationRequest`` carries it whole; the engine picks the request's state class by
    ``pattern``. Block size, unmasking, revision and the reply budget come from ``policy``
    (autoregressive decoding reads only its token chooser, ``max_new_tokens`` and
    ``early_stop``; speculative decoding drafts with ``block_size`` masks per forward; the
    adaptive pattern's blocks are at most ``block_size`` long).
    """

    name: str
    pattern: Pattern
    policy: DecodingPolicy

    @classmethod
    def diffusion(
        cls,
        policy: DecodingPolicy,
        pattern: Pattern = Pattern.DEFAULT_DIFFUSION,
        name: str | None = None,
    ) -> DecodingMode:
        """Block diffusion with ``pattern`` (by default the model's own); ValueError for a
        left-to-right pattern."""
        if not pattern.is_diffusion:
            raise ValueError(
                f"{pattern} is not a diffusion pattern: use DecodingMode.{pattern.value}"
            )
        return cls(name or pattern.value, pattern, policy)

    @classmethod
    def autoregressive(cls, policy: DecodingPolicy, name: str = "autoregressive") -> DecodingMode:
        """Causal decoding, one token per forward."""
        return cls(name, Pattern.AUTOREGRESSIVE, policy)

    @classmethod
    def adaptive(cls, policy: DecodingPolicy, name: str = "adaptive") -> DecodingMode:
        """Prefix-causal blocks of at most ``policy.block_size``, each as long as the load
        calls for (a causal one-token step at saturation)."""
        return cls(name, Pattern.ADAPTIVE, policy)

    @classmethod
    def speculative(cls, policy: DecodingPolicy, name: str = "speculative") -> DecodingMode:
        """Self-speculation, lossless: each forward verifies the last draft causally and
        drafts the next (``policy.block_size`` masks after it, one unmasking step)."""
        return cls(name, Pattern.SPECULATIVE, policy)
