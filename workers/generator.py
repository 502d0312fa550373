"""Model loading and device choice: the diffusion engine the worker submits turns to."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import structlog
import torch

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes
from assistant.checkpoints import model_dir
from assistant.core.config import Settings
from assistant.core.errors import UserError
from dlm_runtime.chat_format import chat_format
from dlm_runtime.decoding import Pattern
from dlm_runtime.engine import Draft, Engine, Final, GenerationRequest
from dlm_runtime.engine.calibrate import measure_forward_cost, row_counts
from dlm_runtime.loading import CheckpointError, load_model
from dlm_runtime.parallelism import Parallelism
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
    device = pick_device(settings.device)
    # bfloat16 halves memory and time on accelerators; CPUs are faster and exact in float32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = settings.model_path or "the bundled checkpoint"
    try:
        path = model_dir(settings.model_path)  # a hub model id is downloaded here
        tokenizer = load_tokenizer(path)
        model = load_model(path, device=device, dtype=dtype)
        # A foreign checkpoint's chat template and end tokens, checked now, not at a turn.
        chat = chat_format(tokenizer, _config_end_ids(model.config))
    except (CheckpointError, OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the model from {path}: {exc} (point ASSISTANT_MODEL_PATH or "
            "--model-path at a checkpoint directory or a Hugging Face Hub model id)"
        ) from None
    log.info(
        "model loaded",
        path=str(path),
        device=str(device),
        dtype=str(dtype),
        chat_format="native" if chat.native else "checkpoint template",
        tool_format=chat.tool_format,
    )
    parallelism = None
    mode = decoding_modes().get(settings.decoding_mode or DEFAULT_MODE)
    if mode is not None and mode.pattern is Pattern.ADAPTIVE and model.config.model_type == "dlm":
        # Measured now rather than at the first turn, which would wait for it.
        parallelism = Parallelism(measure_forward_cost(model, device, max_batch))
        log.info(
            "forward costs measured",
            block_length_by_rows=parallelism.plan(row_counts(max_batch), mode.policy.block_size),
        )
    # Rows of different lengths share a forward even in bfloat16 (the engine's default there
    # runs only identically shaped rows together, which on a GPU leaves one row per forward):
    # a served reply may then differ from the same request alone by a rounding, not in kind.
    engine = Engine(
        model, tokenizer, max_batch=max_batch, parallelism=parallelism, exact_batches=False
    )
    return EngineGenerator(engine), tokenizer


def _config_end_ids(config: Any) -> list[int]:
    """The model config's ``eos_token_id`` (an int or a list), as end ids of a reply."""
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(i) for i in eos] if isinstance(eos, list | tuple) else [int(eos)]
