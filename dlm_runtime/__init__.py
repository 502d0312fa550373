"""Standalone runtime for masked diffusion language models (native "dlm" and LLaDA checkpoints)."""

# --- models and checkpoints (modeling.py registers "dlm" with AutoConfig/AutoModel on import) ---
from dlm_runtime.attention import KV, ForwardOutput
from dlm_runtime.llada import LLaDAModel
from dlm_runtime.loading import CheckpointError, load_model, save_model
from dlm_runtime.modeling import DLMConfig, DLMModel

__all__ = [
    "KV",
    "CheckpointError",
    "DLMConfig",
    "DLMModel",
    "ForwardOutput",
    "LLaDAModel",
    "load_model",
    "save_model",
]

# --- tokenizer and sampler policies (the preset functions themselves: dlm_runtime.policies) ---
from dlm_runtime.policies import (
    PRESETS,
    BlockState,
    DecodingPolicy,
    StepResult,
    policy_from_dict,
)
from dlm_runtime.tokenizer import (
    DraftText,
    SpecialTokens,
    TokenSpan,
    decode_draft,
    encode_chat,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    train_tokenizer,
)

__all__ += [
    "PRESETS",
    "BlockState",
    "DecodingPolicy",
    "DraftText",
    "SpecialTokens",
    "StepResult",
    "TokenSpan",
    "decode_draft",
    "encode_chat",
    "load_tokenizer",
    "policy_from_dict",
    "save_tokenizer",
    "special_token_ids",
    "train_tokenizer",
]

# --- a checkpoint's chat format (native, or its own template) and hub model ids ---
from dlm_runtime.chat_format import ChatFormat, chat_format  # noqa: E402 (one block with its exports)
from dlm_runtime.hub import resolve_checkpoint  # noqa: E402 (one block with its exports)

__all__ += ["ChatFormat", "chat_format", "resolve_checkpoint"]

# --- decoding modes and the continuous-batching inference engine ---
from dlm_runtime.decoding import DecodingMode, Pattern  # noqa: E402 (one block with its exports)
from dlm_runtime.engine import (  # noqa: E402 (kept in one block with its exports)
    Draft,
    Engine,
    EngineStats,
    Final,
    GenerationRequest,
    Usage,
)

__all__ += [
    "DecodingMode",
    "Draft",
    "Engine",
    "EngineStats",
    "Final",
    "GenerationRequest",
    "Pattern",
    "Usage",
]
