"""Deepening a checkpoint (dlm_runtime.grow): same logits before training, and a model that
trains from there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime.grow import grow_checkpoint, main
from dlm_runtime.loading import save_model
from dlm_runtime.modeling import DLMModel
from dlm_runtime.tokenizer import save_tokenizer


@pytest.fixture
def checkpoint(tmp_path: Path, dlm: DLMModel, tok: PreTrainedTokenizerFast) -> Path:
    source = tmp_path / "source"
    save_model(dlm, source)
    save_tokenizer(tok, source)
    return source


def test_a_deepened_model_computes_the_same_logits(checkpoint: Path, dlm: DLMModel) -> None:
    out = checkpoint.parent / "grown"
    assert grow_checkpoint(checkpoint, out, after=[0, 1, 1]) == 5
    grown = DLMModel.from_pretrained(out).eval()
    assert grown.config.num_hidden_layers == 5
    ids = torch.randint(3, dlm.config.vocab_size, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(grown(ids).logits, dlm(ids).logits, rtol=0, atol=1e-6)
    # The copies are real layers, not no-ops: their inputs are the copied layer's weights,
    # so a step of training changes what they add.
    original = dlm.layers[1].self_attn.q_proj.weight
    torch.testing.assert_close(grown.layers[3].self_attn.q_proj.weight, original)
    assert torch.count_nonzero(grown.layers[3].self_attn.o_proj.weight) == 0
    assert torch.count_nonzero(grown.layers[4].mlp.down_proj.weight) == 0
    assert (out / "tokenizer.json").is_file()


def test_the_new_layers_learn(checkpoint: Path) -> None:
    out = checkpoint.parent / "grown"
    grow_checkpoint(checkpoint, out, after=[1])
    grown = DLMModel.from_pretrained(out).train()
    ids = torch.randint(3, grown.config.vocab_size, (2, 9))
    logits = grown(ids).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    assert grown.layers[2].self_attn.o_proj.weight.grad.abs().sum() > 0
    assert grown.layers[2].mlp.down_proj.weight.grad.abs().sum() > 0


def test_the_command_rejects_a_layer_the_checkpoint_lacks(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--from", str(checkpoint), "--after", "0,7", "--out", str(checkpoint.parent / "x")])
    assert "layers [7] do not exist: the checkpoint has 2 layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--from", str(checkpoint), "--after", "one", "--out", str(checkpoint.parent / "x")])
    assert "expected layer indices like 1,2,3" in capsys.readouterr().err
