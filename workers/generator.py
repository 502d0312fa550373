"""Model loading and device choice: the diffusion engine the worker submits turns to."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import structlog
import torch

from assistant.checkpoints import model_dir
from assistant.core.config import Settings
from assistant.core.errors import UserError
from dlm_runtime.engine import Draft, Engine, Final, GenerationRequest
from dlm_runtime.loading import CheckpointError, load_model
from dlm_runtime.tokenizer import load_tokenizer

log = structlog.get_logger(__name__)

DEFAULT_MAX_BATCH = 8


class Generator(Protocol):
    """What the worker needs of an engine: submit a request, cancel one by id."""

    def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]: ...

    def cancel(self, request_id: str) -> bool: ...


class EngineGenerator:
    """The diffusion engine behind the :class:`Generator` protocol."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        stream = await self.engine.submit(request)
        try:
            async for event in stream:
                yield event
        finally:
            # Closed now, not when collected: the engine drops an abandoned request at once.
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    def cancel(self, request_id: str) -> bool:
        return self.engine.cancel(request_id)

    @property
    def context(self) -> int | None:
        """Positions the model sees: the prompt plus the reply must fit in them."""
        return self.engine.info.context

    async def close(self) -> None:
        await self.engine.close()


def pick_device(setting: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; anything else is a torch device name."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(setting)
    except RuntimeError:
        raise UserError(
            f"unknown device {setting!r}: use auto, cpu, cuda or cuda:N (ASSISTANT_DEVICE)"
        ) from None


def load_generator(
    settings: Settings, max_batch: int = DEFAULT_MAX_BATCH
) -> tuple[EngineGenerator, Any]:
    """Load the model and tokenizer once and start one engine; return it and the tokenizer."""
    path = model_dir(settings.model_path)
    device = pick_device(settings.device)
    # bfloat16 halves memory and time on accelerators; CPUs are faster and exact in float32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = load_tokenizer(path)
        model = load_model(path, device=device, dtype=dtype)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the model from {path}: {exc} (point ASSISTANT_MODEL_PATH or "
            "--model-path at a checkpoint directory)"
        ) from None
    log.info("model loaded", path=str(path), device=str(device), dtype=str(dtype))
    return EngineGenerator(Engine(model, tokenizer, max_batch=max_batch)), tokenizer
