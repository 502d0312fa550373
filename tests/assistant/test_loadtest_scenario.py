"""The load generator's pure parts: scripts, the exactly-once ledger, percentiles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from assistant.core.errors import UserError
from assistant.demo.shop import build_shop
from assistant.lab.loadtest.client import check_loopback
from assistant.lab.loadtest.scenario import Ledger, make_scripts, percentile, render, summarise


def test_scripts_are_reproducible_and_mixed() -> None:
    """The same seed gives the same scripts; the tutoring share is respected."""
    orders = build_shop().orders_in("heldout")
    first = make_scripts(10, 2, orders, 0.3, seed=5)
    assert first == make_scripts(10, 2, orders, 0.3, seed=5)
    assert sum(s.kind == "tutoring" for s in first) == 3
    support = next(s for s in first if s.kind == "support")
    assert any(order.number in support.steps[0].text for order in orders)
    assert all(s.user_turns == 2 for s in first)


def _turn(ledger: Ledger, client_id: str, turn_id: str, seq: int) -> None:
    ledger.sent(client_id, 0.0)
    ledger.record(
        {"type": "user_message", "seq": seq, "client_id": client_id, "turn_id": turn_id}, 0.01
    )
    ledger.record({"type": "draft", "seq": seq + 1, "turn_id": turn_id}, 0.1)
    ledger.record({"type": "final", "seq": seq + 2, "turn_id": turn_id, "status": "complete"}, 0.5)


def test_clean_ledger_has_no_violations_and_timings() -> None:
    """A turn acknowledged once with one final is clean and timed from the send."""
    ledger = Ledger()
    _turn(ledger, "a", "t1", 1)
    assert ledger.violations() == []
    timing = ledger.turns["a"]
    assert timing.first_draft_ms == pytest.approx(100)
    assert timing.final_ms == pytest.approx(500)


def test_ledger_finds_duplicates_reordering_and_hangs() -> None:
    """A second final, a seq going back and a message never answered are all reported."""
    ledger = Ledger()
    _turn(ledger, "a", "t1", 1)
    ledger.record({"type": "final", "seq": 3, "turn_id": "t1", "status": "complete"}, 0.6)
    ledger.sent("b", 1.0)
    found = "\n".join(ledger.violations())
    assert "seq 3 arrived after 3" in found
    assert "turn t1 has 2 final replies" in found
    assert "user message b never acknowledged" in found


def test_error_about_a_message_is_not_a_hang() -> None:
    """A message answered by an error frame is counted as an error, not as hanging."""
    ledger = Ledger()
    ledger.sent("a", 0.0)
    ledger.record({"type": "error", "code": "busy", "ref": "a"}, 0.1)
    assert ledger.violations() == []
    assert ledger.errors["busy"] == 1


def test_percentile_nearest_rank() -> None:
    """Nearest-rank percentiles; NaN for no data."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_summary_counts_completed_turns() -> None:
    """The summary counts completed turns and renders without NaN noise."""
    ledger = Ledger()
    _turn(ledger, "a", "t1", 1)
    ledger.sent("b", 0.0)
    summary = summarise([ledger], duration_s=2.0)
    assert (summary.turns, summary.completed, summary.turns_per_s) == (2, 1, 0.5)
    text = render(summary)
    assert "VIOLATED" in text and "never acknowledged" in text


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8765/ws", "ws://localhost/ws", "ws://[::1]:1/ws"])
def test_loopback_targets_are_allowed(url: str) -> None:
    """Loopback URLs pass the target check."""
    check_loopback(url)


@pytest.mark.parametrize("url", ["ws://10.0.0.1/ws", "ws://example.com/ws", "http://127.0.0.1/"])
def test_other_targets_are_refused(url: str) -> None:
    """Anything but a loopback ws URL is refused with a clear error."""
    with pytest.raises(UserError):
        check_loopback(url)


def test_summary_adds_up_model_usage() -> None:
    """Completed turns' usage gives tokens, forward passes and per-turn speed samples."""
    ledger = Ledger()
    ledger.sent("a", 0.0)
    ledger.record({"type": "user_message", "seq": 1, "client_id": "a", "turn_id": "t"}, 0.0)
    ledger.record(
        {
            "type": "final",
            "seq": 2,
            "turn_id": "t",
            "status": "complete",
            "usage": {"tokens": 40, "forward_passes": 20, "milliseconds": 200.0},
        },
        0.3,
    )
    summary = summarise([ledger], duration_s=1.0)
    assert (summary.tokens, summary.forward_passes) == (40, 20)
    assert summary.samples["turn_tokens_per_s"] == [200.0]
    assert "0.50 forward passes per token" in render(summary)


def test_plots_are_drawn_from_reports(tmp_path: Path) -> None:
    """The plot command writes both PNGs from two JSON reports."""
    from assistant.lab.loadtest.plots import main

    ledger = Ledger()
    _turn(ledger, "a", "t1", 1)
    report = summarise([ledger], duration_s=1.0).as_dict()
    files = []
    for label in ("fast", "ar"):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps({**report, "label": label}))
        files.append(str(path))
    assert main([*files, "--out", str(tmp_path / "img")]) == 0
    for name in ("latency.png", "speed.png"):
        assert (tmp_path / "img" / name).read_bytes().startswith(b"\x89PNG")
