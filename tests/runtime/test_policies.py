"""Sampler policies and the per-block decoding state (dlm_runtime.policies), no model."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlm_runtime.policies import (
    BlockState,
    ChosenProbability,
    ConfidenceThreshold,
    DecodingPolicy,
    FixedCount,
    Greedy,
    GumbelSampler,
    MarginConfidence,
    RandomConfidence,
    ReferenceRandom,
    RevisionPolicy,
    StopPolicy,
    TopKTopP,
    TorchRandom,
    fast,
    fast_revise,
    fixed_schedule,
    num_transfer_tokens,
    policy_from_dict,
    serialize_repeats,
)

SETTINGS = settings(max_examples=40, deadline=None)
V = 8
MASK = V - 1  # mask id inside the vocab so forbid_mask_token is exercised
END = 0


# --- literal transcription of LLaDA generate.py (ML-GSAI/LLaDA), batch size 1, no CFG ---------


def lit_add_gumbel_noise(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits, dtype=torch.float64)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def lit_get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = (
        torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    )
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, : remainder[i]] += 1
    return num_transfer_tokens


def lit_generate(
    model: Any,
    prompt: torch.Tensor,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float,
    remasking: str,
    mask_id: int,
) -> torch.Tensor:
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt.clone()
    num_blocks = gen_length // block_length
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = (
            x[
                :,
                prompt.shape[1] + num_block * block_length : prompt.shape[1]
                + (num_block + 1) * block_length,
            ]
            == mask_id
        )
        num_transfer_tokens = lit_get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x).logits
            logits_with_noise = lit_add_gumbel_noise(logits, temperature=temperature)
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if remasking == "low_confidence":
                # Upstream today (since "Remove float64 in softmax", mid-2025): logits' dtype.
                p = F.softmax(logits, dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            else:
                x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=x0.device)
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length :] = -math.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -math.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
            for j in range(confidence.shape[0]):
                # A 0-d tensor as k, exactly as the reference passes it.
                _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j, i])  # type: ignore[arg-type]
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x


class FakeModel:
    """Deterministic bidirectional 'model': every position's logits depend on the whole x."""

    def __init__(self, vocab: int, mask_id: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(vocab, 16, generator=g)
        self.mix = torch.randn(16, 16, generator=g) * 0.5
        self.out = torch.randn(16, vocab, generator=g) * 2.0
        self.mask_id = mask_id

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        h = self.emb[x]
        pos = torch.sin(torch.arange(x.shape[1], dtype=torch.float32))[None, :, None]
        logits = torch.tanh(h + h.mean(dim=1, keepdim=True) @ self.mix + pos) @ self.out
        # The reference would leave a chosen mask token masked across blocks; never choose it.
        logits[..., self.mask_id] = -1e4
        return SimpleNamespace(logits=logits)


def drive(
    policy: DecodingPolicy,
    model: FakeModel,
    prompt: torch.Tensor,
    generator: torch.Generator | None,
    end_id: int | None = None,
) -> torch.Tensor:
    """What the engine does: one BlockState per block, full-sequence logits each step."""
    plen = prompt.shape[1]
    x = torch.full((1, plen + policy.max_new_tokens), model.mask_id, dtype=torch.long)
    x[:, :plen] = prompt
    for b, length in enumerate(policy.block_lengths()):
        offset = plen + b * policy.block_size
        state = BlockState(
            policy, length, model.mask_id, end_id=end_id, offset=offset, seq_len=x.shape[1]
        )
        while not state.done:
            logits = model(x).logits[0, offset : offset + length]
            state.step(logits, generator=generator)
            x[0, offset : offset + length] = state.x
        if state.reply_done:
            break
    return x


# --- reference equality ------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_fixed_schedule_matches_llada_generate(temperature: float, remasking: str) -> None:
    """fixed_schedule() driven through BlockState equals LLaDA's generate() token for token."""
    vocab, mask_id = 50, 49
    model = FakeModel(vocab, mask_id, seed=1)
    prompt = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(2))
    kw: dict[str, Any] = {
        "steps": 8,
        "gen_length": 16,
        "block_length": 8,
        "temperature": temperature,
    }
    torch.manual_seed(123)
    want = lit_generate(model, prompt, **kw, remasking=remasking, mask_id=mask_id)
    policy = fixed_schedule(**kw, remasking=remasking)
    got = drive(policy, model, prompt, torch.Generator().manual_seed(123))
    assert torch.equal(got, want)
    torch.manual_seed(123)  # generator=None uses the global generator, like the reference
    assert torch.equal(drive(policy, model, prompt, None), want)


def test_fixed_schedule_matches_llada_generate_module() -> None:
    """The project's llada_generate.generate port agrees with the policy-driven loop."""
    ref = pytest.importorskip("dlm_runtime.llada_generate")
    model = FakeModel(40, 39, seed=3)
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(7)
    want = ref.generate(model, prompt, 6, 12, 4, 0.8, 0.0, "low_confidence", 39)
    policy = fixed_schedule(steps=6, gen_length=12, block_length=4, temperature=0.8)
    assert torch.equal(drive(policy, model, prompt, torch.Generator().manual_seed(7)), want)


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.3])
def test_gumbel_chooser_equals_literal_add_gumbel_noise(temperature: float) -> None:
    """GumbelSampler == argmax(add_gumbel_noise(...)) for the same seed, float64 throughout."""
    logits = torch.randn(1, 6, 11, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    want_noised = lit_add_gumbel_noise(logits, temperature)
    want = torch.argmax(want_noised, dim=-1)[0]
    sampler = GumbelSampler(temperature)
    rng = TorchRandom(torch.Generator().manual_seed(5))
    got_noised = sampler.noised(logits[0], rng)
    assert got_noised.dtype == want_noised.dtype
    assert torch.equal(got_noised, want_noised[0])
    assert torch.equal(
        sampler.choose(logits[0], TorchRandom(torch.Generator().manual_seed(5))), want
    )


def test_reference_random_slices_full_sequence_draw() -> None:
    """ReferenceRandom returns the block slice of a [1, seq_len, ...] draw."""
    full = torch.rand((1, 10, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    rng = ReferenceRandom(torch.Generator().manual_seed(9), seq_len=10, offset=4)
    assert torch.equal(rng.rand((3, 3), torch.float64, torch.device("cpu")), full[0, 4:7])
    with pytest.raises(ValueError):
        rng.rand((7, 3), torch.float64, torch.device("cpu"))


def test_gumbel_noise_at_zero_temperature_draws_but_keeps_argmax() -> None:
    """The later-upstream variant draws noise at temperature 0 without changing the argmax."""
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    out = GumbelSampler(0.0, noise_at_zero_temperature=True).choose(logits, TorchRandom(g))
    assert torch.equal(out, logits.argmax(-1))
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


# --- choosers and confidences --------------------------------------------------------------


def test_topk_topp_is_seedable_and_respects_filters() -> None:
    """Same seed, same draw; top_k=1 and tiny top_p are argmax; filtered tokens never appear."""
    logits = torch.randn(64, 20, generator=torch.Generator().manual_seed(0))
    s = TopKTopP(temperature=1.0, top_k=3)

    def draw(seed: int) -> torch.Tensor:
        return s.choose(logits, TorchRandom(torch.Generator().manual_seed(seed)))

    assert torch.equal(draw(1), draw(1))
    top3 = logits.topk(3, dim=-1).indices
    assert bool((draw(2)[:, None] == top3).any(-1).all())
    rng = TorchRandom(torch.Generator().manual_seed(3))
    assert torch.equal(TopKTopP(1.0, top_k=1).choose(logits, rng), logits.argmax(-1))
    assert torch.equal(TopKTopP(1.0, top_p=1e-6).choose(logits, rng), logits.argmax(-1))


def test_confidence_scores() -> None:
    """Chosen probability, margin and random confidences have the documented values."""
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]))
    tokens = torch.tensor([0, 2])
    rng = TorchRandom(torch.Generator().manual_seed(0))
    prob = ChosenProbability().score(logits, tokens, rng)
    assert prob.dtype == torch.float32  # the logits' dtype, as upstream generate() today
    assert torch.allclose(prob, torch.tensor([0.7, 0.2]))
    prob64 = ChosenProbability(dtype="float64").score(logits, tokens, rng)
    assert prob64.dtype == torch.float64  # upstream before mid-2025
    assert torch.allclose(prob64, torch.tensor([0.7, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match="confidence dtype"):
        ChosenProbability(dtype="float16")  # type: ignore[arg-type]
    margin = MarginConfidence().score(logits, tokens, rng)
    assert torch.allclose(margin, torch.tensor([0.5, -0.2], dtype=torch.float64))
    rand = RandomConfidence().score(logits, tokens, TorchRandom(torch.Generator().manual_seed(4)))
    assert torch.equal(rand, torch.rand(2, generator=torch.Generator().manual_seed(4)))


# --- unmask policies -----------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(0, 300), steps=st.integers(1, 64))
def test_num_transfer_tokens_matches_reference(n: int, steps: int) -> None:
    """num_transfer_tokens equals LLaDA's get_num_transfer_tokens."""
    mask = torch.zeros(1, max(n, 1), dtype=torch.bool)
    mask[0, :n] = True
    assert num_transfer_tokens(n, steps) == lit_get_num_transfer_tokens(mask, steps)[0].tolist()


def _policy(unmask: Any, revision: RevisionPolicy | None = None, **kw: Any) -> DecodingPolicy:
    args: dict[str, Any] = {
        "name": "test",
        "chooser": Greedy(),
        "confidence": ChosenProbability(),
        "unmask": unmask,
        "revision": revision,
        "block_size": 12,
        "early_stop": False,
    }
    args.update(kw)
    args.setdefault("max_new_tokens", args["block_size"])
    return DecodingPolicy(**args)


@SETTINGS
@given(length=st.integers(1, 12), steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_fixed_count_follows_schedule_and_picks_most_confident(
    length: int, steps: int, seed: int
) -> None:
    """Commit counts follow the schedule, the most confident go first, all done after steps."""
    steps = min(steps, length)  # as in the reference (steps <= gen_length): k_i >= 1
    g = torch.Generator().manual_seed(seed)
    state = BlockState(_policy(FixedCount(steps), block_size=length), length, MASK)
    schedule = num_transfer_tokens(length, steps)
    for i in range(steps):
        logits = torch.randn(length, V, generator=g) * 3
        masked_before = state.masked.clone()
        conf = F.softmax(
            logits.to(torch.float64).index_fill(1, torch.tensor([MASK]), -math.inf), -1
        )
        best = conf.max(-1).values
        result = state.step(logits)
        assert len(result.committed) == schedule[i]
        if result.committed:
            committed_conf = best[result.committed]
            others = best[masked_before & ~state.committed_at.eq(i)]
            assert others.numel() == 0 or committed_conf.min() >= others.max()
        assert not result.forced
    assert state.done and not state.masked.any()
    assert MASK not in state.x.tolist()


@SETTINGS
@given(length=st.integers(1, 16), tau=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_confidence_threshold_commits_all_above_tau(length: int, tau: float, seed: int) -> None:
    """Every masked position >= tau commits, at least one per step, done within L steps."""
    g = torch.Generator().manual_seed(seed)
    state = BlockState(_policy(ConfidenceThreshold(tau), block_size=length), length, MASK)
    steps = 0
    while not state.done:
        logits = torch.randn(length, V, generator=g) * 4
        masked = state.masked.clone()
        scores = logits.clone()
        scores[:, MASK] = -math.inf
        conf = F.softmax(scores.to(torch.float64), -1).max(-1).values
        result = state.step(logits)
        above = (masked & (conf >= tau)).nonzero().flatten().tolist()
        assert len(result.committed) >= 1
        assert set(above) <= set(result.committed)
        if not above:
            assert len(result.committed) == 1
        steps += 1
    assert steps <= length and not state.masked.any()


# --- self-revision -------------------------------------------------------------------------


@SETTINGS
@given(
    length=st.integers(2, 12),
    fixed=st.booleans(),
    tau=st.floats(0.3, 1.0),
    bound=st.floats(0.05, 0.95),
    per_pos=st.integers(1, 3),
    total=st.integers(1, 10),
    per_step=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 2**16),
)
def test_revision_always_terminates_within_caps(
    length: int,
    fixed: bool,
    tau: float,
    bound: float,
    per_pos: int,
    total: int,
    per_step: int | None,
    seed: int,
) -> None:
    """Random logits: steps <= base + total cap, caps respected, revisions reported."""
    unmask = FixedCount(max(1, length // 2)) if fixed else ConfidenceThreshold(tau)
    revision = RevisionPolicy(bound, per_pos, total, per_step)
    policy = _policy(unmask, revision, block_size=length)
    state = BlockState(policy, length, MASK)
    g = torch.Generator().manual_seed(seed)
    steps = revised_total = 0
    while not state.done:
        counts_before = state.revision_counts.clone()
        committed_before = ~state.masked
        logits = torch.randn(length, V, generator=g) * float(torch.rand(1, generator=g) * 6)
        result = state.step(logits)
        steps += 1
        assert not result.forced
        assert not set(result.revised) & set(result.committed)
        assert all(bool(committed_before[p]) for p in result.revised)
        if per_step is not None:
            assert len(result.revised) <= per_step
        assert (state.revision_counts - counts_before).nonzero().flatten().tolist() == sorted(
            result.revised
        )
        assert all(state.x[p] == MASK for p in result.revised)
        assert int((~state.masked).sum()) >= 1
        revised_total += len(result.revised)
    assert steps <= unmask.max_steps(length) + total
    assert revised_total <= total and int(state.revision_counts.max()) <= per_pos
    assert not state.masked.any()


def test_revision_remasks_a_commit_that_lost_support() -> None:
    """A token whose probability collapses is re-masked once, then recommitted."""
    policy = _policy(ConfidenceThreshold(0.9), RevisionPolicy(0.2, 1, 4), block_size=3)
    state = BlockState(policy, 3, MASK)
    sure = torch.full((3, V), -10.0)
    sure[0, 2] = 10.0  # position 0 -> token 2, confidently; others stay uncertain
    first = state.step(sure)
    assert first.committed == [0] and first.revised == []
    doubt = torch.zeros(3, V)
    doubt[0, 5] = 10.0  # now token 2 at position 0 is unlikely; 1 and 2 stay uncertain
    second = state.step(doubt)
    assert second.revised == [0] and 0 not in second.committed
    assert state.x[0] == MASK and state.revision_counts.tolist() == [1, 0, 0]
    settled = torch.full((3, V), -10.0)
    settled[:, 3] = 10.0
    settled[0, 5] = 20.0
    while not state.done:
        state.step(settled)
    assert state.x.tolist() == [5, 3, 3]
    assert state.revision_budget_left == 4 - int(state.revision_counts.sum())


# --- early stop -----------------------------------------------------------------------------


def test_early_stop_waits_for_prefix_then_pads() -> None:
    """Done only once the end token and everything before it are committed; tail is filled."""
    policy = fast(threshold=0.9, block_size=6, max_new_tokens=6)
    state = BlockState(policy, 6, MASK, end_id=END, fill_id=6)
    logits = torch.zeros(6, V)
    logits[2, END] = 20.0  # end-of-reply at position 2, confident
    logits[4, 3] = 20.0
    r1 = state.step(logits)
    assert set(r1.committed) == {2, 4} and not r1.reply_done
    logits[0, 4] = 20.0
    r2 = state.step(logits)
    assert r2.committed == [0] and not r2.reply_done
    logits[1, 5] = 20.0
    r3 = state.step(logits)
    assert r3.reply_done and r3.block_done and r3.end_index == 2 and state.done
    assert state.x.tolist() == [4, 5, END, 6, 6, 6]


def test_stop_policy_find_end() -> None:
    """find_end returns the first committed end with a fully committed prefix."""
    stop = StopPolicy(end_id=1)
    x = torch.tensor([3, 1, 9, 1])
    assert stop.find_end(x, torch.tensor([False, False, True, False])) == 1
    assert stop.find_end(x, torch.tensor([True, False, False, False])) is None
    assert stop.find_end(torch.tensor([3, 3]), torch.tensor([False, False])) is None
    stop.apply(x, 1)
    assert x.tolist() == [3, 1, 1, 1]


def test_production_policy_never_commits_mask_token() -> None:
    """With forbid_mask_token the mask id is never chosen even if it has the top logit."""
    state = BlockState(fast(block_size=4, max_new_tokens=4), 4, MASK, end_id=END)
    logits = torch.zeros(4, V)
    logits[:, MASK] = 50.0
    while not state.done:
        state.step(logits)
    assert MASK not in state.x.tolist()


def test_block_state_guards() -> None:
    """Wrong logits shape, missing end_id and stepping a finished block raise."""
    with pytest.raises(ValueError, match="end_id"):
        BlockState(fast(), 4, MASK)
    state = BlockState(_policy(FixedCount(1), block_size=2), 2, MASK)
    with pytest.raises(ValueError, match="logits"):
        state.step(torch.zeros(3, V))
    state.step(torch.randn(2, V))
    with pytest.raises(RuntimeError):
        state.step(torch.randn(2, V))


# --- presets and config parsing ------------------------------------------------------------


def test_presets_and_round_trip() -> None:
    """Presets build the documented parts and to_dict round-trips through policy_from_dict."""
    ref = fixed_schedule(steps=64, gen_length=128, block_length=32, temperature=0.5)
    assert isinstance(ref.unmask, FixedCount) and ref.unmask.steps == 16
    assert ref.block_lengths() == [32] * 4 and ref.rng_layout == "reference"
    f = fast(threshold=0.8, block_size=32, max_new_tokens=100, temperature=0.7, top_p=0.9)
    assert isinstance(f.chooser, TopKTopP) and f.block_lengths() == [32, 32, 32, 4]
    fr = fast_revise(max_revisions=5)
    assert fr.revision is not None and fr.max_steps_per_block() == 32 + 5
    for p in (ref, f, fr):
        assert policy_from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "turbo"}, "unknown policy"),
        ({}, "unknown policy"),
        ({"name": "fast", "thresh": 0.9}, "unknown parameter"),
        ({"name": "fast", "max_new_tokens": 0}, "max_new_tokens"),
        ({"name": "fast", "max_new_tokens": 10**6}, "max_new_tokens"),
        ({"name": "fast", "max_new_tokens": True}, "max_new_tokens"),
        ({"name": "fast", "threshold": 0.0}, "tau"),
        ({"name": "fast", "threshold": 1.5}, "tau"),
        ({"name": "fast", "threshold": "0.9"}, "tau"),
        ({"name": "fast", "threshold": float("nan")}, "tau"),
        ({"name": "fast", "block_size": 64, "max_new_tokens": 32}, "block_size"),
        ({"name": "fast", "temperature": -1.0}, "temperature"),
        ({"name": "fast", "top_k": 5}, "temperature"),
        ({"name": "fast", "temperature": 1.0, "top_p": 0.0}, "top_p"),
        ({"name": "fast_revise", "revise_below": 1.0}, "revise_below"),
        ({"name": "fast_revise", "max_revisions": 0}, "max_revisions"),
        (
            {"name": "fixed_schedule", "steps": 50, "gen_length": 100, "block_length": 32},
            "multiple",
        ),
        ({"name": "fixed_schedule", "steps": 6, "gen_length": 128, "block_length": 32}, "multiple"),
        ({"name": "fixed_schedule", "steps": 256, "gen_length": 128}, "steps"),
        ({"name": "fixed_schedule", "remasking": "sideways"}, "remasking"),
    ],
)
def test_bad_config_raises_clear_value_error(config: dict[str, Any], message: str) -> None:
    """Unknown names/params and out-of-range values raise ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        policy_from_dict(config)


@pytest.mark.parametrize(
    "policy",
    [
        fast(threshold=0.5, block_size=8, max_new_tokens=8),
        fixed_schedule(steps=4, gen_length=8, block_length=8),
        dataclasses.replace(fast(0.5, 8, 8), confidence=MarginConfidence()),
    ],
    ids=["threshold", "fixed-count", "margin"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reducing_only_masked_rows_changes_nothing(
    policy: DecodingPolicy, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A greedy step without revision reads the vocabulary only at masked positions; the
    block it decodes is the one the full computation decodes, step for step."""
    import dlm_runtime.policies as policies

    assert policies.masked_rows_suffice(policy)
    generator = torch.Generator().manual_seed(3)
    steps = [torch.randn(8, 50, generator=generator).to(dtype) * 2 for _ in range(8)]

    def decode() -> list[list[int]]:
        block = BlockState(policy, 8, mask_id=1, end_id=2)
        states = []
        for logits in steps:
            if block.done:
                break
            block.step(logits)
            states.append(block.x.tolist())
        return states

    reduced = decode()
    monkeypatch.setattr(policies, "masked_rows_suffice", lambda _policy: False)
    assert decode() == reduced
    assert len(reduced) > 1


def test_serialize_repeats_keeps_the_more_confident_of_a_repeated_pair() -> None:
    """ "the answer answer is": two neighbours drawn at once with one token; one waits."""
    commit = torch.tensor([True, True, True, True, False, True])
    tokens = torch.tensor([3, 5, 5, 2, 2, 2])
    confidence = torch.tensor([0.9, 0.6, 0.8, 0.9, 0.1, 0.95])
    kept = serialize_repeats(commit, tokens, confidence)
    # 1 and 2 repeat: 1 (less confident) waits; 3 and 5 are not neighbours committed together.
    assert kept.tolist() == [True, False, True, True, False, True]
    assert serialize_repeats(commit, torch.arange(6), confidence) is commit


@SETTINGS
@given(length=st.integers(2, 16), seed=st.integers(0, 2**16))
def test_serial_repeats_never_commits_a_repeated_pair_in_one_step(length: int, seed: int) -> None:
    """With the option on, no step commits two neighbours with the same token, every step
    still commits something, and the block finishes within its step bound."""
    g = torch.Generator().manual_seed(seed)
    policy = dataclasses.replace(
        _policy(ConfidenceThreshold(0.05), block_size=length), serial_repeats=True
    )
    state = BlockState(policy, length, MASK)
    while not state.done:
        logits = torch.randn(length, 3, generator=g) * 0.1  # few tokens: repeats are common
        logits = torch.cat([logits, torch.full((length, V - 3), -30.0)], dim=-1)
        result = state.step(logits)
        assert result.committed and not result.forced
        now = set(result.committed)
        x = state.x.tolist()
        assert not any(i in now and i + 1 in now and x[i] == x[i + 1] for i in range(length))
    assert not state.masked.any()


def test_fast_preset_offers_serial_repeats() -> None:
    assert not fast().serial_repeats and "serial_repeats" not in fast().params
    on = policy_from_dict({"name": "fast", "serial_repeats": True})
    assert on.serial_repeats and on.to_dict()["serial_repeats"] is True
