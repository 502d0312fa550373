"""A worker serving the load-adaptive mode measures its device's forward costs at start-up."""

from __future__ import annotations

import asyncio

import torch

from assistant.core.config import Settings
from workers.generator import load_generator


def test_adaptive_worker_measures_forward_costs_when_it_loads() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = Settings(model_path="", device="cpu", decoding_mode="adaptive-diffusion")
        generator, _ = load_generator(settings, max_batch=2)
        parallelism = generator.engine.info.parallelism
        assert parallelism is not None
        assert {rows for rows, _ in parallelism.cost.seconds_by_shape} == {1, 2}
        asyncio.run(generator.close())
        plain, _ = load_generator(Settings(model_path="", device="cpu"), max_batch=2)
        assert plain.engine.info.parallelism is None  # only the adaptive mode needs it
        asyncio.run(plain.close())
    finally:
        torch.set_num_threads(before)
