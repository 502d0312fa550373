"""The report's plots from ``assistant loadtest --json`` files, one file per decoding mode.

``python -m assistant.lab.loadtest.plots --out docs/img fast.json:fast ar.json:autoregressive``
draws, for the runs side by side:

- ``latency.png``: the distributions (empirical CDFs) of time to first draft and time to
  final reply;
- ``speed.png``: each turn's generation speed (tokens/s of the model's own time) as box
  plots, and forward passes per token as bars.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first


@dataclass(frozen=True)
class Run:
    label: str
    report: dict[str, Any]

    def samples(self, name: str) -> list[float]:
        return [float(v) for v in self.report.get("samples", {}).get(name, [])]

    @property
    def forwards_per_token(self) -> float:
        tokens = self.report.get("tokens", 0)
        return float(self.report.get("forward_passes", 0)) / tokens if tokens else 0.0


def load_runs(specs: Sequence[str]) -> list[Run]:
    """``FILE[:LABEL]`` arguments to runs; the label defaults to the report's own."""
    runs = []
    for spec in specs:
        path, _, label = spec.partition(":")
        report = json.loads(Path(path).read_text())
        runs.append(Run(label or report.get("label") or Path(path).stem, report))
    return runs


def _cdf(axis: Any, values: list[float], label: str) -> None:
    ordered = sorted(values)
    if ordered:
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axis.step(ordered, fractions, where="post", label=label)


def plot_latency(runs: Sequence[Run], out: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, name, title in (
        (axes[0], "first_draft_ms", "time to first draft"),
        (axes[1], "final_ms", "time to final reply"),
    ):
        for run in runs:
            _cdf(axis, run.samples(name), run.label)
        axis.set_title(title)
        axis.set_xlabel("milliseconds")
        axis.set_ylabel("share of turns")
        axis.grid(alpha=0.3)
        axis.legend()
    path = out / "latency.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_speed(runs: Sequence[Run], out: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    labels = [run.label for run in runs]
    axes[0].boxplot([run.samples("turn_tokens_per_s") or [0.0] for run in runs])
    axes[0].set_xticks(range(1, len(runs) + 1), labels)
    axes[0].set_title("generation speed per turn")
    axes[0].set_ylabel("tokens/s (model time)")
    axes[0].grid(alpha=0.3)
    axes[1].bar(labels, [run.forwards_per_token for run in runs])
    axes[1].set_title("forward passes per token")
    axes[1].grid(alpha=0.3, axis="y")
    path = out / "speed.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assistant.lab.loadtest.plots",
        description="Draw latency.png and speed.png from loadtest --json reports.",
    )
    parser.add_argument("runs", nargs="+", metavar="FILE[:LABEL]", help="loadtest JSON reports")
    parser.add_argument("--out", default="docs/img", help="output folder (default docs/img)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: cannot read a report: {exc}\n")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in (plot_latency(runs, out), plot_speed(runs, out)):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
