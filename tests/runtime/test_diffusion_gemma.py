"""DiffusionGemma, loaded through load_model, against transformers' own generate.

The checkpoint is written at test time by transformers (``tests/tiny_diffusion_gemma.py``), and
the reference is transformers' ``DiffusionGemmaForBlockDiffusion.generate`` run on a separately
loaded copy with the same torch seed. float32 on CPU, one torch thread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from dlm_runtime import CheckpointError, load_model
from dlm_runtime.chat_format import chat_format
from dlm_runtime.diffusion_gemma import DiffusionGemmaModel, generate, new_tokens
from dlm_runtime.tokenizer import load_tokenizer
from tests.tiny_diffusion_gemma import TURN_END, write_tiny_diffusion_gemma

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS: dict[str, Any] = {
    "max_new_tokens": 16,
    "max_denoising_steps": 6,
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_diffusion_gemma(tmp_path_factory.mktemp("dgemma") / "ckpt")


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> DiffusionGemmaModel:
    loaded = load_model(checkpoint, dtype="float32")
    assert isinstance(loaded, DiffusionGemmaModel)
    return loaded


@pytest.fixture(scope="module")
def upstream(checkpoint: Path) -> Any:
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(checkpoint), dtype=torch.float32)


def _upstream_generate(upstream: Any, ids: torch.Tensor, seed: int, **kwargs: Any) -> Any:
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSamplerConfig,
    )

    torch.manual_seed(seed)
    return upstream.generate(
        ids,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=kwargs.pop("entropy_bound")),
        **SETTINGS,
        **kwargs,
    ).sequences


def test_loads_as_transformers_model(model: DiffusionGemmaModel, upstream: Any) -> None:
    assert model.config.model_type == "diffusion_gemma"
    assert model.config.canvas_length == 8
    assert model.config.mask_token_id is None
    assert type(model.inner) is type(upstream)
    assert next(model.inner.parameters()).dtype == torch.float32
    ours, theirs = model.inner.state_dict(), upstream.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize(("seed", "entropy_bound"), [(0, 0.1), (1, 0.1), (2, 2.0)])
def test_token_exact_to_transformers_generate(
    model: DiffusionGemmaModel, upstream: Any, seed: int, entropy_bound: float
) -> None:
    ids = torch.tensor([[2, 3, 40, 41, 42, 4, 3]])
    want = _upstream_generate(upstream, ids, seed, entropy_bound=entropy_bound)
    torch.manual_seed(seed)
    got = generate(model, ids, entropy_bound=entropy_bound, **SETTINGS)
    assert got.tolist() == want.tolist()
    assert got.shape[1] == ids.shape[1] + 16  # two canvases of 8


def test_left_padded_batch_is_token_exact(model: DiffusionGemmaModel, upstream: Any) -> None:
    ids = torch.tensor([[0, 0, 2, 40, 41], [2, 50, 51, 52, 53]])
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    want = _upstream_generate(upstream, ids, 5, entropy_bound=0.5, attention_mask=attention)
    torch.manual_seed(5)
    got = generate(model, ids, attention, entropy_bound=0.5, **SETTINGS)
    assert got.tolist() == want.tolist()


def test_draft_and_canvas_hooks(model: DiffusionGemmaModel) -> None:
    """Each denoising step's argmax canvas, then each finished canvas, which is the output."""
    drafts: list[list[int]] = []
    canvases: list[list[int]] = []
    ids = torch.tensor([[2, 3, 40, 41]])
    torch.manual_seed(3)
    out = generate(
        model,
        ids,
        entropy_bound=0.1,
        on_draft=lambda t: drafts.append(t[0].tolist()),
        on_canvas=lambda t: canvases.append(t[0].tolist()),
        **SETTINGS,
    )
    assert len(canvases) == 2 and all(len(c) == 8 for c in canvases)
    assert out[0, 4:].tolist() == canvases[0] + canvases[1]
    assert 2 <= len(drafts) <= 2 * SETTINGS["max_denoising_steps"]
    assert all(len(d) == 8 for d in drafts)


def test_generation_config_json_is_honoured(tmp_path: Path) -> None:
    """Unset arguments take the checkpoint's generation_config.json, as upstream's do."""
    root = write_tiny_diffusion_gemma(tmp_path / "g", max_new_tokens=8, max_denoising_steps=3)
    loaded = load_model(root)
    assert isinstance(loaded, DiffusionGemmaModel)
    steps: list[int] = []
    torch.manual_seed(0)
    out = generate(loaded, torch.tensor([[2, 40]]), on_draft=lambda t: steps.append(1))
    assert out.shape == (1, 2 + 8)
    assert len(steps) <= 3


def test_new_tokens_cut_after_end(model: DiffusionGemmaModel) -> None:
    seq = torch.tensor([[2, 40, 7, 1, 9, 9], [2, 40, 7, 8, 9, 9]])
    assert new_tokens(model, seq, 2) == [[7, 1], [7, 8, 9, 9]]


def test_tokenizer_and_chat_template(checkpoint: Path) -> None:
    tok = load_tokenizer(checkpoint)
    fmt = chat_format(tok, [1])
    assert not fmt.native
    assert {1, TURN_END} <= fmt.end_ids  # <eos> and Gemma 4's <turn|>
    ids = fmt.encode([{"role": "user", "content": "Where is my order?"}])
    text = tok.decode(ids)
    assert text.startswith("<bos><|turn>user\nWhere is my order?<turn|>\n")
    assert text.endswith("<|turn>model\n")


def test_engine_forward_is_refused(model: DiffusionGemmaModel) -> None:
    with pytest.raises(NotImplementedError, match="no mask token"):
        model(torch.tensor([[2, 3]]))


def _edit_config(checkpoint: Path, tmp_path: Path, edit: Any) -> Path:
    root = tmp_path / "edited"
    shutil.copytree(checkpoint, root)
    config = json.loads((root / "config.json").read_text())
    edit(config)
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("text_config"), "missing required key 'text_config'"),
        (lambda c: c["text_config"].pop("hidden_size"), "text_config.hidden_size"),
        (lambda c: c.update(canvas_length=0), "canvas_length=0"),
        (lambda c: c["text_config"].update(num_experts=None), "num_experts"),
        (lambda c: c["text_config"].update(hidden_size=48), "transformers cannot load"),
    ],
)
def test_bad_config_is_a_checkpoint_error(
    checkpoint: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_model(_edit_config(checkpoint, tmp_path, edit))


def test_missing_weights_is_a_checkpoint_error(checkpoint: Path, tmp_path: Path) -> None:
    root = _edit_config(checkpoint, tmp_path, lambda c: None)
    (root / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_model(root)


def test_missing_tensor_is_a_checkpoint_error(checkpoint: Path, tmp_path: Path) -> None:
    """A weight absent from the file is refused, not randomly initialised."""
    from safetensors.torch import load_file, save_file

    root = _edit_config(checkpoint, tmp_path, lambda c: None)
    tensors = load_file(str(root / "model.safetensors"))
    name = next(k for k in tensors if "decoder" in k and "layers.0" in k)
    del tensors[name]
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(root)


def test_end_token_pads_and_stops_as_upstream(model: DiffusionGemmaModel, upstream: Any) -> None:
    """With an end token (here whatever the first canvas emits at its third position) both
    finish the row at that canvas: padding after the end token, no second canvas."""
    ids = torch.tensor([[2, 3, 40, 41, 42, 4, 3]])
    torch.manual_seed(0)
    free = generate(model, ids, entropy_bound=0.1, **SETTINGS)
    end = int(free[0, 7 + 2])
    first_end = free[0, 7:].tolist().index(end)
    want = _upstream_generate(upstream, ids, 0, entropy_bound=0.1, eos_token_id=end, pad_token_id=0)
    torch.manual_seed(0)
    got = generate(model, ids, entropy_bound=0.1, eos_token_id=end, pad_token_id=0, **SETTINGS)
    assert got.tolist() == want.tolist()
    assert got.shape[1] == 7 + 8
    assert got[0, 7 : 7 + first_end + 1].tolist() == free[0, 7 : 7 + first_end + 1].tolist()
    assert set(got[0, 7 + first_end + 1 :].tolist()) <= {0}
    assert new_tokens(model, got, 7, end) == [free[0, 7 : 7 + first_end + 1].tolist()]


def test_adaptive_stopping_is_token_exact(model: DiffusionGemmaModel, upstream: Any) -> None:
    """Loose thresholds end each canvas at its first step, as upstream's do. (The random
    model's argmax canvas never holds still for a step, so the stability check is off.)"""
    ids = torch.tensor([[2, 3, 40, 41, 42, 4, 3], [2, 9, 50, 51, 52, 53, 4]])
    loose = SETTINGS | {"confidence_threshold": 50.0, "stability_threshold": 0}
    torch.manual_seed(7)
    want = upstream.generate(ids, **loose).sequences
    drafts: list[int] = []
    torch.manual_seed(7)
    got = generate(model, ids, on_draft=lambda t: drafts.append(1), **loose)
    assert got.tolist() == want.tolist()
    assert len(drafts) == 2  # one step per canvas
