"""One agent turn against a worker serving a checkpoint, as the foreign-checkpoint tests run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes, for_model
from assistant.agent.loop import AgentLoop, DraftUpdate, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.core.config import Settings
from assistant.demo.shop import build_shop
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from dlm_runtime.decoding import DecodingMode, Pattern
from workers.generator import load_generator


@dataclass
class ServedTurn:
    """What a worker loaded and how its turn ended."""

    model: nn.Module
    default_pattern: Pattern
    mode: DecodingMode
    final: TurnFinished


async def serve_one_turn(model_path: Path, mode_name: str = DEFAULT_MODE) -> ServedTurn:
    """load_generator -> Engine -> agent loop on one user message; checks that drafts stream and
    the turn completes."""
    generator, tokenizer = load_generator(Settings(model_path=str(model_path), device="cpu"))
    try:
        default_pattern = generator.engine.info.default_pattern
        mode = for_model(decoding_modes()[mode_name], default_pattern)
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
    return ServedTurn(generator.engine.model, default_pattern, mode, final)
