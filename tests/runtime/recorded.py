"""Helpers of the tests against a family's recorded upstream outputs (``tests/runtime/*_data``):
its tiny checkpoint loaded in both dtypes, an edited copy of it, and the check that this CPU does
the recording machine's float32 arithmetic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from dlm_runtime import load_model
from dlm_runtime.attention import causal_mask

M = TypeVar("M", bound=nn.Module)

DTYPES = ("float32", "bfloat16")


def load_dtypes(root: Path, model_class: type[M]) -> dict[str, M]:
    """The checkpoint at ``root`` loaded in each dtype of :data:`DTYPES`, as ``model_class``."""
    loaded = {d: load_model(root, dtype=d) for d in DTYPES}
    assert all(isinstance(m, model_class) for m in loaded.values())
    return loaded  # type: ignore[return-value]


def copy_checkpoint(source: Path, dest: Path, **changes: Any) -> Path:
    """A copy of ``source`` at ``dest`` whose config.json has ``changes`` (``None`` removes the
    key)."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def causal_logits_recorded(model: nn.Module, expected: dict[str, Any]) -> bool:
    """Whether ``model``'s causal float32 logits of ``expected["forward_input"]`` equal the
    recorded ``causal_logits_first_columns`` bit for bit, i.e. this CPU does the arithmetic of the
    machine that ran upstream's code (elsewhere bfloat16 ties may break the other way)."""
    ids = torch.tensor(expected["forward_input"])
    t = ids.shape[1]
    logits = model(ids, attention_mask=causal_mask(torch.arange(t), torch.arange(t)))
    raw = torch.tensor(expected["causal_logits_first_columns"], dtype=torch.float32)
    return bool(torch.equal(logits.logits[0, :, :8], raw))


def skip_bfloat16_elsewhere(dtype: str, recording_arithmetic: bool) -> None:
    """Skip a bfloat16 case where this CPU's float32 arithmetic is not the recording machine's:
    its sums round differently in the last bits, which float32 argmaxes survive but bfloat16
    ties need not. Token-exactness in bfloat16 is checked where the arithmetic matches."""
    if dtype == "bfloat16" and not recording_arithmetic:
        pytest.skip(
            "this CPU rounds differently from the machine that recorded upstream's outputs "
            "(its float32 logits differ in the last bits), so bfloat16 ties can break the "
            "other way; token-exactness in bfloat16 is checked where the arithmetic matches"
        )
