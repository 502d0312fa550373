"""Scoring helpers of the evaluation (pure)."""

from __future__ import annotations

import json
from pathlib import Path

from assistant.agent.prompting import HistoryItem
from assistant.lab.corpus.build import build_corpus
from assistant.lab.evaluation import (
    BAD_INPUT_CASES,
    LONGEST_MESSAGE,
    ModeReport,
    TurnScore,
    _context,
    bad_input_turns,
    format_bad_input,
    format_table,
    invented_figures,
    says_correct,
    write_failures,
)


def test_invented_figures() -> None:
    """Figures the context never mentioned are reported; mentioned ones are not."""
    context = 'order NW-123456 {"tracking_number": "1Z999AA10123456784", "total": "$12.00"}'
    assert invented_figures("Order NW-123456, tracking 1Z999AA10123456784.", context) == []
    assert invented_figures("Order NW-654321 costs $13.00.", context) == ["NW-654321", "$13.00"]
    # The customer typed the number without its dash; the reply writes it as the store does.
    typed = "where is nw123456?"
    assert invented_figures("Which email was order NW-123456 placed with?", typed) == []
    assert invented_figures("Which email was order NW-123457 placed with?", typed) == ["NW-123457"]


def test_says_correct_ignores_tool_quotes() -> None:
    """The verdict is read from the reply's own words, not from quoted explanations."""
    explanation = "2 + 2 is not 5: 2 + 2 = 4."
    assert says_correct(f"Correct! {explanation}", [explanation])
    assert not says_correct(f"Not quite. {explanation}", [explanation])


def test_table_has_a_row_per_report() -> None:
    """The report table prints one row per mode and concurrency."""
    score = TurnScore("search_kb", "search_kb", True, True, None, 10.0, 5.0, 20, 10, "ok")
    report = ModeReport("fast-diffusion", 1, [score], wall_s=1.0)
    table = format_table([report])
    assert "| fast-diffusion | 1 | 100.0 | 100.0 | 100.0 | nan | 20 | 0.50 |" in table


def test_context_holds_results_of_tools_called_in_earlier_turns() -> None:
    """A follow-up reply may quote an earlier lookup's total: that is no invention."""
    history = [
        HistoryItem("user", "where is NW-123456? ann@example.com"),
        HistoryItem("tool_call", tool="lookup_order", payload={"order_id": "NW-123456"}),
        HistoryItem("tool_result", tool="lookup_order", payload={"total": "$108.00"}),
        HistoryItem("assistant", "It shipped."),
        HistoryItem("user", "how much did I pay?"),
    ]
    context = _context(history, [])
    assert invented_figures("You paid $108.00.", context) == []
    assert invented_figures("You paid $109.00.", context) == ["$109.00"]


def test_failures_are_dumped_one_per_line(tmp_path: Path) -> None:
    """Only failed turns are written, with what the model did."""
    ok = TurnScore("search_kb", "search_kb", True, True, None, 1.0, 1.0, 5, 5, "fine")
    wrong = TurnScore("search_kb", None, None, False, None, 1.0, 1.0, 5, 5, "nope", {"user": "hi"})
    report = ModeReport("autoregressive", 1, [ok, wrong])
    out = tmp_path / "fails.jsonl"
    assert write_failures([report], out) == 1
    record = json.loads(out.read_text())
    assert record["reply"] == "nope" and record["user"] == "hi" and record["tool_called"] is None


def test_bad_input_cases_come_from_the_held_out_set(tmp_path: Path) -> None:
    """Each bad-input case gets its held-out turns; long messages keep their question last."""
    build_corpus(tmp_path, train_dialogues=10, heldout_dialogues=600, seed=4)
    turns = bad_input_turns(tmp_path / "heldout_dialogues.jsonl", per_case=3)
    by_case: dict[str, int] = {}
    for dialogue, turn in turns:
        assert dialogue.split == "heldout"
        by_case[dialogue.intent] = by_case.get(dialogue.intent, 0) + 1
        if dialogue.intent == "long_message":
            text = dialogue.items[turn.index].text
            assert len(text) == LONGEST_MESSAGE and turn.arguments is not None
            assert all(value in text[-200:] for value in turn.arguments.values())
    assert by_case == dict.fromkeys(BAD_INPUT_CASES, 3)


def test_bad_input_table_has_a_row_per_case() -> None:
    """The bad-input table gives each case the share of its turns that passed, per mode."""
    unsafe = {"intent": "refusal_unsafe"}
    passed = TurnScore(None, None, None, True, None, 1.0, 1.0, 5, 5, "no", unsafe)
    leaked = TurnScore(None, None, None, False, None, 1.0, 1.0, 5, 5, "x", unsafe)
    table = format_bad_input([ModeReport("autoregressive", 1, [passed, leaked])])
    assert "| unsafe request | 2 | 50 |" in table
    assert "prompt injection" not in table


def test_a_replaced_reply_counts_as_a_failure_and_a_fallback(tmp_path: Path) -> None:
    """A reply the loop replaced (TurnFinished.problem) fails the turn, even when the honest
    replacement would pass, and shows in the fallback column and the failure dump."""
    ok = TurnScore("search_kb", "search_kb", True, True, None, 1.0, 1.0, 5, 5, "fine")
    replaced = TurnScore(
        None,
        None,
        None,
        True,
        True,
        1.0,
        1.0,
        5,
        5,
        "Not quite.",
        problem="unsupported_claim:verdict",
    )
    assert not ok.failed and replaced.failed
    report = ModeReport("autoregressive", 1, [ok, replaced], wall_s=1.0)
    assert report.summary()["fallbacks"] == 50.0
    assert "fallback %" in format_table([report]) and "| 50.0 |" in format_table([report])
    out = tmp_path / "fails.jsonl"
    assert write_failures([report], out) == 1
    assert json.loads(out.read_text())["problem"] == "unsupported_claim:verdict"
