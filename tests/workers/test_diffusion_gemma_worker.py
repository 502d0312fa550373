"""A worker serving a DiffusionGemma checkpoint through ASSISTANT_MODEL_PATH.

The engine runs it with its own sampler (dlm_runtime.engine.canvas, settings from the
checkpoint's generation_config.json); the worker's diffusion modes give it the reply budget, and
the left-to-right modes, which it was never trained for, are refused at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.agent.decoding import decoding_modes, for_model
from assistant.core.errors import UserError
from dlm_runtime.decoding import Pattern
from tests.tiny_diffusion_gemma import write_tiny_diffusion_gemma
from tests.workers.serving import serve_one_turn


async def test_worker_answers_with_diffusion_gemma(tmp_path: Path) -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    # Four denoising steps per 8-token canvas keep the random model's long replies short.
    path = write_tiny_diffusion_gemma(tmp_path / "dgemma", context=4096, max_denoising_steps=4)
    served = await serve_one_turn(path)
    assert served.mode.pattern is Pattern.DEFAULT_DIFFUSION
    with pytest.raises(UserError, match="left to right"):
        for_model(decoding_modes()["autoregressive"], served.default_pattern)
