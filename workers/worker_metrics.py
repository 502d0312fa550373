"""The worker's metrics, rendered in the Prometheus text format (no extra dependency)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.tools.runner import ToolOutcome


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects them."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out.append(f"{name}_sum {self.sum!r}")
        out.append(f"{name}_count {self.count}")
        return out


_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    """One worker process's figures; everything runs on one event loop, so no locks."""

    queue_depth: int = 0
    active_turns: int = 0
    turns: dict[str, int] = field(default_factory=dict)  # by outcome
    turn_errors: int = 0  # exceptions: the turn is left for redelivery
    # Turn attempts that raised, by (kind, reason) of workers.failures.classify.
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    # Replies the agent loop replaced with a fallback, by TurnFinished.problem.
    problems: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    steps: int = 0  # refinement steps of all replies
    generation_seconds: float = 0.0
    forward_passes: int = 0
    tool_calls: dict[tuple[str, str], int] = field(default_factory=dict)  # (tool, status)
    tool_errors: dict[str, int] = field(default_factory=dict)
    first_draft: Histogram = field(default_factory=lambda: Histogram(_LATENCY_BUCKETS))
    final: Histogram = field(default_factory=lambda: Histogram(_LATENCY_BUCKETS))
    tool_latency: Histogram = field(default_factory=lambda: Histogram(_TOOL_BUCKETS))

    def turn_done(self, outcome: str) -> None:
        self.turns[outcome] = self.turns.get(outcome, 0) + 1

    def failure(self, kind: str, reason: str) -> None:
        key = (kind, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    def problem(self, problem: str) -> None:
        self.problems[problem] = self.problems.get(problem, 0) + 1

    def generation(self, usage: Mapping[str, Any]) -> None:
        self.tokens += int(usage.get("tokens", 0))
        self.steps += int(usage.get("steps", 0))
        self.forward_passes += int(usage.get("forward_passes", 0))
        self.generation_seconds += float(usage.get("milliseconds", 0.0)) / 1000

    def tool(self, outcome: ToolOutcome) -> None:
        key = (outcome.name, outcome.status)
        self.tool_calls[key] = self.tool_calls.get(key, 0) + 1
        if outcome.status != "ok":
            self.tool_errors[outcome.name] = self.tool_errors.get(outcome.name, 0) + 1
        self.tool_latency.observe(outcome.milliseconds / 1000)

    def render(self) -> str:
        p = "assistant_worker_"
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: Sequence[tuple[str, float]]) -> None:
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} {kind}")
            lines.extend(f"{p}{name}{labels} {_number(value)}" for labels, value in samples)

        metric("queue_depth", "gauge", "Turns queued or in work.", [("", self.queue_depth)])
        metric("active_turns", "gauge", "Turns this worker is running.", [("", self.active_turns)])
        metric(
            "turns_total",
            "counter",
            "Turns finished, by outcome.",
            [(_labels({"outcome": k}), v) for k, v in sorted(self.turns.items())],
        )
        metric(
            "reply_problems_total",
            "counter",
            "Replies replaced by a fallback, by problem (empty_output, unsupported_claim:...).",
            [(_labels({"problem": k}), v) for k, v in sorted(self.problems.items())],
        )
        metric(
            "turn_errors_total",
            "counter",
            "Turn attempts that raised (left for redelivery).",
            [("", self.turn_errors)],
        )
        metric(
            "turn_failures_total",
            "counter",
            "Turn attempts that raised, by kind (transient: left for redelivery; "
            "deterministic: ended at once with the fallback reply) and reason.",
            [
                (_labels({"kind": kind, "reason": reason}), v)
                for (kind, reason), v in sorted(self.failures.items())
            ],
        )
        metric("generated_tokens_total", "counter", "Reply tokens.", [("", self.tokens)])
        metric("steps_total", "counter", "Refinement steps of replies.", [("", self.steps)])
        metric(
            "forward_passes_total",
            "counter",
            "Forward passes of replies.",
            [("", self.forward_passes)],
        )
        metric(
            "generation_seconds_total",
            "counter",
            "Engine time of replies.",
            [("", self.generation_seconds)],
        )
        seconds = self.generation_seconds
        rate = self.tokens / seconds if seconds else 0.0
        metric("tokens_per_second", "gauge", "Reply tokens per engine second.", [("", rate)])
        steps_rate = self.steps / seconds if seconds else 0.0
        metric(
            "steps_per_second",
            "gauge",
            "Refinement steps per engine second of a reply.",
            [("", steps_rate)],
        )
        per_token = self.forward_passes / self.tokens if self.tokens else 0.0
        metric(
            "forward_passes_per_token",
            "gauge",
            "Forward passes per reply token.",
            [("", per_token)],
        )
        for name, help_, hist in (
            ("time_to_first_draft_seconds", "Turn start to its first draft.", self.first_draft),
            ("time_to_final_seconds", "Turn start to its final reply.", self.final),
            ("tool_seconds", "Tool call latency.", self.tool_latency),
        ):
            lines.append(f"# HELP {p}{name} {help_}")
            lines.append(f"# TYPE {p}{name} histogram")
            lines.extend(hist.lines(p + name))
        metric(
            "tool_calls_total",
            "counter",
            "Tool calls run, by tool and status.",
            [
                (_labels({"tool": t, "status": s}), v)
                for (t, s), v in sorted(self.tool_calls.items())
            ],
        )
        metric(
            "tool_errors_total",
            "counter",
            "Tool calls that failed or timed out.",
            [(_labels({"tool": t}), v) for t, v in sorted(self.tool_errors.items())],
        )
        return "\n".join(lines) + "\n"


METRICS = Metrics()


def render_metrics() -> str:
    """This process's worker metrics in the Prometheus text format."""
    return METRICS.render()
