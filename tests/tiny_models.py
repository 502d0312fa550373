"""Tiny random model configurations shared by the tests that need a real model."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerFast

from dlm_runtime.modeling import DLMConfig
from dlm_runtime.tokenizer import special_token_ids


def tiny_config(tok: PreTrainedTokenizerFast, **overrides: Any) -> DLMConfig:
    """A 2-layer model config sized for ``tok``, with its special ids; fields overridable."""
    sp = special_token_ids(tok)
    fields: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "mask_token_id": sp.mask,
        "eos_token_id": sp.end,
        "pad_token_id": sp.pad,
    }
    fields.update(overrides)
    return DLMConfig(**fields)
