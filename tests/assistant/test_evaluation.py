"""Scoring helpers of the evaluation (pure)."""

from __future__ import annotations

from assistant.evaluation import ModeReport, TurnScore, format_table, invented_figures, says_correct


def test_invented_figures() -> None:
    """Figures the context never mentioned are reported; mentioned ones are not."""
    context = 'order NW-123456 {"tracking_number": "1Z999AA10123456784", "total": "$12.00"}'
    assert invented_figures("Order NW-123456, tracking 1Z999AA10123456784.", context) == []
    assert invented_figures("Order NW-654321 costs $13.00.", context) == ["NW-654321", "$13.00"]


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
