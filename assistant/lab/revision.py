"""Self-revision by the causal mode (issue 17, item 5): accuracy against forwards per token.

``python -m assistant.lab.revision sweep --heldout DEV.jsonl --limit 150 --out points.json``
scores autoregressive mode and, at each ``--thresholds`` value, fast diffusion (floor 0: no
verification) and ``fast-diffusion+verify`` at each ``--floors`` value, on one engine, one
request at a time (as ``assistant eval --concurrency 1 --bad-input 0`` does per mode);
``python -m assistant.lab.revision plot points.json --out docs/img/revision.png`` draws facts,
tool selection and arguments against forward passes per token, one line per floor (and
``--trusts`` value), with autoregressive mode as a reference line. Choose settings on dev
dialogues only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assistant.agent.decoding import FAST_BLOCK, VERIFY_TRUST, decoding_modes
from dlm_runtime.decoding import DecodingMode

# Points recorded before a sweep wrote its block down (docs/revision/b8.json) used block 8.
RECORDED_BLOCK = 8


def sweep_modes(
    thresholds: Sequence[float],
    floors: Sequence[float],
    block: int = FAST_BLOCK,
    trusts: Sequence[float] = (VERIFY_TRUST,),
) -> dict[str, tuple[DecodingMode, float | None, float | None, float | None]]:
    """Mode name -> (mode, threshold, floor, trust); floor 0 is plain fast diffusion, and each
    verified point is taken at every ``trusts`` value (``verify_trust``)."""
    modes: dict[str, tuple[DecodingMode, float | None, float | None, float | None]] = {
        "autoregressive": (decoding_modes()["autoregressive"], None, None, None)
    }
    for threshold in thresholds:
        for floor in floors:
            for trust in trusts if floor > 0 else (None,):
                if trust is None:
                    mode = decoding_modes(threshold=threshold, block_size=block)["fast-diffusion"]
                else:
                    mode = decoding_modes(
                        verify_threshold=threshold,
                        verify_block=block,
                        verify_floor=floor,
                        verify_trust=trust,
                    )["fast-diffusion+verify"]
                name = f"{mode.name}@t{threshold:g}" + (f",f{floor:g}" if floor > 0 else "")
                if block != FAST_BLOCK:
                    name += f",b{block}"
                if trust is not None and trust < 1:
                    name += f",trust{trust:g}"
                modes[name] = (dataclasses.replace(mode, name=name), threshold, floor, trust)
    return modes


def sweep(
    heldout: Path,
    limit: int,
    thresholds: Sequence[float],
    floors: Sequence[float],
    block: int = FAST_BLOCK,
    trusts: Sequence[float] = (VERIFY_TRUST,),
) -> list[dict[str, Any]]:
    """One point per mode: its settings and ``ModeReport.summary()``."""
    from assistant.checkpoints import model_dir, uses_entity_slots
    from assistant.core.config import Settings
    from assistant.lab.evaluation import format_table, run_evaluation

    settings = Settings.load()
    path = model_dir(settings.model_path)
    modes = sweep_modes(thresholds, floors, block, trusts)
    known = {name: mode for name, (mode, *_) in modes.items()}
    reports, _ = asyncio.run(
        run_evaluation(
            path,
            heldout,
            list(modes),
            limit,
            [1],
            0,
            entity_slots=uses_entity_slots(path, settings.entity_slots),
            known=known,
        )
    )
    print(format_table(reports), file=sys.stderr)
    return [
        {
            "mode": r.mode,
            "threshold": modes[r.mode][1],
            "floor": modes[r.mode][2],
            "trust": modes[r.mode][3],
            "block": block,
            **r.summary(),
        }
        for r in reports
    ]


def _trust(point: dict[str, Any]) -> float:
    """A point's ``verify_trust`` (sweeps before it existed always verified: 1)."""
    trust = point.get("trust")
    return 1.0 if trust is None else float(trust)


def plot(points: Sequence[dict[str, Any]], out: Path) -> None:
    """Facts, tool selection and arguments against forwards per token: a line per floor (and
    trust) over the thresholds, autoregressive mode dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # after use(): the backend must be chosen first

    metrics = [
        ("fact_accuracy", "facts %"),
        ("tool_selection", "tool selection %"),
        ("argument_match", "arguments exact %"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(17, 5.5))
    reference = [p for p in points if p["floor"] is None][:1]  # one per sweep: the first
    lines = sorted(
        {
            (p.get("block", RECORDED_BLOCK), p["floor"], _trust(p))
            for p in points
            if p["floor"] is not None
        }
    )
    blocks = sorted({block for block, _, _ in lines})
    colours = sorted({(floor, trust) for _, floor, trust in lines})
    several_blocks = len(blocks) > 1
    markers, styles = "os^D", ["-", "-.", (0, (5, 1)), (0, (1, 1))]
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for ref in reference:
            ax.axhline(ref[key], color="black", linestyle="--", linewidth=1, label="autoregressive")
            ax.axhline(ref[key] - 1, color="grey", linestyle=":", linewidth=1, label="AR - 1 point")
        for block, floor, trust in lines:
            line = sorted(
                (
                    p
                    for p in points
                    if (p.get("block", RECORDED_BLOCK), p["floor"], _trust(p))
                    == (block, floor, trust)
                ),
                key=lambda p: p["forward_passes_per_token"],
            )
            name = "fast diffusion (no verify)" if floor == 0 else f"verify, floor {floor:g}"
            if several_blocks:
                name += f", block {block}"
            if trust < 1:
                name += f", trust {trust:g}"
            xs = [p["forward_passes_per_token"] for p in line]
            ax.plot(
                xs,
                [p[key] for p in line],
                marker=markers[blocks.index(block) % len(markers)],
                color=f"C{colours.index((floor, trust)) % 10}",
                linestyle=styles[blocks.index(block) % len(styles)],
                label=name,
            )
            for p in line if floor in (0, max(f for _, f, _ in lines)) else []:
                ax.annotate(
                    f"t{p['threshold']:g}",
                    (p["forward_passes_per_token"], p[key]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax.axvline(0.2, color="red", linewidth=0.8, alpha=0.5)
        ax.set_xlabel("forward passes per token")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right", ncol=2)
    fig.suptitle("Self-revision by the causal mode: accuracy vs forwards per token (dev)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m assistant.lab.revision")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("sweep", help="score the modes; write the points as JSON")
    run.add_argument("--heldout", required=True, type=Path, help="dev dialogues (JSON lines)")
    run.add_argument("--limit", type=int, default=150)
    run.add_argument("--thresholds", default="0.2,0.3,0.5,0.8")
    run.add_argument("--floors", default="0,0.01,0.05,0.2,1")
    run.add_argument("--block", type=int, default=FAST_BLOCK, help="fast diffusion's block")
    run.add_argument(
        "--trusts",
        default=str(VERIFY_TRUST),
        help="verify_trust values: the last block skips its verify forward when each of its "
        "tokens was committed with at least this probability (1: never skips)",
    )
    run.add_argument("--out", required=True, type=Path)
    draw = sub.add_parser("plot", help="draw the points of one or more sweeps")
    draw.add_argument("points", nargs="+", type=Path)
    draw.add_argument("--out", type=Path, default=Path("docs/img/revision.png"))
    args = parser.parse_args(argv)
    if args.command == "sweep":
        thresholds = [float(x) for x in args.thresholds.split(",")]
        floors = [float(x) for x in args.floors.split(",")]
        trusts = [float(x) for x in args.trusts.split(",")]
        points = sweep(args.heldout, args.limit, thresholds, floors, args.block, trusts)
        args.out.write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")
    else:
        points = [p for f in args.points for p in json.loads(f.read_text(encoding="utf-8"))]
        plot(points, args.out)


if __name__ == "__main__":
    main()
