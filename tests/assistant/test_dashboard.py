"""docs/grafana-dashboard.json and docs/prometheus-alerts.yml against the metrics the code
exposes, and the offline rendering's PromQL part (assistant.lab.dashboard)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from assistant.lab.dashboard import (
    DASHBOARD,
    QueryError,
    Scrape,
    dashboard_metrics,
    evaluate,
    load_scrapes,
    panel_queries,
    parse,
    render,
)
from assistant.tools.runner import ToolOutcome
from tests.metrics_text import samples
from web.gateway_metrics import GatewayMetrics
from workers.worker_metrics import Metrics

ALERTS = DASHBOARD.parent / "prometheus-alerts.yml"


def exposed() -> set[str]:
    """Every sample name a gateway and a worker expose once each series has moved."""
    worker = Metrics(mode="fast-diffusion")
    worker.turn_done("complete")
    worker.claimed(1, created_at_ms=0)
    worker.first_draft.observe(0.2)
    worker.final.observe(0.5)
    worker.generation({"tokens": 10, "forward_passes": 4, "milliseconds": 100})
    worker.tool(ToolOutcome("lookup_order", {}, "ok", milliseconds=3.0))
    gateway = GatewayMetrics()
    text = worker.render() + gateway.render()
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_dashboard_is_valid_and_every_query_names_an_exposed_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["title"] and panel["targets"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    wanted = dashboard_metrics(dashboard)
    assert not wanted - exposed(), sorted(wanted - exposed())
    # The figures are all on it.
    for name in (
        "assistant_worker_time_to_first_draft_seconds_bucket",
        "assistant_worker_time_to_final_seconds_bucket",
        "assistant_worker_queue_wait_seconds_bucket",
        "assistant_worker_reply_forward_passes_per_token_bucket",
        "assistant_worker_reply_tokens_per_second_bucket",
        "assistant_worker_turns_total",
        "assistant_worker_dead_letters_total",
        "assistant_worker_redeliveries_total",
        "gateway_rate_limited_frames_total",
    ):
        assert name in wanted, name
    by_mode = [e for _, e in panel_queries(dashboard) if "le, mode" in e]
    assert len(by_mode) >= 8  # the per-turn histograms are split by decoding mode


def test_alert_rules_name_exposed_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {"AssistantTurnsDeadLettered", "AssistantQueueWaitHigh"}
    names: set[str] = set()
    for rule in rules:
        query, _, threshold = rule["expr"].rpartition(" > ")
        float(threshold)
        names |= dashboard_metrics({"panels": [{"targets": [{"expr": query}]}]})
    assert names == {
        "assistant_worker_dead_letters_total",
        "assistant_worker_queue_wait_seconds_bucket",
    }
    assert not names - exposed()


def test_queries_outside_the_supported_part_are_refused() -> None:
    for query in ("rate(x[5m]) / 2", "topk(3, x)", 'x{a=~"b"}', "sum(x"):
        with pytest.raises(QueryError):
            parse(query)


def _scrapes() -> list[Scrape]:
    """Three scrapes 10 s apart of a histogram (le 1, 2, +Inf) and a counter that reset."""
    out = []
    for i, (b1, b2, inf, counter) in enumerate([(0, 0, 0, 5), (5, 9, 10, 15), (5, 19, 20, 3)]):
        series = {}
        for le, v in (("1.0", b1), ("2.0", b2), ("+Inf", inf)):
            series[("h_bucket", (("le", le), ("mode", "m")))] = float(v)
        series[("c_total", (("worker", "w1"),))] = float(counter)
        series[("c_total", (("worker", "w2"),))] = float(10 * i)
        out.append(Scrape(100.0 + 10 * i, series))
    return out


def test_rate_sum_and_histogram_quantile() -> None:
    scrapes = _scrapes()
    rate = parse("sum by (worker) (rate(c_total[$__rate_interval]))")
    assert evaluate(rate, scrapes, 0, "30s") == {}  # one point: no rate yet
    assert evaluate(rate, scrapes, 2, "30s") == {
        (("worker", "w1"),): (10 + 3) / 20,  # a reset counts from 0
        (("worker", "w2"),): 20 / 20,
    }
    increase = parse("sum(increase(c_total[20s]))")
    assert evaluate(increase, scrapes, 1, "1m") == {(): (10 + 10) / 10 * 20}
    median = parse("histogram_quantile(0.5, sum by (le, mode) (rate(h_bucket[15s])))")
    # Between scrapes 1 and 2: 10 observations, all in (1, 2]: the median is 1.5.
    assert evaluate(median, scrapes, 2, "1m") == {(("mode", "m"),): 1.5}
    high = parse("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))")
    # Over all three: 5 under 1, 14 in (1, 2], 1 above 2: p99 is the highest finite bound.
    assert evaluate(high, scrapes, 2, "1m") == {(): 2.0}
    empty = evaluate(median, scrapes[:1], 0, "1m")
    assert empty == {} or all(math.isnan(v) for v in empty.values())


def test_render_writes_a_png_from_scrape_pages(tmp_path: Path) -> None:
    """Scrape lines as ``scrape`` writes them, rendered: every panel gets a subplot."""
    worker, gateway = Metrics(mode="fast-diffusion"), GatewayMetrics()
    lines = []
    for i in range(4):
        worker.turn_done("complete")
        worker.claimed(1, created_at_ms=int((1000 + i) * 1000), now_s=1000.1 + i)
        worker.final.observe(0.4 + i / 10)
        gateway.frames_in += 3
        page = worker.render() + gateway.render()
        assert samples(page, "gateway_frames_in_total")
        lines.append(json.dumps({"at": 1000.0 + 2 * i, "pages": [page]}))
    path = tmp_path / "scrapes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "dashboard.png"
    render(json.loads(DASHBOARD.read_text()), load_scrapes(path), out, "4s", note="a test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
