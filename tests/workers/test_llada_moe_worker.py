"""A worker serving a LLaDA-MoE checkpoint through ASSISTANT_MODEL_PATH.

The checkpoint is the tiny random one of ``tests/runtime/llada_moe_data`` (the family's own
layout: ``"model_type": "llada"`` with MoE keys, its ``<|mask|>`` / ``<|role_end|>`` tokens and
a role-tag chat template). The engine runs it in its own pattern, bidirectional as LLaDA; the
left-to-right modes, which it was never trained for, are refused at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes, for_model
from assistant.agent.loop import AgentLoop, DraftUpdate, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.demo.shop import build_shop
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from dlm_runtime.decoding import Pattern
from dlm_runtime.llada_moe import LLaDAMoEModel
from workers.generator import load_generator

CHECKPOINT = Path(__file__).parents[1] / "runtime" / "llada_moe_data" / "checkpoint"


async def test_worker_answers_with_llada_moe() -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    generator, tokenizer = load_generator(Settings(model_path=str(CHECKPOINT), device="cpu"))
    try:
        assert isinstance(generator.engine.model, LLaDAMoEModel)
        default_pattern = generator.engine.info.default_pattern
        assert default_pattern is Pattern.BIDIRECTIONAL
        mode = for_model(decoding_modes()[DEFAULT_MODE], default_pattern)
        with pytest.raises(UserError, match="left to right"):
            for_model(decoding_modes()["autoregressive"], default_pattern)
        loop = AgentLoop(
            generator.submit,
            tokenizer,
            ToolRunner(MemoryShop(build_shop())),
            mode,
            context=generator.context,
            entity_slots=False,
        )
        history = [HistoryItem("user", "where is my order?")]
        events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"), seed=0)]
    finally:
        await generator.close()
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete", final
    assert any(isinstance(e, DraftUpdate) for e in events)
