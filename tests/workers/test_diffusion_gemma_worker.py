"""A worker pointed at a DiffusionGemma checkpoint stops at start-up, saying why.

DiffusionGemma loads (dlm_runtime.load_model) and the engine runs it with its own sampler
(dlm_runtime.diffusion_gemma.diffusion_gemma_policy), but the worker's decoding modes do not
offer that policy yet, so a worker must refuse it before its first turn rather than fail at it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.core.config import Settings
from assistant.core.errors import UserError
from tests.tiny_diffusion_gemma import write_tiny_diffusion_gemma
from workers.generator import load_generator


def test_diffusion_gemma_stops_the_worker_at_start(tmp_path: Path) -> None:
    path = write_tiny_diffusion_gemma(tmp_path / "dgemma")
    with pytest.raises(UserError, match="DiffusionGemma cannot run under the engine"):
        load_generator(Settings(model_path=str(path), device="cpu"))
