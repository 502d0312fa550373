"""Deepen a trained DLM checkpoint without changing what it computes.

A larger model trained from scratch needs many CPU hours before it reaches the bundled
model's quality; a deeper copy of the bundled model starts there. Each new layer is a copy of
the layer before it with its two output projections (attention ``o_proj``, MLP ``down_proj``)
set to zero: in a pre-norm residual network such a layer adds nothing, so the deepened model
gives the same logits, and training then grows the new layers from features that already
mean something (the copied query, key, value and MLP input weights). Depth up-scaling as in
SOLAR, made function-preserving as Net2Net's deeper networks are.

    python -m dlm_runtime.grow --from assistant/checkpoints/bundled --after 1,2,3,4 \\
        --out data/grown-10
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from dlm_runtime.loading import CONFIG_FILE, read_config, read_weights

# Projections whose output is added to the residual stream: zero makes the layer an identity.
RESIDUAL_OUTPUTS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


def deepen(
    weights: dict[str, torch.Tensor], num_layers: int, after: list[int]
) -> dict[str, torch.Tensor]:
    """``weights`` with an identity copy of layer ``i`` inserted after it, for each ``i`` in
    ``after`` (indices of the original layers; a layer may appear more than once)."""
    bad = [i for i in after if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the checkpoint has {num_layers} layers")
    by_layer: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(num_layers)}
    grown: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        match = _LAYER.match(name)
        if match:
            by_layer[int(match.group(1))][match.group(2)] = tensor
        else:
            grown[name] = tensor
    order: list[tuple[int, bool]] = []  # (source layer, is an identity copy)
    for i in range(num_layers):
        order.append((i, False))
        order.extend((i, True) for _ in range(after.count(i)))
    for new_index, (source, is_copy) in enumerate(order):
        for part, tensor in by_layer[source].items():
            copy = tensor.clone()
            if is_copy and part in RESIDUAL_OUTPUTS:
                copy.zero_()
            grown[f"layers.{new_index}.{part}"] = copy
    return grown


def grow_checkpoint(source: Path, out: Path, after: list[int]) -> int:
    """Write ``source`` deepened (see :func:`deepen`) to ``out``, with its tokenizer and
    template files; returns the new number of layers."""
    config = read_config(source)
    layers = int(config["num_hidden_layers"])
    weights = deepen(read_weights(source), layers, after)
    out.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.name not in (CONFIG_FILE, "model.safetensors", "README.md"):
            shutil.copy2(file, out / file.name)
    config["num_hidden_layers"] = layers + len(after)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    return layers + len(after)


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layer indices like 1,2,3, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dlm_runtime.grow",
        description="Deepen a DLM checkpoint: insert identity copies of chosen layers (the "
        "deeper model computes the same logits until it is trained).",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        help="a DLM checkpoint directory (config.json, model.safetensors)",
    )
    parser.add_argument(
        "--after",
        required=True,
        type=_layer_list,
        help="comma-separated indices of the layers to copy, each copy "
        "inserted right after its layer, e.g. 1,2,3,4",
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.source.resolve():
        parser.error("--out must differ from --from")
    try:
        layers = grow_checkpoint(args.source, args.out, args.after)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.out}: {layers} layers")


if __name__ == "__main__":
    main()
