"""Native model, attention helpers and checkpoint loading (tiny random weights, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from dlm_runtime import CheckpointError, DLMConfig, DLMModel, load_model, save_model
from dlm_runtime.attention import (
    block_causal_mask,
    causal_mask,
    kv_concat,
    kv_length,
    kv_pad_stack,
    kv_slice,
    kv_unstack,
    padding_mask,
)
from dlm_runtime.modeling import guard_empty_rows

VOCAB = 64


def tiny_config(**overrides: object) -> DLMConfig:
    kwargs: dict[str, object] = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "mask_token_id": VOCAB - 1,
        "eos_token_id": 1,
        "pad_token_id": 0,
        # Large enough that logits are far from ties, so greedy comparisons are meaningful.
        "initializer_range": 0.2,
    }
    kwargs.update(overrides)
    return DLMConfig(**kwargs)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, **overrides: object) -> DLMModel:
    torch.manual_seed(seed)
    model = DLMModel(tiny_config(**overrides)).eval()
    with torch.no_grad():  # norms start at 1; perturb them so their weights are exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def ids(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB - 1, shape, generator=g)


# --- attention helpers ------------------------------------------------------------------------


def test_block_causal_mask_values() -> None:
    """Keys in earlier or the same block are visible, later blocks and invalid slots are not."""
    blocks = torch.tensor([0, 0, 1, 1, 2])
    valid = torch.tensor([True, False, True, True, True])
    m = block_causal_mask(blocks, blocks, valid)
    assert m.shape == (1, 1, 5, 5)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 0, 1, 1, 0],
            [1, 0, 1, 1, 0],
            [1, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m[0, 0], expected)


def test_causal_and_padding_masks() -> None:
    """causal_mask is lower-triangular on positions; padding_mask only hides invalid keys."""
    pos = torch.arange(4)
    assert torch.equal(causal_mask(pos, pos)[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())
    q = torch.tensor([[2, 3]])
    k = torch.arange(4)[None]
    assert causal_mask(q, k)[0, 0].tolist() == [[True, True, True, False], [True] * 4]
    valid = torch.tensor([[True, False, True]])
    assert padding_mask(valid, 2).tolist() == [[[[True, False, True], [True, False, True]]]]


def test_kv_helpers_round_trip() -> None:
    """pad-stack then unstack returns each request's cache; concat/slice are inverses."""
    a = [(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)) for _ in range(2)]
    b = [(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)) for _ in range(2)]
    stacked, valid = kv_pad_stack([a, b])
    assert kv_length(stacked) == 5 and valid.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    for orig, back in zip([a, b], kv_unstack(stacked, valid), strict=True):
        for (k0, v0), (k1, v1) in zip(orig, back, strict=True):
            assert torch.equal(k0, k1) and torch.equal(v0, v1)
    joined = kv_concat(a, b)
    assert kv_length(joined) == 8 and kv_length(kv_concat(None, a)) == 3
    assert torch.equal(kv_slice(joined, 3)[1][0], b[1][0])


# --- forward semantics ------------------------------------------------------------------------


def test_forward_shapes_and_default_full_attention() -> None:
    """Logits/kv shapes follow the API; mask=None equals an all-True mask."""
    model = tiny_model()
    x = ids(2, 7)
    out = model(x)
    assert out.logits.shape == (2, 7, VOCAB)
    assert len(out.new_key_values) == 2 and out.new_key_values[0][0].shape == (2, 2, 7, 8)
    full = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    torch.testing.assert_close(model(x, attention_mask=full).logits, out.logits)


def test_bad_mask_shape_rejected() -> None:
    """A mask whose key length does not match past + input is a ValueError."""
    with pytest.raises(ValueError, match="attention_mask"):
        tiny_model()(ids(1, 4), attention_mask=torch.ones(1, 1, 4, 5, dtype=torch.bool))


def test_block_causal_cached_equals_uncached() -> None:
    """Prefix blocks cached, last block run on the cache == one full block-causal pass."""
    model = tiny_model()
    x = ids(2, 13)
    blocks = torch.tensor([0] * 5 + [1] * 4 + [2] * 4)
    with torch.no_grad():
        full = model(x, attention_mask=block_causal_mask(blocks, blocks)).logits
        pre = model(x[:, :9], attention_mask=block_causal_mask(blocks[:9], blocks[:9]))
        last = model(
            x[:, 9:],
            attention_mask=block_causal_mask(blocks[9:], blocks),
            past_key_values=pre.new_key_values,
        ).logits
    torch.testing.assert_close(pre.logits, full[:, :9], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, full[:, 9:], atol=1e-5, rtol=0)


def test_causal_cached_greedy_equals_recompute() -> None:
    """Token-by-token causal decoding on the cache == recomputing the whole causal sequence."""
    model = tiny_model(seed=3)
    prompt = ids(1, 4, seed=5)
    with torch.no_grad():
        seq = prompt.clone()
        slow_logits = []
        for _ in range(6):
            pos = torch.arange(seq.shape[1])
            step = model(seq, attention_mask=causal_mask(pos, pos)).logits[:, -1]
            slow_logits.append(step)
            seq = torch.cat([seq, step.argmax(-1, keepdim=True)], dim=1)

        pos = torch.arange(prompt.shape[1])
        out = model(prompt, attention_mask=causal_mask(pos, pos))
        cache, fast = out.new_key_values, prompt.clone()
        step = out.logits[:, -1]
        fast_logits = [step]
        for _ in range(5):
            nxt = step.argmax(-1, keepdim=True)
            fast = torch.cat([fast, nxt], dim=1)
            p = kv_length(cache)
            out = model(
                nxt,
                attention_mask=causal_mask(torch.tensor([p]), torch.arange(p + 1)),
                past_key_values=cache,
            )
            cache = kv_concat(cache, out.new_key_values)
            step = out.logits[:, -1]
            fast_logits.append(step)
        fast = torch.cat([fast, step.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(fast, seq)
    torch.testing.assert_close(
        torch.stack(fast_logits), torch.stack(slow_logits), atol=1e-5, rtol=0
    )


def test_padded_batch_equals_single_requests() -> None:
    """Two requests with different cached prefix lengths, pad-stacked, match each run alone."""
    model = tiny_model(seed=7)
    prefixes = [ids(1, 3, seed=11), ids(1, 6, seed=12)]
    blocks = [ids(1, 4, seed=13), ids(1, 4, seed=14)]
    with torch.no_grad():
        caches, alone, alone_kv = [], [], []
        for prefix, block in zip(prefixes, blocks, strict=True):
            cache = model(prefix).new_key_values
            out = model(block, past_key_values=cache)  # prefix length P, positions P..P+3
            caches.append(cache)
            alone.append(out.logits)
            alone_kv.append(kv_concat(cache, out.new_key_values))

        past, valid = kv_pad_stack(caches)
        lengths = torch.tensor([3, 6])
        positions = lengths[:, None] + torch.arange(4)
        valid_k = torch.cat([valid, torch.ones(2, 4, dtype=torch.bool)], dim=1)
        key_blocks = torch.cat([torch.zeros(2, 6), torch.ones(2, 4)], dim=1)
        mask = block_causal_mask(torch.ones(2, 4), key_blocks, valid_k)
        out = model(
            torch.cat(blocks), position_ids=positions, attention_mask=mask, past_key_values=past
        )
    for row in range(2):
        torch.testing.assert_close(out.logits[row : row + 1], alone[row], atol=1e-5, rtol=0)
    split = kv_unstack(kv_concat(past, out.new_key_values), valid_k)
    for got, want in zip(split, alone_kv, strict=True):
        for (k0, v0), (k1, v1) in zip(got, want, strict=True):
            torch.testing.assert_close(k0, k1, atol=1e-5, rtol=0)
            torch.testing.assert_close(v0, v1, atol=1e-5, rtol=0)


def test_all_false_mask_row_is_finite_and_isolated() -> None:
    """A query row that may attend to nothing yields finite logits (it attends to itself)."""
    model = tiny_model()
    x = ids(1, 5)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 2] = False
    own = mask.clone()
    own[0, 0, 2, 2] = True  # the documented fallback: an empty row attends to itself
    with torch.no_grad():
        out = model(x, attention_mask=mask).logits
        fallback = model(x, attention_mask=own).logits
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, fallback)


def test_guard_empty_rows_uses_own_key_slot() -> None:
    """With a cache, an empty query row t is pointed at key slot P + t and nothing else."""
    mask = torch.zeros(1, 1, 2, 5, dtype=torch.bool)
    mask[0, 0, 0, 1] = True
    fixed = guard_empty_rows(mask)
    assert fixed[0, 0].tolist() == [[False, True, False, False, False], [False] * 4 + [True]]


def test_gqa_matches_repeated_kv_heads() -> None:
    """A GQA model equals the MHA model whose k/v heads are the GQA heads repeated."""
    gqa = tiny_model(num_key_value_heads=2)
    mha = DLMModel(tiny_config(num_key_value_heads=4)).eval()
    sd = gqa.state_dict()
    for name in list(sd):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = sd[name].view(2, 8, 32)  # [kv_heads, head_dim, hidden]
            sd[name] = w.repeat_interleave(2, dim=0).reshape(32, 32)
    mha.load_state_dict(sd)
    x = ids(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(mha(x).logits, gqa(x).logits, atol=1e-5, rtol=0)


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip(tmp_path: Path, tied: bool) -> None:
    """save_model then load_model (and AutoModel) reproduce the logits exactly."""
    model = tiny_model(tie_word_embeddings=tied)
    save_model(model, tmp_path)
    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert ("lm_head.weight" in names) is not tied
    x = ids(2, 6)
    with torch.no_grad():
        want = model(x).logits
        loaded = load_model(tmp_path)
        assert isinstance(loaded, DLMModel) and not loaded.training
        assert loaded.config.tie_word_embeddings is tied
        assert loaded.config.mask_token_id == VOCAB - 1 and loaded.config.entity_slots is True
        assert torch.equal(loaded(x).logits, want)
        auto = AutoModel.from_pretrained(str(tmp_path))
        assert isinstance(auto, DLMModel)
        auto.eval()
        assert torch.equal(auto(x).logits, want)
    assert isinstance(AutoConfig.from_pretrained(str(tmp_path)), DLMConfig)


def test_tied_logits_use_embedding_matrix() -> None:
    """With tied embeddings the output projection is the embedding matrix itself."""
    model = tiny_model(tie_word_embeddings=True)
    assert model.lm_head is None
    x = ids(1, 3)
    with torch.no_grad():
        out = model(x).logits
        model.embed_tokens.weight[5].zero_()
        assert torch.all(model(x).logits[..., 5] == 0) and not torch.all(out[..., 5] == 0)


def test_load_model_dtype_and_entity_slots(tmp_path: Path) -> None:
    """dtype= casts the weights; entity_slots survives the round trip."""
    save_model(tiny_model(entity_slots=False), tmp_path)
    model = load_model(tmp_path, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    assert model.config.entity_slots is False
    # The first checkpoints' name for it still loads.
    assert DLMConfig(copy_entities=False).entity_slots is False
    assert model(ids(1, 3)).logits.dtype == torch.float64


def _edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_files_are_reported(tmp_path: Path) -> None:
    """A directory without model.safetensors or config.json raises CheckpointError naming it."""
    save_model(tiny_model(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nope")


def test_missing_config_key_is_named(tmp_path: Path) -> None:
    """A config without a required key names that key."""
    save_model(tiny_model(), tmp_path)
    _edit_config(tmp_path, hidden_size=None)
    with pytest.raises(CheckpointError, match="'hidden_size'"):
        load_model(tmp_path)


def test_unknown_model_type(tmp_path: Path) -> None:
    """An unknown model_type is refused with the type in the message."""
    save_model(tiny_model(), tmp_path)
    _edit_config(tmp_path, model_type="gpt9")
    with pytest.raises(CheckpointError, match="unknown model_type 'gpt9'"):
        load_model(tmp_path)


def test_weight_mismatches_name_the_key(tmp_path: Path) -> None:
    """Shape mismatch, missing and unexpected weights each name the offending key."""
    save_model(tiny_model(), tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    _edit_config(tmp_path, intermediate_size=40)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.mlp\.gate_proj\.weight' has shape"):
        load_model(tmp_path)
    _edit_config(tmp_path, intermediate_size=48)

    missing = dict(weights)
    del missing["norm.weight"]
    save_file(missing, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'norm\.weight' is missing"):
        load_model(tmp_path)

    save_file(weights, str(tmp_path / "model.safetensors"))
    _edit_config(tmp_path, tie_word_embeddings=True)
    with pytest.raises(CheckpointError, match=r"unexpected weight 'lm_head\.weight'.*ties"):
        load_model(tmp_path)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    """An unreadable safetensors file is a CheckpointError, not a raw library error."""
    save_model(tiny_model(), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(tmp_path)
