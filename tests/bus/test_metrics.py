"""Workers' metrics through Redis: merging texts (pure) and publish/collect on a real server."""

from __future__ import annotations

import asyncio
import re

import redis.asyncio as aioredis

from assistant.bus.keys import DEFAULT_KEYS as KEYS
from assistant.bus.keys import Keys
from assistant.bus.metrics_relay import collect, merge, publish, withdraw
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
        'assistant_worker_turns_total{worker="w1",outcome="complete"} 1',
        'assistant_worker_turns_total{worker="w2",outcome="cancelled"} 1',
    ]
    hist = families["assistant_worker_time_to_final_seconds"]
    assert 'assistant_worker_time_to_final_seconds_count{worker="w2"} 1' in hist
    assert 'assistant_worker_time_to_final_seconds_bucket{worker="w1",le="+Inf"} 0' in hist


def test_merge_escapes_names_and_drops_garbage() -> None:
    text = "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\nnot a sample line {\n"
    merged = merge({'a"b': text})
    assert merged == '# HELP x_total X.\n# TYPE x_total counter\nx_total{worker="a\\"b"} 3\n'
    assert merge({}) == ""


def test_every_metric_of_the_issue_is_rendered() -> None:
    """Queue depth, active turns, steps/s, tokens/s, passes per token, latencies, tools."""
    metrics = Metrics()
    metrics.generation({"tokens": 40, "steps": 10, "forward_passes": 10, "milliseconds": 500})
    text = metrics.render()
    for name in (
        "queue_depth",
        "active_turns",
        "steps_per_second",
        "tokens_per_second",
        "forward_passes_per_token",
        "time_to_first_draft_seconds",
        "time_to_final_seconds",
        "tool_seconds",
        "tool_errors_total",
    ):
        assert f"# TYPE assistant_worker_{name} " in text, name
    assert "assistant_worker_steps_per_second 20" in text
    assert "assistant_worker_tokens_per_second 80" in text
    assert "assistant_worker_forward_passes_per_token 0.25" in text


async def test_collect_merges_live_workers_and_forgets_dead_ones(
    redis_client: aioredis.Redis,
) -> None:
    one, two = Metrics(), Metrics()
    one.active_turns, two.active_turns = 1, 2
    await publish(redis_client, KEYS, "w1", one.render(), ttl_s=60)
    await publish(redis_client, KEYS, "w2", two.render(), ttl_s=0.2)  # it will "die"
    families = check_exposition(await collect(redis_client, KEYS))
    assert families["assistant_worker_active_turns"] == [
        'assistant_worker_active_turns{worker="w1"} 1',
        'assistant_worker_active_turns{worker="w2"} 2',
    ]
    await asyncio.sleep(0.3)
    families = check_exposition(await collect(redis_client, KEYS))
    assert families["assistant_worker_active_turns"] == [
        'assistant_worker_active_turns{worker="w1"} 1'
    ]
    assert await redis_client.smembers(KEYS.metrics_index) == {b"w1"}  # type: ignore[misc]
    await withdraw(redis_client, KEYS, "w1")
    assert await collect(redis_client, KEYS) == ""
    # Another deployment's prefix sees nothing of these.
    await publish(redis_client, KEYS, "w3", one.render(), ttl_s=60)
    assert await collect(redis_client, Keys("other")) == ""
