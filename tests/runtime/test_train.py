"""The joint autoregressive + diffusion training batch, and a tiny training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dlm_runtime.loading import load_model
from dlm_runtime.tokenizer import load_tokenizer
from dlm_runtime.train import (
    Example,
    TrainConfig,
    Trainer,
    certainty_loss,
    joint_batch,
    read_examples,
)

MASK, END, PAD = 1, 7, 0


def _batch(corrupt: float = 0.0):  # type: ignore[no-untyped-def]
    examples = [
        Example(prompt=[2, 20, 21], reply=[30, 31, 32, END]),
        Example(prompt=[2, 22], reply=[33, END]),
    ]
    return joint_batch(examples, 2, MASK, END, PAD, torch.Generator().manual_seed(0), corrupt, 64)


def test_clean_copy_is_causal_and_never_sees_the_noised_copy() -> None:
    """Clean rows attend causally to clean rows only."""
    batch = _batch()
    mask = batch.attention_mask[0, 0]
    clean_len = batch.ar_targets.shape[1]
    assert torch.equal(mask[:7, :7], torch.ones(7, 7, dtype=torch.bool).tril())
    assert not mask[:clean_len, clean_len:].any()


def test_noised_block_sees_clean_prefix_and_its_own_block() -> None:
    """A noised token attends to the clean copy before its block and to its whole block."""
    batch = _batch()
    mask = batch.attention_mask[0, 0]
    clean_len = batch.ar_targets.shape[1]  # 7
    first, second = clean_len, clean_len + 2  # noised blocks of size 2; prompt length 3
    assert mask[first, :3].all() and not mask[first, 3:clean_len].any()
    assert mask[second, :5].all() and not mask[second, 5:clean_len].any()
    assert mask[first, first : first + 2].all() and not mask[first, second:].any()
    assert mask[second, second : second + 2].all() and not mask[second, first:second].any()
    # Positions of the noised copy continue the prompt's.
    assert batch.position_ids[0, clean_len : clean_len + 4].tolist() == [3, 4, 5, 6]


def test_targets() -> None:
    """AR targets are the next reply tokens; diffusion targets only where masked."""
    batch = _batch()
    assert batch.ar_targets[0].tolist() == [-100, -100, 30, 31, 32, END, -100]
    clean_len = batch.ar_targets.shape[1]
    noised = batch.input_ids[0, clean_len:]
    targets = batch.diffusion_targets[0]
    masked = noised == MASK
    assert masked.any()
    assert torch.equal(targets[masked], torch.tensor([30, 31, 32, END])[masked[:4]])
    assert (targets[~masked] == -100).all()
    # The shorter example's reply is padded with end tokens to a whole block.
    assert batch.reply_tokens == 4 + 2


def test_prompt_targets_cover_the_prompt_only() -> None:
    """Prompt targets are the next prompt tokens; the reply's stay with the AR targets."""
    batch = _batch()
    assert batch.prompt_targets[0].tolist() == [20, 21, -100, -100, -100, -100, -100]
    assert batch.prompt_targets[1].tolist() == [22, -100, -100, -100, -100, -100, -100]


def test_corruption_puts_visible_tokens_in_the_loss() -> None:
    """With corruption on, every reply position of the noised copy carries a target."""
    batch = _batch(corrupt=0.5)
    clean_len = batch.ar_targets.shape[1]
    assert (batch.diffusion_targets[0, :4] != -100).all()
    assert (batch.diffusion_weights[0, :4] > 0).all()
    assert batch.input_ids.shape[1] == clean_len + 4


def _corpus(path: Path) -> Path:
    line = {
        "messages": [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "Hi! How can I help?"},
        ]
    }
    call = {
        "messages": [
            {"role": "user", "content": "where is [ORDER_ID_1]?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "[ORDER_ID_1]"}}],
            },
        ]
    }
    path.write_text("\n".join(json.dumps(x) for x in [line, call] * 20))
    return path


def _tiny_config(tmp_path: Path, **schedule: Any) -> TrainConfig:
    """A two-layer run on the tiny corpus; ``schedule`` sets steps, evals and blocks."""
    data = _corpus(tmp_path / "train.jsonl")
    words = tmp_path / "words.json"
    words.write_text(json.dumps(["[ORDER_ID_1]"]))
    return TrainConfig(
        train_file=str(data),
        eval_file=str(data),
        out_dir=str(tmp_path / "run"),
        added_words_file=str(words),
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        batch_size=4,
        eval_batches=1,
        **schedule,
    )


def test_domain_repeats_weight_a_domain_in_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "hi"}], "domain": "refusal"},
        {"messages": [{"role": "user", "content": "yo"}], "domain": "support"},
        {"messages": [{"role": "user", "content": "old"}]},  # no domain: once
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    texts = [m[0]["content"] for m in read_examples(path, {"refusal": 3})]
    assert texts == ["hi", "hi", "hi", "yo", "old"]
    assert [m[0]["content"] for m in read_examples(path)] == ["hi", "yo", "old"]
    with pytest.raises(ValueError, match="domain_repeats"):
        Trainer(_tiny_config(tmp_path, domain_repeats={"refusal": 0}))


def test_tiny_training_run_resumes_and_exports(tmp_path: Path) -> None:
    """A few steps train, checkpoint, resume from the checkpoint and export a loadable model."""
    config = _tiny_config(
        tmp_path,
        max_steps=4,
        warmup_steps=2,
        eval_every=2,
        checkpoint_every=2,
        block_sizes=[2, 4],
    )
    first = Trainer(config)
    first.config.max_steps = 2
    first.run()
    config.max_steps = 4
    resumed = Trainer(config)
    assert resumed.step == 2
    resumed.run()
    model = load_model(tmp_path / "run" / "model")
    assert model.config.mask_token_id == resumed.mask_id
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()
    assert resumed.tokenizer.convert_tokens_to_ids("[ORDER_ID_1]") >= 10


def test_best_held_out_weights_are_kept_resumed_and_exported(tmp_path: Path) -> None:
    """The lowest held-out loss is remembered across a resume and its weights exported."""
    config = _tiny_config(
        tmp_path,
        max_steps=2,
        warmup_steps=1,
        eval_every=1,
        checkpoint_every=1,
        block_sizes=[2],
    )
    trainer = Trainer(config)
    trainer.run()
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] == trainer.best_step and best["held_out_loss"] == trainer.best_loss
    # A worse loss keeps the old best; a better one replaces it.
    assert not trainer.note_held_out(trainer.best_loss + 1.0)
    resumed = Trainer(config)
    assert (resumed.best_step, resumed.best_loss) == (trainer.best_step, trainer.best_loss)
    resumed.export(tmp_path / "exported", best=True)
    exported = load_model(tmp_path / "exported", dtype="float32")
    kept = load_model(tmp_path / "run" / "model", dtype="float32")
    for name, tensor in exported.state_dict().items():
        assert torch.equal(tensor, kept.state_dict()[name])


def test_snapshots_and_prompt_loss(tmp_path: Path) -> None:
    """With snapshot_every, loadable models are written along the way; prompt loss trains."""
    config = _tiny_config(
        tmp_path, max_steps=2, warmup_steps=1, eval_every=2, snapshot_every=1, block_sizes=[2]
    )
    config.prompt_ar_weight = 0.5
    config.entity_slots = False
    Trainer(config).run()
    for step in (1, 2):
        snapshot = tmp_path / "run" / "snapshots" / f"step-{step}"
        assert load_model(snapshot).config.vocab_size == len(load_tokenizer(snapshot))
    # The data's slot scheme travels with the model (the assistant reads it per model).
    assert (
        json.loads((tmp_path / "run" / "model" / "config.json").read_text())["entity_slots"]
        is False
    )


def test_fine_tuning_extends_the_vocabulary_and_keeps_the_weights(tmp_path: Path) -> None:
    """init_from continues a trained model: old ids and weights kept, new words appended."""
    (tmp_path / "base").mkdir()
    base = _tiny_config(tmp_path / "base", max_steps=1, warmup_steps=1, block_sizes=[2])
    Trainer(base).run()
    base_dir = tmp_path / "base" / "run" / "model"
    words = tmp_path / "more-words.json"
    words.write_text(json.dumps(["[ORDER_ID_1]", "[CARRIER_1]"]))
    tuned = _tiny_config(tmp_path, max_steps=1, warmup_steps=1, block_sizes=[2])
    tuned.init_from, tuned.added_words_file = str(base_dir), str(words)
    tuned.hidden_size = 999  # ignored: the shape comes from the base model
    trainer = Trainer(tuned)
    old = load_tokenizer(base_dir)
    assert len(trainer.tokenizer) == len(old) + 1
    assert trainer.tokenizer.convert_tokens_to_ids("[CARRIER_1]") == len(old)
    assert trainer.tokenizer.convert_tokens_to_ids("[ORDER_ID_1]") == old.convert_tokens_to_ids(
        "[ORDER_ID_1]"
    )
    base_model = load_model(base_dir, dtype="float32")
    assert trainer.model.config.hidden_size == base_model.config.hidden_size
    embedding = trainer.model.state_dict()["embed_tokens.weight"]
    base_embedding = base_model.state_dict()["embed_tokens.weight"]
    assert torch.equal(embedding[: len(old)], base_embedding)
    assert torch.allclose(embedding[len(old)], base_embedding.mean(dim=0))
    trainer.run()
    assert load_model(tmp_path / "run" / "model").config.vocab_size == len(old) + 1


def test_masked_positions_are_marked_apart_from_corrupted_ones() -> None:
    batch = _batch(corrupt=0.5)
    clean_len = batch.ar_targets.shape[1]
    noised = batch.input_ids[:, clean_len:]
    assert torch.equal(batch.diffusion_masked, noised == MASK)


def test_certainty_loss_is_the_entropy_of_right_guesses_at_masked_positions() -> None:
    batch = _batch()
    targets = batch.diffusion_targets
    vocab = 40
    # Logits that rank the target first at every masked position, flat elsewhere.
    logits = torch.zeros((*targets.shape, vocab), requires_grad=True)
    with torch.no_grad():
        right = batch.diffusion_masked & (targets >= 0)
        logits[right, targets[right]] = 2.0
    loss = certainty_loss(logits, batch)
    probs = torch.softmax(torch.tensor([2.0] + [0.0] * (vocab - 1)), dim=-1)
    assert loss.item() == pytest.approx(float(-(probs * probs.log()).sum()), rel=1e-5)
    loss.backward()
    # Lowering the entropy of a right guess means raising its target logit.
    assert logits.grad is not None and (logits.grad[right, targets[right]] < 0).all()
    assert (logits.grad[~right] == 0).all()


def test_certainty_loss_ignores_wrong_guesses() -> None:
    batch = _batch()
    logits = torch.zeros((*batch.diffusion_targets.shape, 40), requires_grad=True)
    with torch.no_grad():
        logits[..., 1] = 5.0  # token 1 is never a target here
    loss = certainty_loss(logits, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and (logits.grad == 0).all()
