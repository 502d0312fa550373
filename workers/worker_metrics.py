"""The worker's metrics on ``prometheus_client``: one registry per ``Metrics``.

Histograms are ``prometheus_client.Histogram`` objects, labelled by decoding mode. The
counters and gauges are kept as plain figures (the tests and the worker read them) and
exposed by a collector of this registry at scrape time, so there is one source of truth.

A worker has no HTTP port: ``render()`` is the exposition text it publishes to Redis
(``assistant.bus.metrics_relay``), which every gateway's /metrics serves labelled by worker.
Each worker is one process with one registry, so prometheus_client's multi-process mode
(files shared by the processes behind one port) is not needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from assistant.tools.runner import ToolOutcome

PREFIX = "assistant_worker_"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A diffusion model decodes several tokens per forward pass: passes per token is often < 1.
PASSES_PER_TOKEN_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
TOKENS_PER_SECOND_BUCKETS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)

UNKNOWN_MODE = "unknown"

# No ``*_created`` series (a histogram child's creation time): the text goes through Redis
# every 2 s for every worker, and nothing here graphs or alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Figures(Collector):
    """The counters and gauges of one ``Metrics``, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, p = self.metrics, PREFIX
        yield GaugeMetricFamily(p + "queue_depth", "Turns queued or in work.", m.queue_depth)
        yield GaugeMetricFamily(p + "active_turns", "Turns this worker is running.", m.active_turns)
        yield GaugeMetricFamily(
            p + "dead_letter_stream_length",
            "Entries in the dead-letter stream (all workers', trimmed by length).",
            m.dead_letter_stream_length,
        )
        turns = CounterMetricFamily(
            p + "turns",
            "Turns finished, by outcome: the stored reply's status (complete, cancelled, "
            "failed) or duplicate/skipped for a delivery that found its turn done.",
            labels=["outcome"],
        )
        for outcome, n in sorted(m.turns.items()):
            turns.add_metric([outcome], n)
        yield turns
        yield CounterMetricFamily(
            p + "dead_letters",
            "Turns this worker dead-lettered (past their deliveries, none of them alive).",
            m.dead_letters,
        )
        yield CounterMetricFamily(
            p + "redeliveries",
            "Deliveries of a turn after its first (a takeover or a retry) this worker started.",
            m.redeliveries,
        )
        problems = CounterMetricFamily(
            p + "reply_problems",
            "Replies replaced by a fallback, by problem (empty_output, unsupported_claim:...).",
            labels=["problem"],
        )
        for problem, n in sorted(m.problems.items()):
            problems.add_metric([problem], n)
        yield problems
        yield CounterMetricFamily(
            p + "turn_errors", "Turn attempts that raised (left for redelivery).", m.turn_errors
        )
        failures = CounterMetricFamily(
            p + "turn_failures",
            "Turn attempts that raised, by kind (transient: left for redelivery; "
            "deterministic: ended at once with the fallback reply) and reason.",
            labels=["kind", "reason"],
        )
        for (kind, reason), n in sorted(m.failures.items()):
            failures.add_metric([kind, reason], n)
        yield failures
        yield CounterMetricFamily(p + "generated_tokens", "Reply tokens.", m.tokens)
        yield CounterMetricFamily(p + "steps", "Refinement steps of replies.", m.steps)
        yield CounterMetricFamily(
            p + "forward_passes", "Forward passes of replies.", m.forward_passes
        )
        yield CounterMetricFamily(
            p + "generation_seconds", "Engine time of replies.", m.generation_seconds
        )
        seconds = m.generation_seconds
        yield GaugeMetricFamily(
            p + "tokens_per_second",
            "Reply tokens per engine second, since start (see reply_tokens_per_second).",
            m.tokens / seconds if seconds else 0.0,
        )
        yield GaugeMetricFamily(
            p + "steps_per_second",
            "Refinement steps per engine second of a reply, since start.",
            m.steps / seconds if seconds else 0.0,
        )
        yield GaugeMetricFamily(
            p + "forward_passes_per_token",
            "Forward passes per reply token, since start (see reply_forward_passes_per_token).",
            m.forward_passes / m.tokens if m.tokens else 0.0,
        )
        calls = CounterMetricFamily(
            p + "tool_calls", "Tool calls run, by tool and status.", labels=["tool", "status"]
        )
        for (tool, status), n in sorted(m.tool_calls.items()):
            calls.add_metric([tool, status], n)
        yield calls
        errors = CounterMetricFamily(
            p + "tool_errors", "Tool calls that failed or timed out.", labels=["tool"]
        )
        for tool, n in sorted(m.tool_errors.items()):
            errors.add_metric([tool], n)
        yield errors


class Metrics:
    """One worker process's figures; everything runs on one event loop, so no locks.

    ``mode`` (the worker's decoding mode) labels the per-turn histograms.
    """

    def __init__(self, mode: str = UNKNOWN_MODE) -> None:
        self.mode = mode
        self.queue_depth = 0
        self.active_turns = 0
        self.dead_letter_stream_length = 0
        self.turns: dict[str, int] = {}  # by outcome
        self.turn_errors = 0  # exceptions: the turn is left for redelivery
        # Turn attempts that raised, by (kind, reason) of workers.failures.classify.
        self.failures: dict[tuple[str, str], int] = {}
        # Replies the agent loop replaced with a fallback, by TurnFinished.problem.
        self.problems: dict[str, int] = {}
        self.dead_letters = 0
        self.redeliveries = 0
        self.tokens = 0
        self.steps = 0  # refinement steps of all replies
        self.generation_seconds = 0.0
        self.forward_passes = 0
        self.tool_calls: dict[tuple[str, str], int] = {}  # (tool, status)
        self.tool_errors: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Figures(self))
        r, p = self.registry, PREFIX
        self._first_draft = Histogram(
            p + "time_to_first_draft_seconds",
            "Turn start to its first draft, by decoding mode.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._final = Histogram(
            p + "time_to_final_seconds",
            "Turn start to its final reply, by decoding mode.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_wait = Histogram(
            p + "queue_wait_seconds",
            "A turn's first delivery: queued by the gateway to claimed by a worker "
            "(two machines' clocks), by decoding mode of the worker that claimed it.",
            ["mode"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self._passes_per_token = Histogram(
            p + "reply_forward_passes_per_token",
            "Forward passes per token of one reply, by decoding mode.",
            ["mode"],
            buckets=PASSES_PER_TOKEN_BUCKETS,
            registry=r,
        )
        self._tokens_per_second = Histogram(
            p + "reply_tokens_per_second",
            "Tokens per engine second of one reply, by decoding mode.",
            ["mode"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=r,
        )
        self._tool_latency = Histogram(
            p + "tool_seconds",
            "Tool call latency, by tool.",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=r,
        )

    # the turn handler observes these two directly (workers/turns.py)
    @property
    def first_draft(self) -> Any:
        return self._first_draft.labels(mode=self.mode)

    @property
    def final(self) -> Any:
        return self._final.labels(mode=self.mode)

    def claimed(self, attempt: int, created_at_ms: int, now_s: float | None = None) -> None:
        """A delivery starts here: a redelivery is counted, a first one's queue wait timed."""
        if attempt > 1:
            self.redeliveries += 1
            return
        now = time.time() if now_s is None else now_s
        # Clocks of two machines: a skew must not make a negative wait.
        self._queue_wait.labels(mode=self.mode).observe(max(0.0, now - created_at_ms / 1000))

    def dead_lettered(self) -> None:
        self.dead_letters += 1

    def turn_done(self, outcome: str) -> None:
        self.turns[outcome] = self.turns.get(outcome, 0) + 1

    def failure(self, kind: str, reason: str) -> None:
        key = (kind, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    def problem(self, problem: str) -> None:
        self.problems[problem] = self.problems.get(problem, 0) + 1

    def generation(self, usage: Mapping[str, Any]) -> None:
        """One reply's usage (tokens, steps, forward passes, milliseconds, mode)."""
        tokens = int(usage.get("tokens", 0))
        passes = int(usage.get("forward_passes", 0))
        seconds = float(usage.get("milliseconds", 0.0)) / 1000
        self.tokens += tokens
        self.steps += int(usage.get("steps", 0))
        self.forward_passes += passes
        self.generation_seconds += seconds
        mode = str(usage.get("mode") or self.mode)
        if tokens > 0:
            self._passes_per_token.labels(mode=mode).observe(passes / tokens)
            if seconds > 0:
                self._tokens_per_second.labels(mode=mode).observe(tokens / seconds)

    def tool(self, outcome: ToolOutcome) -> None:
        key = (outcome.name, outcome.status)
        self.tool_calls[key] = self.tool_calls.get(key, 0) + 1
        if outcome.status != "ok":
            self.tool_errors[outcome.name] = self.tool_errors.get(outcome.name, 0) + 1
        self._tool_latency.labels(tool=outcome.name).observe(outcome.milliseconds / 1000)

    def render(self) -> str:
        """This registry in the Prometheus text format."""
        return generate_latest(self.registry).decode()


METRICS = Metrics()


def render_metrics() -> str:
    """This process's worker metrics in the Prometheus text format."""
    return METRICS.render()
