"""A checkpoint named by a Hugging Face Hub model id: downloaded once, then a local directory.

:func:`resolve_checkpoint` returns an existing local directory as it is. Anything else that
looks like a hub id (``owner/name``) is fetched with ``huggingface_hub.snapshot_download``
(config, weights, tokenizer files and chat template only), from the local cache when it is
there; when the network or the hub refuses, :class:`CheckpointError` says so and how to fix it.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlm_runtime.loading import CheckpointError

__all__ = ["CHECKPOINT_FILES", "looks_like_hub_id", "resolve_checkpoint"]

# What a served checkpoint needs; remote code and other formats' weights are not fetched.
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with the hub's characters (and not an existing local path)."""
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


def resolve_checkpoint(name: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory for ``name``: the directory itself, or a hub download."""
    path = Path(name)
    if path.exists() or not looks_like_hub_id(str(name)):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a transformers dependency
        raise CheckpointError(f"{name}: huggingface_hub is not installed ({exc})") from exc
    try:
        local = snapshot_download(
            repo_id=str(name), revision=revision, allow_patterns=list(CHECKPOINT_FILES)
        )
    except Exception as exc:  # network, auth, unknown repository: all reported the same way
        raise CheckpointError(
            f"{name}: not a local directory, and downloading it from the Hugging Face Hub "
            f"failed ({type(exc).__name__}: {exc}). Check the model id and the network (or "
            "HF_TOKEN for a gated model), or download it first and point at the directory"
        ) from exc
    return Path(local)
