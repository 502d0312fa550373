"""Which checkpoint the assistant serves: the bundled one (with its training configs) or another."""

from __future__ import annotations

from pathlib import Path

from dlm_runtime.hub import resolve_checkpoint
from dlm_runtime.loading import CheckpointError, read_config
from dlm_runtime.modeling import DLMConfig

BUNDLED_DIR = Path(__file__).parent / "bundled"


def model_dir(configured: str = "") -> Path:
    """The configured checkpoint directory (a hub model id is downloaded), or the bundled one.

    Raises :class:`CheckpointError` when a hub id cannot be downloaded.
    """
    return resolve_checkpoint(configured) if configured else BUNDLED_DIR


def uses_entity_slots(path: Path, setting: str = "auto") -> bool:
    """Whether the checkpoint at ``path`` reads entities as placeholders (assistant.entities.slots).

    A per-model setting: ``entity_slots`` in its config.json, written by the trainer. A
    native checkpoint without the key was trained with slots; a foreign one (a large model
    that copies strings well) gets the real values. ``setting`` "on"/"off" overrides.
    """
    if setting in ("on", "off"):
        return setting == "on"
    try:
        raw = read_config(path)
    except CheckpointError:
        return True  # the model load that follows reports what is wrong with it
    if raw.get("model_type") == DLMConfig.model_type:
        return bool(DLMConfig(**raw).entity_slots)
    return bool(raw.get("entity_slots", False))
