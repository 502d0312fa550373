"""A worker serving a foreign checkpoint: start-up checks, decoding modes, one turn.

The checkpoint is a tiny random one in LLaDA-8B-Instruct's own layout (tests/tiny_llada.py),
loaded through ASSISTANT_MODEL_PATH as a user points a worker at one. Nothing here touches a
network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes, for_model
from assistant.checkpoints import model_dir, uses_entity_slots
from assistant.core.config import Settings
from assistant.core.errors import UserError
from dlm_runtime.decoding import Pattern
from tests.tiny_llada import write_tiny_llada
from tests.workers.serving import serve_one_turn
from workers.generator import load_generator


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llada(tmp_path_factory.mktemp("llada") / "LLaDA-tiny-Instruct")


def test_checkpoint_directory_and_entity_slots(checkpoint: Path) -> None:
    assert model_dir(str(checkpoint)) == checkpoint
    assert not uses_entity_slots(checkpoint)  # a foreign model gets real values


def test_tokenizer_without_a_chat_template_stops_the_worker_at_start(tmp_path: Path) -> None:
    path = write_tiny_llada(tmp_path / "c", template=None)
    with pytest.raises(UserError, match="chat template"):
        load_generator(Settings(model_path=str(path), device="cpu"))


def test_hub_id_without_network_stops_the_worker_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="someone/not-cached-model"):
        load_generator(Settings(model_path="someone/not-cached-model", device="cpu"))


@pytest.mark.parametrize(
    "mode_name", [DEFAULT_MODE, pytest.param("vanilla-diffusion", marks=pytest.mark.slow)]
)
async def test_worker_engine_answers_with_the_foreign_checkpoint(
    checkpoint: Path, mode_name: str
) -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    served = await serve_one_turn(checkpoint, mode_name)
    assert served.mode.pattern is Pattern.DEFAULT_DIFFUSION  # LLaDA's own: bidirectional
    assert served.final.text


def test_left_to_right_modes_are_refused_for_a_bidirectional_model() -> None:
    modes = decoding_modes()
    assert for_model(modes["speculative"], Pattern.PREFIX_CAUSAL) is modes["speculative"]
    assert for_model(modes[DEFAULT_MODE], Pattern.PREFIX_CAUSAL) is modes[DEFAULT_MODE]
    for name in ("autoregressive", "speculative"):
        with pytest.raises(UserError, match="ASSISTANT_DECODING_MODE"):
            for_model(modes[name], Pattern.BIDIRECTIONAL)
    vanilla = for_model(modes["vanilla-diffusion"], Pattern.BIDIRECTIONAL)
    assert vanilla.policy == modes["vanilla-diffusion"].policy


def test_a_model_trained_both_ways_keeps_left_to_right_modes() -> None:
    """Nemotron-Labs-Diffusion: its own block diffusion for the diffusion modes, its causal
    mode for the others."""
    modes = decoding_modes()
    for name in ("autoregressive", "speculative"):
        assert for_model(modes[name], Pattern.SEEDED_BLOCKS) is modes[name]
    fast = for_model(modes[DEFAULT_MODE], Pattern.SEEDED_BLOCKS)
    assert fast.pattern is Pattern.DEFAULT_DIFFUSION
    assert fast.policy == modes[DEFAULT_MODE].policy


def test_serve_checks_a_hub_id_before_starting_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant.app.serve import check_model_path

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="someone/not-cached-model: not a local directory"):
        check_model_path(Settings(model_path="someone/not-cached-model"))
    with pytest.raises(UserError, match="is not a directory"):
        check_model_path(Settings(model_path=str(tmp_path / "no" / "such" / "dir")))
