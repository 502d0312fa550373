"""Tiny random model configurations shared by the tests that need a real model."""

from __future__ import annotations

import time
from typing import Any

from torch import nn
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


class Slow(nn.Module):
    """Wraps a model so every forward takes at least ``delay`` seconds (turns stay in flight)."""

    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.config: Any = inner.config
        self.delay = delay

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self.inner(*args, **kwargs)
