"""The named decoding modes the assistant serves with, all on one checkpoint."""

from __future__ import annotations

import dataclasses
import functools

from assistant.core.errors import UserError
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.policies import DecodingPolicy, fast, fast_revise, fast_verify, fixed_schedule

__all__ = [
    "BLOCK",
    "DEFAULT_MODE",
    "FAST_BLOCK",
    "FAST_THRESHOLD",
    "MAX_REPLY_TOKENS",
    "REVISE_BELOW",
    "VERIFY_FLOOR",
    "DecodingMode",
    "check_decoding_mode",
    "decoding_modes",
    "for_model",
    "reply_room",
]

MAX_REPLY_TOKENS = 96
BLOCK = 32
# Fast diffusion's block length and commit threshold; docs/benchmarks.md ("Decoding settings
# and why") has the measurements behind both. 16 since run 21 (self-distilled): on 200 dev
# turns the same tool selection, arguments and facts as block 8 at 0.11 forwards per token
# against 0.17 (docs/benchmarks.md, "Fast diffusion's block and threshold retuned for run 21").
FAST_BLOCK = 16
FAST_THRESHOLD = 0.8
# Speculative mode's masks drafted per forward and draft threshold (see its entry below).
SPEC_MASKS = 8
SPEC_THRESHOLD = 0.7


def check_decoding_mode(name: str) -> None:
    """Raise a clear error for a mode name this build does not serve (empty: the default)."""
    if name and name not in decoding_modes():
        raise UserError(
            f"unknown decoding mode {name!r}: use one of {', '.join(decoding_modes())} "
            "(ASSISTANT_DECODING_MODE)"
        )


def reply_room(mode: DecodingMode) -> int:
    """Positions the engine keeps after the prompt for a reply in ``mode``.

    The engine accepts a request when prompt + ``max_new_tokens`` fit the context
    (``Engine._validate``) and never goes past that in any pattern: a block mode's last
    block is shorter rather than rounded up (``DecodingPolicy.block_lengths``), and
    speculative decoding drafts at most what is left of the reply
    (``SpeculativeState._draft_len``). tests/assistant/test_context_fit.py holds every
    named mode to this with the real model at the longest message the protocol allows.
    """
    return mode.policy.max_new_tokens


# Two neighbours committed in one step with the same token: the less confident waits a step
# (DecodingPolicy.serial_repeats); the fast modes wrote "The answer answer is". On 200 dev
# turns (run 8, fast diffusion) replies with a doubled word fell from 10.0 to 6.5%, facts
# 99.5 -> 100%, at the same 0.25 forwards per token (docs/benchmarks.md).
SERIAL_REPEATS = True
# A round whose parallel output is unusable (a malformed tool call, an unknown placeholder,
# nothing left, a reply stopping mid-sentence or writing a word twice in a row) is redrafted
# once by the autoregressive mode of the same weights
# (AgentLoop's ``redraft``; assistant eval --redraft on|off). On the dev sets (run 8, fast
# diffusion): conversation turns right 94.7 -> 96.4%, conversations right 84.7 -> 87.3%,
# single-turn fallbacks 1.0 -> 0%, for 0.27 -> 0.28 forwards per token (docs/benchmarks.md).
REDRAFT_UNUSABLE = True


def redraft_mode(mode: DecodingMode, enabled: bool = REDRAFT_UNUSABLE) -> DecodingMode | None:
    """The causal mode that rewrites ``mode``'s unusable output, or None: when off, and for
    modes that decode causally already (autoregressive, speculative)."""
    if not enabled or mode.pattern in (Pattern.AUTOREGRESSIVE, Pattern.SPECULATIVE):
        return None
    return _causal_mode()


@functools.cache
def _causal_mode() -> DecodingMode:
    """The served autoregressive mode, built once (a worker asks for it every turn)."""
    return decoding_modes()["autoregressive"]


# Self-revision re-masks a committed token whose probability fell below this.
REVISE_BELOW = 0.1
# Verified fast diffusion keeps a block token while the causal mode gives it at least this
# probability (or ranks it first); docs/benchmarks.md ("Self-revision by the causal mode").
VERIFY_FLOOR = 0.05
# ... and drafts 32-position blocks at threshold 0.1: on 150 dev turns that kept
# autoregressive accuracy (tool selection 97.3, arguments 100, facts 96.7%) at 0.23 forward
# passes per token, against 0.33 with the fast modes' block 8 / threshold 0.8 (same section).
VERIFY_BLOCK = 32
VERIFY_THRESHOLD = 0.1
# A last block whose every token was drafted with probability >= 0.95 ends without its own
# verify forward (fast_verify's verify_trust): on 150 dev turns, with run 9's and run 11's
# weights, the same tool selection, arguments and facts as verifying every block, at 0.212
# and 0.187 forward passes per token against 0.248 and 0.222 (docs/benchmarks.md, "Trusting
# a confident last block").
VERIFY_TRUST = 0.95


def decoding_modes(
    threshold: float = FAST_THRESHOLD,
    revise_below: float = REVISE_BELOW,
    block_size: int = FAST_BLOCK,
    verify_floor: float = VERIFY_FLOOR,
    verify_threshold: float = VERIFY_THRESHOLD,
    verify_block: int = VERIFY_BLOCK,
    serial_repeats: bool = SERIAL_REPEATS,
    verify_trust: float = VERIFY_TRUST,
) -> dict[str, DecodingMode]:
    """The named modes; ``threshold``, ``revise_below`` and ``block_size`` set the fast
    diffusion modes', ``verify_*`` the verified one's (for sweeps: ``assistant eval
    --fast-threshold --fast-block``, which set both, ``--revise-below --verify-floor``);
    ``serial_repeats`` their repeated-neighbour guard (``--serial-repeats on|off``)."""
    vanilla = dataclasses.replace(
        fixed_schedule(steps=MAX_REPLY_TOKENS, gen_length=MAX_REPLY_TOKENS, block_length=BLOCK),
        name="vanilla",
        early_stop=True,
        forbid_mask_token=True,
    )
    modes = [
        DecodingMode(
            "autoregressive",
            Pattern.AUTOREGRESSIVE,
            fast(block_size=BLOCK, max_new_tokens=MAX_REPLY_TOKENS),
        ),
        # One token per step, every step recomputing the whole sequence: plain diffusion.
        DecodingMode("vanilla-diffusion", Pattern.PREFIX_CAUSAL_NOCACHE, vanilla),
        DecodingMode(
            "fast-diffusion",
            Pattern.PREFIX_CAUSAL,
            fast(
                threshold=threshold,
                block_size=block_size,
                max_new_tokens=MAX_REPLY_TOKENS,
                serial_repeats=serial_repeats,
            ),
        ),
        # Fast diffusion whose block steps after the first compute only the masked positions
        # and reuse the committed ones' K/V (Pattern.BLOCK_CACHE, approximate); accuracy and
        # speed against fast-diffusion in docs/benchmarks.md ("Block steps that compute only
        # what changed").
        DecodingMode(
            "fast-diffusion+cache",
            Pattern.BLOCK_CACHE,
            fast(
                threshold=threshold,
                block_size=block_size,
                max_new_tokens=MAX_REPLY_TOKENS,
                serial_repeats=serial_repeats,
            ),
        ),
        DecodingMode(
            "fast-diffusion+revision",
            Pattern.PREFIX_CAUSAL,
            fast_revise(
                threshold=threshold,
                revise_below=revise_below,
                block_size=block_size,
                max_new_tokens=MAX_REPLY_TOKENS,
            ),
        ),
        # Fast diffusion whose finished blocks the causal mode of the same weights checks: a
        # token it finds unlikely (below verify_floor, and not its first choice) is replaced
        # by the causal choice and the block redrafted after it (Pattern.VERIFIED).
        DecodingMode(
            "fast-diffusion+verify",
            Pattern.VERIFIED,
            fast_verify(
                threshold=verify_threshold,
                verify_floor=verify_floor,
                block_size=verify_block,
                verify_trust=verify_trust,
                max_new_tokens=MAX_REPLY_TOKENS,
                serial_repeats=serial_repeats,
            ),
        ),
        # Fast diffusion whose block shrinks as the batch grows, down to causal steps: the
        # engine picks each block's length from this device's measured forward costs.
        DecodingMode(
            "adaptive-diffusion",
            Pattern.ADAPTIVE,
            fast(
                threshold=threshold,
                block_size=block_size,
                max_new_tokens=MAX_REPLY_TOKENS,
                serial_repeats=serial_repeats,
            ),
        ),
        # Each forward verifies the last draft and drafts the next from SPEC_MASKS masks in one
        # step. On 24 dev prompts (not the held-out set), 1 thread, the emitted tokens per
        # forward were 1.5 / 2.0 / 2.6 / 3.0 / 3.4 / 4.0 with 2 / 3 / 4 / 6 / 8 / 16 masks,
        # but a forward's cost grows with its positions, more so in a batch: 8 masks was the
        # fastest at 8 concurrent requests (1.2x autoregressive; 16 masks 1.0x) and about 2x
        # alone. The threshold barely moves acceptance (3.51 / 3.56 / 3.49 tokens per forward
        # at 0.3 / 0.5 / 0.7) but shortens the drafts that fail, so the verify is cheaper.
        # The masks follow the load (policy param "adaptive"): SPEC_MASKS while rows are few,
        # fewer as the batch grows compute-bound, down to plain causal steps; the replies stay
        # the autoregressive ones (docs/benchmarks.md, "Load-adaptive self-speculation").
        DecodingMode(
            "speculative",
            Pattern.SPECULATIVE,
            adaptive(
                fast(
                    threshold=SPEC_THRESHOLD, block_size=SPEC_MASKS, max_new_tokens=MAX_REPLY_TOKENS
                )
            ),
        ),
    ]
    return {mode.name: mode for mode in modes}


DEFAULT_MODE = "fast-diffusion"


def adaptive(policy: DecodingPolicy) -> DecodingPolicy:
    """``policy`` with its speculative drafts sized by the load (SpeculativeState)."""
    return dataclasses.replace(policy, params={**policy.params, "adaptive": True})


def for_model(mode: DecodingMode, default_pattern: Pattern) -> DecodingMode:
    """``mode`` as a model whose own diffusion pattern is ``default_pattern`` runs it.

    The named modes are the bundled model's, which was trained prefix-causal; for it (and any
    native checkpoint) they stay as they are. A model trained with bidirectional attention
    (LLaDA) runs the diffusion modes in its own pattern (``Pattern.DEFAULT_DIFFUSION``, which
    the engine resolves per model) with the same policy; the left-to-right modes would run it
    causally, as it was never trained, so they are refused with a clear error at start-up.
    DiffusionGemma takes the same path: its engine decodes every request with the model's own
    sampler and generation_config.json, so of the policy only the reply budget counts.
    Nemotron-Labs-Diffusion (SEEDED_BLOCKS) runs the diffusion modes in its own pattern too, and
    the left-to-right ones as they are, since it was trained causally as well.
    """
    if default_pattern is Pattern.PREFIX_CAUSAL:
        return mode
    if not mode.pattern.is_diffusion and default_pattern is Pattern.SEEDED_BLOCKS:
        return mode
    if not mode.pattern.is_diffusion:
        raise UserError(
            f"decoding mode {mode.name!r} decodes left to right, which this checkpoint was not "
            f"trained for (its own pattern is {default_pattern.value}): use "
            f"{DEFAULT_MODE!r} or vanilla-diffusion (ASSISTANT_DECODING_MODE)"
        )
    return dataclasses.replace(mode, pattern=Pattern.DEFAULT_DIFFUSION)
