"""Native LLaDA vs. an independent transcription of the published modeling_llada.py math."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dlm_runtime import CheckpointError, llada_generate, load_model
from dlm_runtime.attention import block_causal_mask
from dlm_runtime.llada import LLaDAModel
from dlm_runtime.loading import RemoteCodeModel

VOCAB = 48
MASK = 47
EOS = 46

# A LLaDA-8B-Instruct config.json shrunk to toy sizes (every key the published file has).
BASE_CONFIG: dict[str, Any] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 32,
    "embedding_dropout": 0.0,
    "embedding_size": VOCAB,
    "eos_token_id": EOS,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": MASK,
    "max_sequence_length": 64,
    "mlp_hidden_size": 40,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 2,
    "pad_token_id": EOS,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "use_cache": False,
    "vocab_size": VOCAB,
    "weight_tying": False,
}

VARIANTS: dict[str, dict[str, Any]] = {
    "untied-gqa": {},
    "tied-gqa": {"weight_tying": True},
    "mha-qkv-bias": {"n_kv_heads": 4, "include_qkv_bias": True},
}


def random_llada_weights(cfg: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with exactly the published checkpoint's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    d, hd = cfg["d_model"], cfg["d_model"] // cfg["n_heads"]
    kv, mlp, vocab = cfg["n_kv_heads"] * hd, cfg["mlp_hidden_size"], cfg["embedding_size"]

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def norm() -> torch.Tensor:
        return 1.0 + rnd(d, scale=0.1)

    w = {"model.transformer.wte.weight": rnd(vocab, d, scale=0.5)}
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        w |= {
            p + "attn_norm.weight": norm(),
            p + "q_proj.weight": rnd(d, d),
            p + "k_proj.weight": rnd(kv, d),
            p + "v_proj.weight": rnd(kv, d),
            p + "attn_out.weight": rnd(d, d),
            p + "ff_norm.weight": norm(),
            p + "ff_proj.weight": rnd(mlp, d),
            p + "up_proj.weight": rnd(mlp, d),
            p + "ff_out.weight": rnd(d, mlp),
        }
        if cfg["include_qkv_bias"] or cfg["include_bias"]:
            w |= {p + "q_proj.bias": rnd(d), p + "k_proj.bias": rnd(kv), p + "v_proj.bias": rnd(kv)}
    w["model.transformer.ln_f.weight"] = norm()
    if not cfg["weight_tying"]:
        w["model.transformer.ff_out.weight"] = rnd(vocab, d, scale=0.5)
    return w


def write_checkpoint(path: Path, variant: str = "untied-gqa", **overrides: Any) -> dict[str, Any]:
    cfg = {**BASE_CONFIG, **VARIANTS[variant], **overrides}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(random_llada_weights(cfg), str(path / "model.safetensors"))
    return cfg


# --- independent transcription of the published forward (LLaDAModel.forward, llama block) -----


def transcribed_logits(sd: dict[str, torch.Tensor], cfg: dict[str, Any], x: torch.Tensor) -> Any:
    """modeling_llada.py's math on the raw state dict: no cache, attention_bias None."""
    n_heads, n_kv = cfg["n_heads"], cfg["n_kv_heads"]
    eps = cfg["rms_norm_eps"]

    def linear(h: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(h, sd[name + ".weight"], sd.get(name + ".bias"))

    def rms_layer_norm(h: torch.Tensor, name: str) -> torch.Tensor:  # RMSLayerNorm.forward
        og_dtype = h.dtype
        h = h.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + eps)
        return sd[name + ".weight"] * h.to(og_dtype)

    def get_rotary_embedding(seq_len: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        seq = torch.arange(seq_len, dtype=torch.float)
        freqs = torch.einsum("i , j -> i j", seq, inv_freq)
        positions = torch.cat((freqs, freqs), dim=-1)
        return positions.sin()[None, None, :, :], positions.cos()[None, None, :, :]

    def rotate_half(t: torch.Tensor) -> torch.Tensor:
        b, nh, tl, hs = t.size()
        t = t.view(b, nh, tl, 2, hs // 2)
        x1, x2 = t.unbind(dim=-2)
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(sin: torch.Tensor, cos: torch.Tensor, t: torch.Tensor) -> Any:
        return ((t * cos) + (rotate_half(t) * sin)).to(t.dtype)

    h = F.embedding(x, sd["model.transformer.wte.weight"])
    batch, seq_len, c = h.shape
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        x_normed = rms_layer_norm(h, p + "attn_norm")
        q = linear(x_normed, p + "q_proj").view(batch, seq_len, n_heads, c // n_heads)
        k = linear(x_normed, p + "k_proj").view(batch, seq_len, n_kv, c // n_heads)
        v = linear(x_normed, p + "v_proj").view(batch, seq_len, n_kv, c // n_heads)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        pos_sin, pos_cos = get_rotary_embedding(seq_len, c // n_heads)
        q = apply_rotary_pos_emb(pos_sin, pos_cos, q.float()).type_as(q)
        k = apply_rotary_pos_emb(pos_sin, pos_cos, k.float()).type_as(k)
        k = k.repeat_interleave(n_heads // n_kv, dim=1, output_size=n_heads)
        v = v.repeat_interleave(n_heads // n_kv, dim=1, output_size=n_heads)
        # Written out instead of calling sdpa, so the check does not share our kernel.
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        att = torch.softmax(scores, dim=-1) @ v
        att = att.transpose(1, 2).contiguous().view(batch, seq_len, c)
        h = h + linear(att, p + "attn_out")
        og_x = h
        h = rms_layer_norm(h, p + "ff_norm")
        h, x_up = linear(h, p + "ff_proj"), linear(h, p + "up_proj")
        h = F.silu(h)
        h = h * x_up
        h = linear(h, p + "ff_out")
        h = og_x + h
    h = rms_layer_norm(h, "model.transformer.ln_f")
    if cfg["weight_tying"]:
        return F.linear(h, sd["model.transformer.wte.weight"], None)
    return linear(h, "model.transformer.ff_out")


class Transcribed:
    """The transcription as a callable model for the reference sampler."""

    def __init__(self, sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> None:
        self.sd, self.cfg = sd, cfg

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=transcribed_logits(self.sd, self.cfg, x))


def ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB - 2, shape, generator=torch.Generator().manual_seed(seed))


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transcription(tmp_path: Path, variant: str) -> None:
    """Native LLaDA logits equal the transcribed published forward (atol 1e-5)."""
    cfg = write_checkpoint(tmp_path, variant)
    model = load_model(tmp_path)
    assert isinstance(model, LLaDAModel)
    sd = load_file(str(tmp_path / "model.safetensors"))
    x = ids(2, 11)
    with torch.no_grad():
        got = model(x).logits
    want = transcribed_logits(sd, cfg, x)
    assert got.shape == (2, 11, VOCAB)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_config_view_uses_native_names(tmp_path: Path) -> None:
    """model.config answers with the native config's attribute names."""
    write_checkpoint(tmp_path)
    model = load_model(tmp_path)
    assert isinstance(model, LLaDAModel)
    cfg = model.config
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (MASK, EOS, EOS)
    assert (cfg.vocab_size, cfg.max_position_embeddings) == (VOCAB, 64)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers) == (4, 2, 2)
    assert cfg.entity_slots is False and cfg.tie_word_embeddings is False


def test_cached_block_equals_full(tmp_path: Path) -> None:
    """LLaDA on a cache with the block-causal mask == one full block-causal pass."""
    write_checkpoint(tmp_path, "tied-gqa")
    model = load_model(tmp_path)
    x = ids(1, 10)
    blocks = torch.tensor([0] * 4 + [1] * 3 + [2] * 3)
    with torch.no_grad():
        full = model(x, attention_mask=block_causal_mask(blocks, blocks)).logits
        pre = model(x[:, :7], attention_mask=block_causal_mask(blocks[:7], blocks[:7]))
        last = model(
            x[:, 7:],
            attention_mask=block_causal_mask(blocks[7:], blocks),
            past_key_values=pre.new_key_values,
        ).logits
    torch.testing.assert_close(last, full[:, 7:], atol=1e-5, rtol=0)


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    """Weights split over shards with model.safetensors.index.json load like a single file."""
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    cfg = write_checkpoint(single)
    weights = load_file(str(single / "model.safetensors"))
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(cfg))
    names = sorted(weights)
    halves = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, keys in halves.items():
        save_file({k: weights[k] for k in keys}, str(sharded / file))
    index = {"weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    x = ids(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(load_model(sharded)(x).logits, load_model(single)(x).logits)


GENERATE_CASES = [
    # steps, gen_length, block_length, temperature, cfg_scale, remasking
    (8, 8, 8, 0.0, 0.0, "low_confidence"),
    (8, 8, 4, 0.0, 0.0, "low_confidence"),
    (4, 8, 4, 0.0, 0.0, "random"),
    (8, 8, 4, 0.7, 0.0, "low_confidence"),
    (6, 6, 3, 1.0, 0.0, "random"),
    (4, 8, 8, 0.0, 1.5, "low_confidence"),
    (8, 8, 4, 0.5, 1.0, "random"),
]


@pytest.mark.parametrize(
    ("steps", "gen_length", "block_length", "temperature", "cfg_scale", "remasking"),
    GENERATE_CASES,
)
def test_llada_generate_matches_transcription(
    tmp_path: Path,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float,
    cfg_scale: float,
    remasking: str,
) -> None:
    """llada_generate.generate: same tokens with native LLaDA and with the transcription."""
    cfg = write_checkpoint(tmp_path, "untied-gqa")
    model = load_model(tmp_path)
    transcribed = Transcribed(load_file(str(tmp_path / "model.safetensors")), cfg)
    prompt = ids(2, 5, seed=4)
    kwargs: dict[str, Any] = {
        "steps": steps,
        "gen_length": gen_length,
        "block_length": block_length,
        "temperature": temperature,
        "cfg_scale": cfg_scale,
        "remasking": remasking,
        "mask_id": MASK,
    }
    torch.manual_seed(1234)
    ours = llada_generate.generate(model, prompt, **kwargs)
    torch.manual_seed(1234)
    theirs = llada_generate.generate(transcribed, prompt, **kwargs)
    assert ours.shape == (2, 5 + gen_length)
    assert torch.equal(ours[:, :5], prompt)
    assert torch.equal(ours, theirs)


def test_llada_generate_schedule_helpers() -> None:
    """get_num_transfer_tokens spreads the remainder over the first steps; T=0 adds no noise."""
    mask = torch.tensor([[True] * 7 + [False], [True] * 3 + [False] * 5])
    assert llada_generate.get_num_transfer_tokens(mask, 3).tolist() == [[3, 2, 2], [1, 1, 1]]
    logits = torch.randn(2, 3)
    assert llada_generate.add_gumbel_noise(logits, 0.0) is logits
    assert llada_generate.add_gumbel_noise(logits, 1.0).dtype == torch.float64


# --- bad inputs -------------------------------------------------------------------------------


def test_missing_required_key(tmp_path: Path) -> None:
    """A LLaDA config without mask_token_id names the key."""
    cfg = write_checkpoint(tmp_path)
    del cfg["mask_token_id"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="'mask_token_id'"):
        load_model(tmp_path)


def test_unsupported_feature_explains_opt_in(tmp_path: Path) -> None:
    """An unsupported LLaDA feature says what it is and how to opt in to remote code."""
    write_checkpoint(tmp_path, block_type="sequential")
    with pytest.raises(CheckpointError, match=r"block_type='sequential'.*trust_remote_code"):
        load_model(tmp_path)


def test_weight_names_checked(tmp_path: Path) -> None:
    """A tied config with an ff_out head, or an untied one without it, names the key."""
    cfg = write_checkpoint(tmp_path)  # untied weights
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "weight_tying": True}))
    with pytest.raises(CheckpointError, match=r"unexpected weight 'model\.transformer\.ff_out"):
        load_model(tmp_path)
    write_checkpoint(tmp_path, "tied-gqa")
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "weight_tying": False}))
    with pytest.raises(CheckpointError, match=r"'model\.transformer\.ff_out\.weight' is missing"):
        load_model(tmp_path)


def test_kv_head_shape_mismatch(tmp_path: Path) -> None:
    """Weights written for n_kv_heads=2 under a config saying 4 name the k_proj weight."""
    cfg = write_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_kv_heads": 4}))
    with pytest.raises(CheckpointError, match=r"'model\.transformer\.blocks\.0\.k_proj\.weight'"):
        load_model(tmp_path)


def test_trust_remote_code_wraps_remote_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trust_remote_code=True an unsupported config goes through AutoModel and is wrapped."""
    write_checkpoint(tmp_path, block_type="sequential")
    calls: list[dict[str, Any]] = []

    class FakeRemote(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, VOCAB))

    def fake_from_pretrained(path: str, **kwargs: Any) -> FakeRemote:
        calls.append(kwargs)
        return FakeRemote()

    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_from_pretrained)
    model = load_model(tmp_path, trust_remote_code=True)
    assert isinstance(model, RemoteCodeModel) and calls[0]["trust_remote_code"] is True
    assert model.config.mask_token_id == MASK
    assert model(ids(1, 4)).logits.shape == (1, 4, VOCAB)
    with pytest.raises(NotImplementedError):
        model(ids(1, 4), attention_mask=torch.ones(1, 1, 4, 4, dtype=torch.bool))
