"""A worker serving a DiffusionGemma checkpoint through ASSISTANT_MODEL_PATH.

The engine runs it with its own sampler (dlm_runtime.engine.canvas, settings from the
checkpoint's generation_config.json); the worker's diffusion modes give it the reply budget, and
the left-to-right modes, which it was never trained for, are refused at start-up.
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
from tests.tiny_diffusion_gemma import write_tiny_diffusion_gemma
from workers.generator import load_generator


async def test_worker_answers_with_diffusion_gemma(tmp_path: Path) -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    # Four denoising steps per 8-token canvas keep the random model's long replies short.
    path = write_tiny_diffusion_gemma(tmp_path / "dgemma", context=4096, max_denoising_steps=4)
    generator, tokenizer = load_generator(Settings(model_path=str(path), device="cpu"))
    try:
        default_pattern = generator.engine.info.default_pattern
        mode = for_model(decoding_modes()[DEFAULT_MODE], default_pattern)
        assert mode.pattern is Pattern.DEFAULT_DIFFUSION
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
