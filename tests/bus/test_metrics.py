"""Workers' metrics through Redis: merging texts (pure) and publish/collect on a real server."""

from __future__ import annotations

import asyncio
import re

import redis.asyncio as aioredis

from assistant.bus.keys import DEFAULT_KEYS as KEYS
from assistant.bus.keys import Keys
from assistant.bus.metrics_relay import collect, merge, publish, withdraw
from tests.metrics_text import families as family_types
from tests.metrics_text import value
from workers.worker_metrics import Metrics

SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{worker="[^"]+"(,[^}]*)?\} \S+')


def check_exposition(text: str) -> dict[str, list[str]]:
    """Assert ``text`` is a well-formed exposition; return family -> sample lines.

    One HELP and one TYPE per family, before its samples; a family's samples contiguous;
    every sample labelled with its worker.
    """
    families: dict[str, list[str]] = {}
    seen_meta: set[tuple[str, str]] = set()
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# "):
            _hash, kind, name, *_ = line.split(" ", 3)
            assert (kind, name) not in seen_meta, f"second {kind} for {name}"
            seen_meta.add((kind, name))
            assert name not in families or not families[name], f"{kind} after samples"
            families.setdefault(name, [])
            current = name
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a labelled sample: {line!r}"
        name = match.group(1)
        family = current if current and name.startswith(current) else name
        assert family == current, f"sample {name} outside its family block"
        families[family].append(line)
    return families


def test_merge_labels_every_sample_and_keeps_one_help_per_family() -> None:
    one, two = Metrics(), Metrics()
    one.turn_done("complete")
    two.turn_done("cancelled")
    two.final.observe(0.3)
    merged = merge({"w2": two.render(), "w1": one.render()})
    families = check_exposition(merged)
    assert merged.count("# TYPE assistant_worker_time_to_final_seconds histogram") == 1
    turns = families["assistant_worker_turns_total"]
    assert turns == [
        'assistant_worker_turns_total{worker="w1",outcome="complete"} 1.0',
        'assistant_worker_turns_total{worker="w2",outcome="cancelled"} 1.0',
    ]
    hist = families["assistant_worker_time_to_final_seconds"]
    assert 'assistant_worker_time_to_final_seconds_count{worker="w2",mode="unknown"} 1.0' in hist
    assert not [line for line in hist if 'worker="w1"' in line]  # w1 observed nothing
    # prometheus_client's parser reads the merged text: the worker label on every sample.
    assert family_types(merged)["assistant_worker_time_to_final_seconds"] == "histogram"
    assert value(merged, "assistant_worker_turns_total", worker="w2") == 1


def test_merge_escapes_names_and_drops_garbage() -> None:
    text = "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\nnot a sample line {\n"
    merged = merge({'a"b': text})
    assert merged == '# HELP x_total X.\n# TYPE x_total counter\nx_total{worker="a\\"b"} 3\n'
    assert merge({}) == ""


def test_every_metric_of_the_issue_is_rendered() -> None:
    """Queue depth, active turns, steps/s, tokens/s, passes per token, latencies, tools;
    the histograms of issue 16 by mode, and the dead-letter and redelivery counters."""
    metrics = Metrics(mode="fast")
    usage = {"tokens": 40, "steps": 10, "forward_passes": 10, "milliseconds": 500}
    metrics.generation({**usage, "mode": "fast"})
    metrics.claimed(1, created_at_ms=10_000, now_s=10.25)  # a first delivery: 250 ms queued
    metrics.claimed(2, created_at_ms=10_000, now_s=99.0)  # a redelivery: no queue wait
    metrics.claimed(1, created_at_ms=10_000, now_s=9.0)  # a clock behind: 0, not negative
    metrics.dead_lettered()
    text = metrics.render()
    kinds = family_types(text)
    for name, kind in {
        "queue_depth": "gauge",
        "active_turns": "gauge",
        "steps_per_second": "gauge",
        "tokens_per_second": "gauge",
        "forward_passes_per_token": "gauge",
        "time_to_first_draft_seconds": "histogram",
        "time_to_final_seconds": "histogram",
        "queue_wait_seconds": "histogram",
        "reply_forward_passes_per_token": "histogram",
        "reply_tokens_per_second": "histogram",
        "tool_seconds": "histogram",
        "tool_errors": "counter",
        "turns": "counter",
        "dead_letters": "counter",
        "redeliveries": "counter",
    }.items():
        assert kinds[f"assistant_worker_{name}"] == kind, name
    assert value(text, "assistant_worker_steps_per_second") == 20
    assert value(text, "assistant_worker_tokens_per_second") == 80
    assert value(text, "assistant_worker_forward_passes_per_token") == 0.25
    p = "assistant_worker_"
    assert value(text, p + "reply_tokens_per_second_sum", mode="fast") == 80
    assert value(text, p + "reply_forward_passes_per_token_sum", mode="fast") == 0.25
    assert value(text, p + "queue_wait_seconds_count", mode="fast") == 2
    assert value(text, p + "queue_wait_seconds_sum", mode="fast") == 0.25
    assert value(text, p + "queue_wait_seconds_bucket", mode="fast", le="0.25") == 2
    assert value(text, p + "redeliveries_total") == 1
    assert value(text, p + "dead_letters_total") == 1
    assert "_created" not in text  # no creation-time series through Redis


async def test_collect_merges_live_workers_and_forgets_dead_ones(
    redis_client: aioredis.Redis,
) -> None:
    one, two = Metrics(), Metrics()
    one.active_turns, two.active_turns = 1, 2
    await publish(redis_client, KEYS, "w1", one.render(), ttl_s=60)
    await publish(redis_client, KEYS, "w2", two.render(), ttl_s=0.2)  # it will "die"
    families = check_exposition(await collect(redis_client, KEYS))
    assert families["assistant_worker_active_turns"] == [
        'assistant_worker_active_turns{worker="w1"} 1.0',
        'assistant_worker_active_turns{worker="w2"} 2.0',
    ]
    await asyncio.sleep(0.3)
    families = check_exposition(await collect(redis_client, KEYS))
    assert families["assistant_worker_active_turns"] == [
        'assistant_worker_active_turns{worker="w1"} 1.0'
    ]
    assert await redis_client.smembers(KEYS.metrics_index) == {b"w1"}  # type: ignore[misc]
    await withdraw(redis_client, KEYS, "w1")
    assert await collect(redis_client, KEYS) == ""
    # Another deployment's prefix sees nothing of these.
    await publish(redis_client, KEYS, "w3", one.render(), ttl_s=60)
    assert await collect(redis_client, Keys("other")) == ""
