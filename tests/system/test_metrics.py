"""/metrics of real processes: ``assistant serve`` (a gateway process and a worker process
with the bundled model, the embedded redis-server, SQLite), read with prometheus_client's
own parser before and after a turn, and the Grafana dashboard's queries against it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from websockets.sync.client import connect

from assistant.lab.dashboard import DASHBOARD, dashboard_metrics
from tests.e2e.conftest import Server, serving
from tests.metrics_text import families, sample_names, samples, value

pytestmark = pytest.mark.slow

P = "assistant_worker_"
HISTOGRAMS = (
    "time_to_first_draft_seconds",
    "time_to_final_seconds",
    "queue_wait_seconds",
    "reply_forward_passes_per_token",
    "reply_tokens_per_second",
)
COUNTERS = ("turns", "dead_letters", "redeliveries", "turn_errors", "tool_calls")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory, ASSISTANT_DECODING_MODE="fast-diffusion") as running:
        yield running


def scrape(server: Server, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"{server.base_url}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def wait_for(check: Callable[[str], bool], server: Server, timeout_s: float = 30) -> str:
    """The first scrape that passes ``check`` (workers publish every 2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = scrape(server)
        if check(text):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"/metrics never passed the check:\n{text[-3000:]}")
        time.sleep(0.5)


def one_turn(server: Server, text: str) -> None:
    """A widget conversation of one user message, until its final arrives."""
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send(json.dumps({"type": "hello", "key": server.public_key, "channel": "widget"}))
        assert json.loads(ws.recv(10))["type"] == "ready"
        ws.send(json.dumps({"type": "user_message", "id": "m1", "text": text}))
        seen = []
        while True:
            try:
                frame = json.loads(ws.recv(120))
            except TimeoutError:
                pytest.fail(f"no final; frames: {seen}\n{server.log_tail()}")
            seen.append(frame["type"])
            if frame["type"] == "final":
                return


def flood(server: Server, frames: int) -> int:
    """Frames sent faster than the per-address limit; the number refused."""
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        for _ in range(frames):
            ws.send(json.dumps({"type": "nonsense"}))
        limited = 0
        for _ in range(frames):
            frame = json.loads(ws.recv(10))
            limited += frame.get("code") == "rate_limited"
        return limited


def test_gateway_and_worker_metrics_move_after_a_turn(server: Server) -> None:
    before = wait_for(lambda t: f"# TYPE {P}turns_total" in t, server)  # a worker published
    kinds = families(before)  # the whole page parses: the gateway's and the worker's
    for name in HISTOGRAMS:
        assert kinds[P + name] == "histogram", name
    for name in COUNTERS:
        assert kinds[P + name] == "counter", name
    for name in ("gateway_rate_limited_frames", "gateway_connections", "gateway_errors"):
        assert kinds[name] == "counter", name
    assert kinds["process_resident_memory_bytes"] == "gauge"
    # Every worker sample names its worker; the counters exist before anything happened.
    worker_samples = samples(before, P + "dead_letters_total")
    assert worker_samples and all(s.labels.get("worker") for s in worker_samples)
    assert value(before, P + "dead_letters_total") == 0
    assert value(before, P + "redeliveries_total") == 0
    turns_before = value(before, P + "turns_total")

    one_turn(server, "Hello! Do you ship to Canada?")
    after = wait_for(lambda t: value(t, P + "turns_total") > turns_before, server)
    for name in HISTOGRAMS:
        moved = samples(after, f"{P}{name}_count", mode="fast-diffusion")
        assert moved and sum(s.value for s in moved) >= 1, name
        assert value(after, f"{P}{name}_count") > value(before, f"{P}{name}_count"), name
    assert value(after, f"{P}queue_wait_seconds_bucket", le="+Inf") >= 1
    assert value(after, "gateway_connections_total") > value(before, "gateway_connections_total")


def test_every_dashboard_query_names_a_scraped_metric(server: Server) -> None:
    """The dashboard's queries read series the real processes expose (after a turn)."""
    one_turn(server, "What is your returns policy?")
    text = wait_for(lambda t: value(t, f"{P}time_to_final_seconds_count") > 0, server)
    wanted = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    assert wanted and not wanted - sample_names(text), sorted(wanted - sample_names(text))
    # Prometheus's scrape configuration in docs/deploy.md: each part on its own path.
    own, relayed = scrape(server, "/metrics/gateway"), scrape(server, "/metrics/workers")
    assert sample_names(own) | sample_names(relayed) == sample_names(text)
    assert all(name.startswith(P) for name in sample_names(relayed))


def test_rate_limited_frames_are_counted(server: Server) -> None:
    """Last in the module: the flood empties this address's bucket for a while."""
    before = value(scrape(server), "gateway_rate_limited_frames_total", scope="ip")
    limited = flood(server, 150)  # over the default burst of 60 from one address
    assert limited > 0
    after = value(scrape(server), "gateway_rate_limited_frames_total", scope="ip")
    assert after - before == limited
