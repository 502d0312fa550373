"""LLaDA-MoE, loaded through load_model, against its published code's outputs (issue 18, item 6).

``llada_moe_data/checkpoint/`` is a tiny random checkpoint in LLaDA-MoE's own layout (the
config.json keys of inclusionAI/LLaDA-MoE-7B-A1B, ``"model_type": "llada"`` as published, no
``mask_token_id``: the tokenizer's ``<|mask|>`` is the mask; weights named as
``LLaDAMoEModelLM`` names them); ``checkpoint_variant/`` turns on what the first leaves off
(a dense layer, a shared expert, the router's expert bias, partial rotary, clip_qkv, attention
biases, tied embeddings; no q/k norms). ``expected.json`` holds what the published model returned
under LLaDA's ``generate`` (its "provenance" entry says how, ``record.py`` is the script); the
upstream code itself is not in the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dlm_runtime import CheckpointError, llada_generate, load_model
from dlm_runtime.chat_format import chat_format
from dlm_runtime.decoding import Pattern
from dlm_runtime.engine import Engine
from dlm_runtime.llada_moe import LLaDAMoEModel
from dlm_runtime.policies import fixed_schedule
from dlm_runtime.tokenizer import load_tokenizer
from tests.runtime.recorded import copy_checkpoint, load_dtypes, skip_bfloat16_elsewhere
from tests.runtime.test_engine import final, req, run_all

DATA = Path(__file__).parent / "llada_moe_data"
CHECKPOINT = DATA / "checkpoint"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
MASK = 249
LAYOUTS = ("checkpoint", "checkpoint_variant")
CASES = [(layout, case) for layout in LAYOUTS for case in EXPECTED[layout]["cases"]]


def _case_id(item: tuple[str, dict[str, Any]]) -> str:
    layout, case = item
    kw = ",".join(f"{k}={v}" for k, v in case["kwargs"].items())
    shape = "batch" if len(case["prompt"]) > 1 else "single"
    return f"{layout}-{case['dtype']}-{shape}-{kw}"


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], LLaDAMoEModel]:
    return {
        (layout, d): model
        for layout in LAYOUTS
        for d, model in load_dtypes(DATA / layout, LLaDAMoEModel).items()
    }


@pytest.fixture(scope="module")
def recording_arithmetic(models: dict[tuple[str, str], LLaDAMoEModel]) -> bool:
    """Whether this CPU's kernels give the recorded float32 logits bit for bit (elsewhere sums
    round differently, which float32 argmaxes survive but bfloat16 ties need not)."""
    ids = torch.tensor(EXPECTED["forward_input"])
    want = torch.tensor(EXPECTED["checkpoint"]["forward_logits_first_columns"]["float32"])
    with torch.no_grad():
        got = models["checkpoint", "float32"](ids).logits[0, :, :8]
    return bool(torch.equal(got, want))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_equal_published_model(
    models: dict[tuple[str, str], LLaDAMoEModel],
    recording_arithmetic: bool,
    layout: str,
    dtype: str,
) -> None:
    """Bit for bit where this CPU does the recording machine's arithmetic, else to rounding."""
    ids = torch.tensor(EXPECTED["forward_input"])
    want = torch.tensor(EXPECTED[layout]["forward_logits_first_columns"][dtype])
    with torch.no_grad():
        got = models[layout, dtype](ids).logits[0, :, :8].float()
    tolerance = 0.0 if recording_arithmetic else (1e-4 if dtype == "float32" else 0.1)
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance)


@pytest.mark.parametrize("item", CASES, ids=_case_id)
def test_token_exact_to_published_model_under_generate(
    models: dict[tuple[str, str], LLaDAMoEModel],
    recording_arithmetic: bool,
    item: tuple[str, dict[str, Any]],
) -> None:
    """LLaDA's generate over the native model returns what it returned over the published one:
    greedy, Gumbel, random remasking, guidance; one prompt and a batch; float32 and bf16."""
    layout, case = item
    skip_bfloat16_elsewhere(case["dtype"], recording_arithmetic)
    torch.manual_seed(case["seed"])
    out = llada_generate.generate(
        models[layout, case["dtype"]], torch.tensor(case["prompt"]), mask_id=MASK, **case["kwargs"]
    )
    assert out.tolist() == case["output"]


def test_config_view_and_mask_from_tokenizer(
    models: dict[tuple[str, str], LLaDAMoEModel],
) -> None:
    """The published layout says model_type "llada" and has no mask_token_id."""
    raw = json.loads((CHECKPOINT / "config.json").read_text())
    assert raw["model_type"] == "llada" and "mask_token_id" not in raw
    cfg = models["checkpoint", "float32"].config
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.vocab_size) == (MASK, 248, 256)
    variant = models["checkpoint_variant", "float32"].config
    assert variant.rotary_dim == 4 and variant.moe_layers == (False, True)
    assert variant.tie_word_embeddings


def test_cache_and_logits_index(models: dict[tuple[str, str], LLaDAMoEModel]) -> None:
    """The runtime's forward contract: picked positions equal the full forward, and a suffix
    over a cached prefix equals the full forward under the mask where the prefix sees only
    itself (to rounding: different shapes take different kernels)."""
    model = models["checkpoint_variant", "float32"]
    ids = torch.tensor(EXPECTED["forward_input"])
    t = ids.shape[1]
    prefix_only = torch.ones(1, 1, t, t, dtype=torch.bool)
    prefix_only[..., :6, 6:] = False
    with torch.no_grad():
        full = model(ids).logits
        index = torch.tensor([[0, 3, 7, 11]])
        picked = model(ids, logits_index=index).logits
        masked = model(ids, attention_mask=prefix_only).logits
        prefix = model(ids[:, :6])
        rest = model(ids[:, 6:], past_key_values=prefix.new_key_values)
    torch.testing.assert_close(picked, full[:, index[0]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rest.logits, masked[:, 6:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
async def test_engine_serves_llada_moe_as_generate(
    models: dict[tuple[str, str], LLaDAMoEModel], dtype: str, recording_arithmetic: bool
) -> None:
    """The engine's BIDIRECTIONAL pattern (the family's default: full attention, as LLaDA's)
    with fixed_schedule: prompts of different lengths batched together each equal LLaDA's
    generate on that prompt alone (greedy and Gumbel), and the recorded upstream output."""
    model = models["checkpoint", dtype]
    tok = load_tokenizer(CHECKPOINT)
    single = EXPECTED["prompt"][0]
    prompts = [single, single[:5], [*single, 17, 30, 44], single[2:]]
    kw: dict[str, Any] = {"steps": 8, "gen_length": 16, "block_length": 8}
    requests, wants = [], []
    for temperature, seed in ((0.0, 0), (0.8, 3)):
        for i, p in enumerate(prompts):
            torch.manual_seed(seed)
            out = llada_generate.generate(
                model, torch.tensor([p]), mask_id=MASK, temperature=temperature, **kw
            )
            wants.append(out[0, len(p) :].tolist())
            policy = fixed_schedule(temperature=temperature, **kw)
            requests.append(req(f"t{temperature}-{i}", p, policy, Pattern.BIDIRECTIONAL, seed))
    recorded = next(
        c for c in EXPECTED["checkpoint"]["cases"] if c["dtype"] == dtype and c["kwargs"] == kw
    )
    # In bfloat16 only where this CPU rounds as the recording machine did (skip_bfloat16_elsewhere);
    # the engine's agreement with generate() below holds on any CPU.
    if dtype == "float32" or recording_arithmetic:
        assert wants[0] == recorded["output"][0][len(single) :]
    async with Engine(model, tok) as engine:
        assert engine.info.default_pattern is Pattern.BIDIRECTIONAL
        got = await run_all(engine, requests)
    assert [final(got[r.request_id]).token_ids for r in requests] == wants


def test_tokenizer_and_chat_template(models: dict[tuple[str, str], LLaDAMoEModel]) -> None:
    """A deployment's path: the checkpoint's template builds the prompt, ``<|role_end|>``
    ends the turn, generate decodes it."""
    tok = load_tokenizer(CHECKPOINT)
    assert tok.mask_token_id == MASK
    role_end = 250  # <|role_end|>
    assert tok.convert_ids_to_tokens(role_end) == "<|role_end|>"
    chat = chat_format(tok, [role_end])
    ids = chat.encode([{"role": "user", "content": "Where is my order?"}])
    assert tok.convert_ids_to_tokens(ids[-3:]) == ["<role>", "▁ASSISTANT", "</role>"]
    out = llada_generate.generate(
        models["checkpoint", "float32"], torch.tensor([ids]), 8, 16, 8, mask_id=MASK
    )
    reply = chat.reply_ids(out[0, len(ids) :].tolist())
    assert role_end not in reply and isinstance(chat.reply_text(reply), str)


# --- bad configs ------------------------------------------------------------------------------


def _copy_checkpoint(tmp_path: Path, **changes: Any) -> Path:
    return copy_checkpoint(CHECKPOINT, tmp_path / "lladamoe", **changes)


def test_model_type_lladamoe_and_explicit_mask_id(tmp_path: Path) -> None:
    """dllm's renamed type loads the same; a config's own mask_token_id wins over the
    tokenizer's."""
    model = load_model(_copy_checkpoint(tmp_path, model_type="lladamoe", mask_token_id=7))
    assert isinstance(model, LLaDAMoEModel) and model.config.mask_token_id == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_experts_per_tok": None}, "missing required key 'num_experts_per_tok'"),
        ({"moe_layer_freq": [1]}, "moe_layer_freq"),
        ({"moe_layer_freq": [0, 1], "dense_intermediate_size": None}, "dense_intermediate_size"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"moe_router_score_function": "sigmoid"}, "moe_router_score_function"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"partial_rotary_factor": None}, "missing required key 'partial_rotary_factor'"),
    ],
)
def test_bad_config_is_a_checkpoint_error(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_model(_copy_checkpoint(tmp_path, **changes))


def test_missing_mask_names_config_and_tokenizer(tmp_path: Path) -> None:
    root = _copy_checkpoint(tmp_path)
    (root / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"mask_token_id.*no '<\|mask\|>' token"):
        load_model(root)


def test_unsupported_setting_offers_remote_code(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="trust_remote_code=True"):
        load_model(_copy_checkpoint(tmp_path, hidden_act="gelu"))


def test_wrong_expert_weights_are_named(tmp_path: Path) -> None:
    root = _copy_checkpoint(tmp_path, num_experts=4)
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|experts)"):
        load_model(root)


@pytest.mark.parametrize("model_type", ["llada2_moe", "llada21_moe"])
def test_llada2_is_refused_with_the_reason(tmp_path: Path, model_type: str) -> None:
    root = _copy_checkpoint(tmp_path, model_type=model_type)
    with pytest.raises(CheckpointError, match=r"LLaDA2 .*not supported.*block-causal"):
        load_model(root)
    with pytest.raises(CheckpointError, match="LLaDA2"):
        load_model(root, trust_remote_code=True)
