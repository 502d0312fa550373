"""A worker serving a LLaDA-MoE checkpoint through ASSISTANT_MODEL_PATH.

The checkpoint is the tiny random one of ``tests/runtime/llada_moe_data`` (the family's own
layout: ``"model_type": "llada"`` with MoE keys, its ``<|mask|>`` / ``<|role_end|>`` tokens and
a role-tag chat template). The engine runs it in its own pattern, bidirectional as LLaDA; the
left-to-right modes, which it was never trained for, are refused at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.agent.decoding import decoding_modes, for_model
from assistant.core.errors import UserError
from dlm_runtime.decoding import Pattern
from dlm_runtime.llada_moe import LLaDAMoEModel
from tests.workers.serving import serve_one_turn

CHECKPOINT = Path(__file__).parents[1] / "runtime" / "llada_moe_data" / "checkpoint"


async def test_worker_answers_with_llada_moe() -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    served = await serve_one_turn(CHECKPOINT)
    assert isinstance(served.model, LLaDAMoEModel)
    assert served.default_pattern is Pattern.BIDIRECTIONAL
    with pytest.raises(UserError, match="left to right"):
        for_model(decoding_modes()["autoregressive"], served.default_pattern)
