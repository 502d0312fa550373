"""Per-model settings read from a checkpoint directory, and the decoding modes' knobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.agent.decoding import FAST_THRESHOLD, decoding_modes
from assistant.checkpoints import BUNDLED_DIR, uses_entity_slots


def _checkpoint(tmp_path: Path, **config: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "dlm"}, True),  # native, trained before the key existed: slots
        ({"model_type": "dlm", "entity_slots": False}, False),
        ({"model_type": "llada"}, False),  # a foreign model copies strings itself
        ({"model_type": "llada", "entity_slots": True}, True),
    ],
)
def test_entity_slots_follow_the_checkpoint(
    tmp_path: Path, config: dict[str, object], expected: bool
) -> None:
    """auto reads config.json's entity_slots, defaulting by model type."""
    assert uses_entity_slots(_checkpoint(tmp_path, **config)) is expected


def test_entity_slot_setting_overrides_the_checkpoint(tmp_path: Path) -> None:
    """on and off win over the checkpoint's own setting."""
    path = _checkpoint(tmp_path, model_type="dlm", entity_slots=True)
    assert uses_entity_slots(path, "off") is False
    assert uses_entity_slots(_checkpoint(tmp_path, model_type="llada"), "on") is True


def test_bundled_model_uses_slots() -> None:
    """The bundled checkpoint was trained on placeholders."""
    assert uses_entity_slots(BUNDLED_DIR) is True


def test_fast_modes_take_sweep_settings() -> None:
    """A sweep sets the fast modes' threshold and revision floor; others are untouched."""
    served = decoding_modes()
    swept = decoding_modes(threshold=0.5, revise_below=0.3, block_size=16)
    assert swept["fast-diffusion"].policy.params["threshold"] == 0.5
    assert swept["fast-diffusion+revision"].policy.params["revise_below"] == 0.3
    assert swept["fast-diffusion"].policy.block_size == 16
    assert served["fast-diffusion"].policy.params["threshold"] == FAST_THRESHOLD
    assert swept["autoregressive"] == served["autoregressive"]


def test_first_checkpoints_name_for_the_setting_is_read(tmp_path: Path) -> None:
    """copy_entities, the first checkpoints' key, means the same as entity_slots."""
    assert uses_entity_slots(_checkpoint(tmp_path, model_type="dlm", copy_entities=False)) is False
