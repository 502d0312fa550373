"""Loading and saving checkpoints: ``load_model(path)`` dispatches on config.json's ``model_type``.

* ``"dlm"``: the native :class:`~dlm_runtime.modeling.DLMModel`.
* ``"llada"``: :class:`~dlm_runtime.llada.LLaDAModel` from LLaDA-layout weights, or
  :class:`~dlm_runtime.llada_moe.LLaDAMoEModel` when the config is LLaDA-MoE's (the published
  LLaDA-MoE checkpoints also say ``"llada"``; ``"lladamoe"`` is accepted too).
* ``"llada2_moe"`` / ``"llada21_moe"`` (LLaDA2.0 / 2.1): refused with the reason (unsupported).
* ``"Dream"``: :class:`~dlm_runtime.dream.DreamModel` from Dream-layout weights (logits unshifted).
* ``"nemotron_labs_diffusion"``: :class:`~dlm_runtime.nemotron.NemotronModel` from
  Nemotron-Labs-Diffusion weights (its samplers: :mod:`dlm_runtime.nemotron_generate`).
* ``"diffusion_gemma"``: :class:`~dlm_runtime.diffusion_gemma.DiffusionGemmaModel`, transformers'
  own ``DiffusionGemmaForBlockDiffusion`` (native there, no remote code); it generates through
  :func:`dlm_runtime.diffusion_gemma.generate`, not through the engine.

Weights come from ``model.safetensors`` or from the shards listed in
``model.safetensors.index.json`` (how LLaDA-8B is published). The module is built on the meta
device and the checked tensors are assigned to it, so nothing is randomly initialised; each
tensor is cast to the requested dtype as it is read, so an 8B checkpoint loads without a second
copy in memory, whatever the dtype.

Every problem with the directory raises :class:`CheckpointError` naming the file or key at fault.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from dlm_runtime.attention import KV, ForwardOutput, take_positions
from dlm_runtime.diffusion_gemma import MODEL_TYPE as MODEL_TYPE_DIFFUSION_GEMMA
from dlm_runtime.diffusion_gemma import (
    DiffusionGemmaModel,
    UnsupportedDiffusionGemmaConfig,
    check_config,
    load_diffusion_gemma,
)
from dlm_runtime.dream import DreamConfigView, DreamModel, UnsupportedDreamConfig
from dlm_runtime.llada import LLaDAConfigView, LLaDAModel, UnsupportedLLaDAConfig
from dlm_runtime.llada_moe import (
    LLaDAMoEConfigView,
    LLaDAMoEModel,
    is_llada_moe,
    mask_token_from_tokenizer,
)
from dlm_runtime.modeling import DLMConfig, DLMModel
from dlm_runtime.nemotron import MODEL_TYPE as MODEL_TYPE_NEMOTRON
from dlm_runtime.nemotron import NemotronConfigView, NemotronModel, UnsupportedNemotronConfig

__all__ = [
    "DLM_REQUIRED_KEYS",
    "CheckpointError",
    "RemoteCodeModel",
    "load_model",
    "read_config",
    "read_weights",
    "save_model",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

DLM_REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mask_token_id",
)

LoadedModel = DLMModel | LLaDAModel | LLaDAMoEModel | DreamModel | NemotronModel

# LLaDA2.0 / 2.1 (inclusionAI/LLaDA2.0-mini, -flash; LLaDA2.1): why they are refused.
LLADA2_TYPES = ("llada2_moe", "llada21_moe")
LLADA2_UNSUPPORTED = (
    "LLaDA2 (model_type {model_type!r}) is not supported by the native runtime: its "
    "BailingMoeV2 backbone (fused query_key_value, partial rotary, sigmoid group-limited expert "
    "routing with routed scaling, first_k_dense_replace) and its block-diffusion sampler "
    "(block-causal attention over the whole sequence) are not implemented, and "
    "trust_remote_code cannot stand in (the remote-code wrapper makes full-attention calls "
    "only); LLaDA-MoE (LLaDAMoEModelLM) is supported"
)
V = TypeVar("V")
M = TypeVar("M")


class CheckpointError(ValueError):
    """The checkpoint directory cannot be loaded; the message names the problem."""


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse ``path/config.json`` into a dict."""
    file = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    if not file.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: unreadable JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return raw


def _weight_files(root: Path) -> list[Path]:
    single, index = root / WEIGHTS_FILE, root / INDEX_FILE
    if single.is_file():
        return [single]
    if not index.is_file():
        raise CheckpointError(f"{root}: missing {WEIGHTS_FILE} (and no {INDEX_FILE})")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: no readable weight_map ({exc})") from exc
    files = [root / name for name in sorted(set(weight_map.values()))]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{root}: shard {f.name} listed in {INDEX_FILE} is missing")
    return files


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_tensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of one safetensors file, one at a time, read with plain file reads.

    Not memory-mapped: a mapping keeps every page it touched resident (and counted against
    the process) until it closes, i.e. a whole file's worth beside whatever it was cast to.
    """
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:  # the format's own limit on the header
            raise ValueError(f"header of {size} bytes")
        header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        data = 8 + size
        entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
        for name, entry in entries:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            start, end = entry["data_offsets"]
            raw = torch.empty(end - start, dtype=torch.uint8)
            f.seek(data + start)
            if f.readinto(raw.numpy().data) != end - start:
                raise OSError(f"tensor {name!r} is cut short")
            tensor = raw.view(dtype).reshape(entry["shape"])
            del raw  # the caller's reference is then the only one
            yield name, tensor
            del tensor


def read_weights(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards in its index.

    Each tensor is read, then moved to ``device`` and its floating dtype cast to ``dtype``
    (``None`` or ``"auto"``: the first floating tensor's dtype) before the next one is read, so
    loading a bfloat16 checkpoint as float32 holds the float32 copy plus one tensor, never a
    whole second copy. Measured on a 111M-parameter bf16 LLaDA-layout file loaded as float32
    (424 MiB): peak resident memory 1.18x the float32 size, against 1.51x when the whole file
    was mapped beside the cast copy (for LLaDA-8B: about 35 GB instead of 48 GB).
    """
    target = None if dtype is None or dtype == "auto" else _resolve_dtype(dtype, {})
    weights: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(path)):
        try:
            for name, t in _read_tensors(f):
                if t.is_floating_point():
                    target = target or t.dtype
                    weights[name] = t.to(device=device, dtype=target)
                else:
                    weights[name] = t.to(device)
                del t
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            RuntimeError,
            struct.error,
        ) as exc:
            raise CheckpointError(f"{f}: unreadable safetensors file ({exc!r})") from exc
    return weights


def _check_weights(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], tied: bool, where: str
) -> None:
    """Raise :class:`CheckpointError` for the first missing, unexpected or mis-shaped weight."""
    for name, param in expected.items():
        if name not in got:
            raise CheckpointError(f"{where}: weight {name!r} is missing")
        if tuple(got[name].shape) != tuple(param.shape):
            raise CheckpointError(
                f"{where}: weight {name!r} has shape {tuple(got[name].shape)}, "
                f"the config implies {tuple(param.shape)}"
            )
    for name in got:
        if name not in expected:
            hint = " (the config ties the output head to the embedding)" if tied else ""
            raise CheckpointError(f"{where}: unexpected weight {name!r}{hint}")


def _resolve_dtype(
    dtype: torch.dtype | str | None, weights: Mapping[str, torch.Tensor]
) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        for t in weights.values():
            if t.is_floating_point():
                return t.dtype
        return torch.float32
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def _assign(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    device: str | torch.device,
    dtype: torch.dtype,
) -> None:
    # read_weights already cast each tensor; ``.to`` returns the same tensor then (no copy).
    for k, v in weights.items():
        weights[k] = v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
    model.load_state_dict(weights, strict=True, assign=True)


def _build_dlm(raw: dict[str, Any], path: Path) -> DLMModel:
    missing = [k for k in DLM_REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path / CONFIG_FILE}: missing required key {missing[0]!r}")
    try:
        config = DLMConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid dlm config ({exc})") from exc
    with torch.device("meta"):
        return DLMModel(config)


def _config_view(
    from_dict: Callable[[dict[str, Any]], V],
    raw: dict[str, Any],
    root: Path,
    unsupported: tuple[type[Exception], ...] = (),
) -> V:
    """A foreign family's config view; a missing key, or one of ``unsupported``, becomes a
    :class:`CheckpointError` naming the config file."""
    where = root / CONFIG_FILE
    try:
        return from_dict(raw)
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing required key {exc.args[0]!r}") from exc
    except unsupported as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def _build(
    from_dict: Callable[[dict[str, Any]], V],
    model_class: Callable[[V], M],
    raw: dict[str, Any],
    root: Path,
    unsupported: tuple[type[Exception], ...] = (),
) -> M:
    """A foreign family's model on the meta device (no random initialisation: its weights are
    assigned next), from its config view (:func:`_config_view`)."""
    view = _config_view(from_dict, raw, root, unsupported)
    with torch.device("meta"):
        return model_class(view)


def _llada_moe_config(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """The config with its mask id: the published LLaDA-MoE config.json has none, the
    tokenizer's ``<|mask|>`` token is the mask (ZHZisZZ/dllm sets it the same way)."""
    if raw.get("mask_token_id") is not None:
        return raw
    mask = mask_token_from_tokenizer(root)
    if mask is None:
        raise CheckpointError(
            f"{root / CONFIG_FILE}: missing required key 'mask_token_id' (and "
            f"{root / 'tokenizer.json'} has no '<|mask|>' token to take it from)"
        )
    return {**raw, "mask_token_id": mask}


def _load_diffusion_gemma(
    root: Path, raw: dict[str, Any], device: str | torch.device, dtype: torch.dtype | str | None
) -> DiffusionGemmaModel:
    view = _config_view(check_config, raw, root, (UnsupportedDiffusionGemmaConfig,))
    _weight_files(root)  # a clear error for absent weights before transformers runs
    if dtype is not None and dtype != "auto":
        dtype = _resolve_dtype(dtype, {})
    try:
        return load_diffusion_gemma(root, view, device, dtype)
    except Exception as exc:  # transformers' strict config and loader raise many types
        raise CheckpointError(
            f"{root}: transformers cannot load this DiffusionGemma checkpoint: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    *,
    trust_remote_code: bool = False,
) -> LoadedModel | RemoteCodeModel | DiffusionGemmaModel:
    """Load the checkpoint directory ``path`` in eval mode.

    ``dtype=None`` keeps the checkpoint's floating dtype. A LLaDA config using a feature the
    native implementation lacks raises :class:`CheckpointError`, unless ``trust_remote_code=True``,
    which instead runs the checkpoint's own Python code through transformers (wrapped by
    :class:`RemoteCodeModel`, uncached full-attention forward only).
    """
    root = Path(path)
    raw = read_config(root)
    model_type = raw.get("model_type")
    model: LoadedModel
    try:
        if model_type == "dlm":
            model = _build_dlm(raw, root)
        elif model_type in ("llada", "lladamoe") and is_llada_moe(raw):
            # Unsupported settings raise UnsupportedLLaDAConfig's subclass (handled below).
            moe = _llada_moe_config(raw, root)
            model = _build(LLaDAMoEConfigView.from_dict, LLaDAMoEModel, moe, root)
        elif model_type in LLADA2_TYPES:
            raise CheckpointError(
                f"{root / CONFIG_FILE}: {LLADA2_UNSUPPORTED.format(model_type=model_type)}"
            )
        elif model_type == "llada":  # an unsupported config may run its own code (below)
            model = _build(LLaDAConfigView.from_dict, LLaDAModel, raw, root)
        elif model_type == "Dream":
            model = _build(
                DreamConfigView.from_dict, DreamModel, raw, root, (UnsupportedDreamConfig,)
            )
        elif model_type == MODEL_TYPE_NEMOTRON:
            model = _build(
                NemotronConfigView.from_dict, NemotronModel, raw, root, (UnsupportedNemotronConfig,)
            )
        elif model_type == MODEL_TYPE_DIFFUSION_GEMMA:
            return _load_diffusion_gemma(root, raw, device, dtype)
        elif trust_remote_code:
            return _load_remote(root, raw, device, dtype)
        else:
            raise CheckpointError(
                f"{root / CONFIG_FILE}: unknown model_type {model_type!r} "
                "(expected 'dlm', 'llada', 'lladamoe', 'Dream', 'nemotron_labs_diffusion' or "
                "'diffusion_gemma')"
            )
    except UnsupportedLLaDAConfig as exc:
        if trust_remote_code:
            return _load_remote(root, raw, device, dtype)
        raise CheckpointError(
            f"{root / CONFIG_FILE}: {exc}; pass trust_remote_code=True to run the checkpoint's "
            "own modeling code instead"
        ) from exc
    weights = read_weights(root, dtype, device)
    _check_weights(model.state_dict(), weights, model.config.tie_word_embeddings, str(root))
    _assign(model, weights, device, _resolve_dtype(None, weights))
    return model.eval()


def save_model(model: DLMModel, path: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` for a native model into ``path``."""
    if not isinstance(model, DLMModel):
        raise TypeError(f"save_model writes DLMModel checkpoints, got {type(model).__name__}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.architectures = ["DLMModel"]
    (root / CONFIG_FILE).write_text(config.to_json_string(use_diff=False), encoding="utf-8")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(root / WEIGHTS_FILE), metadata={"format": "pt"})


# --- explicit opt-in: the checkpoint's own code ------------------------------------------------


@dataclass
class RemoteConfigView:
    """The few config attributes callers read, taken from a foreign config.json."""

    vocab_size: int
    mask_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    max_position_embeddings: int | None
    model_type: str
    entity_slots: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


class RemoteCodeModel(nn.Module):
    """A transformers ``trust_remote_code`` model behind the runtime's forward signature.

    Only the uncached, full-bidirectional call LLaDA's reference sampler makes is supported;
    anything else raises ``NotImplementedError``. ``new_key_values`` is always empty.
    """

    def __init__(self, inner: nn.Module, config: RemoteConfigView) -> None:
        super().__init__()
        self.inner = inner
        self.config = config

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KV | None = None,
        logits_index: torch.Tensor | None = None,
    ) -> ForwardOutput:
        if past_key_values or attention_mask is not None or position_ids is not None:
            raise NotImplementedError(
                "a trust_remote_code model supports only uncached full-attention forward calls"
            )
        logits = take_positions(self.inner(input_ids=input_ids).logits, logits_index)
        return ForwardOutput(logits=logits, new_key_values=[])


def _load_remote(
    root: Path, raw: dict[str, Any], device: str | torch.device, dtype: torch.dtype | str | None
) -> RemoteCodeModel:
    import transformers
    from transformers import AutoModel

    try:
        inner = AutoModel.from_pretrained(
            str(root), trust_remote_code=True, dtype=dtype if dtype is not None else "auto"
        )
    except Exception as exc:  # the checkpoint's own code can raise anything (AttributeError...)
        hint = (
            " (remote code written for an older transformers; use the native loader if the "
            "config allows, or pin the transformers version the checkpoint was written for)"
            if isinstance(exc, AttributeError | ImportError | NameError | TypeError)
            else ""
        )
        raise CheckpointError(
            f"{root}: the checkpoint's own modeling code (trust_remote_code=True) failed to load "
            f"under transformers {transformers.__version__}: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    view = RemoteConfigView(
        vocab_size=int(raw.get("embedding_size") or raw.get("vocab_size") or 0),
        mask_token_id=raw.get("mask_token_id"),
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
        max_position_embeddings=raw.get("max_sequence_length", raw.get("max_position_embeddings")),
        model_type=str(raw.get("model_type")),
        entity_slots=bool(raw.get("entity_slots", False)),
        raw=raw,
    )
    model = RemoteCodeModel(inner.to(device).eval(), view)
    # A forward of one token now, so code that loads but cannot run (LLaDA's reads
    # config.use_cache, gone from transformers 5's config) fails at start-up, not at a turn.
    probe = torch.tensor([[view.mask_token_id or 0]], device=device)
    try:
        with torch.no_grad():
            model(probe)
    except Exception as exc:
        raise CheckpointError(
            f"{root}: the checkpoint's own modeling code (trust_remote_code=True) loaded but its "
            f"forward fails under transformers {transformers.__version__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return model
