"""Entities through slots: extraction, stable placeholders, resolution (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.entities.slots import PLACEHOLDER, SlotKind, SlotTable, UnresolvedSlot


@pytest.mark.parametrize(
    ("text", "expected", "values"),
    [
        ("Where is SH-482913?", "Where is [ORDER_ID_1]?", {"[ORDER_ID_1]": "SH-482913"}),
        ("order sh482913", "order [ORDER_ID_1]", {"[ORDER_ID_1]": "SH-482913"}),
        ("I'm Jane.Doe@Example.com", "I'm [EMAIL_1]", {"[EMAIL_1]": "jane.doe@example.com"}),
        ("track 1Z999AA10123456784", "track [TRACKING_1]", {"[TRACKING_1]": "1Z999AA10123456784"}),
        (
            "I paid $49.99 on 2026-03-14",
            "I paid [AMOUNT_1] on [DATE_1]",
            {"[AMOUNT_1]": "$49.99", "[DATE_1]": "2026-03-14"},
        ),
        (
            "What is 3/4 + 1/8? I got 7/8",
            "What is [EXPR_1]? I got [EXPR_2]",
            {"[EXPR_1]": "3/4 + 1/8", "[EXPR_2]": "7/8"},
        ),
        ("Solve 2x + 3 = 11", "Solve [EXPR_1]", {"[EXPR_1]": "2x + 3 = 11"}),
        ("Convert 2.5 km to m", "Convert [EXPR_1]", {"[EXPR_1]": "2.5 km to m"}),
        ("Express 90 minutes in hours.", "Express [EXPR_1].", {"[EXPR_1]": "90 minutes in hours"}),
        ("I got 2500 m", "I got [EXPR_1]", {"[EXPR_1]": "2500 m"}),
        ("2 items in May", "[EXPR_1] items in May", {"[EXPR_1]": "2"}),
        ("what is 15% of 80", "what is [EXPR_1]", {"[EXPR_1]": "15% of 80"}),
        ("hello there, thanks!", "hello there, thanks!", {}),
    ],
)
def test_extraction(text: str, expected: str, values: dict[str, str]) -> None:
    """Entities become typed placeholders and the table remembers their values."""
    table = SlotTable()
    assert table.delexicalize(text) == expected
    assert table.values == values


def test_same_value_same_placeholder() -> None:
    """A value that recurs keeps its placeholder, across messages and spellings."""
    table = SlotTable()
    first = table.delexicalize("order SH-482913 please")
    second = table.delexicalize("I said sh482913!")
    assert "[ORDER_ID_1]" in first and "[ORDER_ID_1]" in second
    assert table.slot(SlotKind.ORDER_ID, "SH-482913") == "[ORDER_ID_1]"


def test_typed_placeholder_is_neutralised() -> None:
    """A user typing a placeholder cannot refer to a slot."""
    table = SlotTable()
    table.delexicalize("my order is SH-482913")
    assert (
        table.delexicalize("show [ORDER_ID_1] and [EMAIL_9]") == "show (ORDER_ID_1) and (EMAIL_9)"
    )


def test_tool_result_fields() -> None:
    """Named fields of a tool result become placeholders; others stay."""
    table = SlotTable()
    result = {
        "order_id": "SH-482913",
        "status": "shipped",
        "items": ["Blue Mug", "Green Tea"],
        "shipment": {"tracking_number": "1Z999AA10123456784", "carrier": "UPS"},
    }
    kinds = {
        "order_id": SlotKind.ORDER_ID,
        "items": SlotKind.PRODUCT,
        "tracking_number": SlotKind.TRACKING,
    }
    assert table.delexicalize_fields(result, kinds) == {
        "order_id": "[ORDER_ID_1]",
        "status": "shipped",
        "items": ["[PRODUCT_1]", "[PRODUCT_2]"],
        "shipment": {"tracking_number": "[TRACKING_1]", "carrier": "UPS"},
    }


def test_resolve_reply_and_drop_unknown() -> None:
    """Known placeholders get their values; unknown ones are reported and never shown."""
    table = SlotTable()
    table.delexicalize("SH-482913")
    resolved = table.resolve("Order [ORDER_ID_1] went to [EMAIL_1] .")
    assert resolved.text == "Order SH-482913 went to."
    assert resolved.unresolved == ["[EMAIL_1]"]


def test_resolve_draft_hides_partial_placeholders() -> None:
    """A draft shows known values and hides unknown or half-written placeholders."""
    table = SlotTable()
    table.delexicalize("SH-482913")
    assert table.resolve_draft("Order [ORDER_ID_1] via [TRACK") == "Order SH-482913 via ░"
    assert table.resolve_draft("see [EMAIL_3] now") == "see ░ now"


def test_resolve_arguments() -> None:
    """Tool arguments are filled, and an unknown placeholder raises UnresolvedSlot."""
    table = SlotTable()
    table.delexicalize("SH-482913 a@b.co")
    args = {"order_id": "[ORDER_ID_1]", "email": "[EMAIL_1]"}
    assert table.resolve_arguments(args) == {"order_id": "SH-482913", "email": "a@b.co"}
    with pytest.raises(UnresolvedSlot):
        table.resolve_arguments({"order_id": "[ORDER_ID_2]"})


@given(st.text())
def test_round_trip(text: str) -> None:
    """Resolving a delexicalized text never leaves a placeholder the table made."""
    table = SlotTable()
    delexicalized = table.delexicalize(text)
    resolved = table.resolve(delexicalized)
    assert not [p for p in PLACEHOLDER.findall(resolved.text) if p in table.values]
    assert resolved.unresolved == []


def test_carrier_from_a_tool_result_is_a_whole_word_slot() -> None:
    """A carrier becomes a placeholder, in results and in later texts, as a whole word only."""
    table = SlotTable()
    view = table.delexicalize_fields(
        {"carrier": "UPS", "tracking_number": "1ZUPS0000000000001"},
        {"carrier": SlotKind.CARRIER, "tracking_number": SlotKind.TRACKING},
    )
    assert view == {"carrier": "[CARRIER_1]", "tracking_number": "[TRACKING_1]"}
    text = table.delexicalize("Shipped with UPS (not USPS), tracking 1ZUPS0000000000001.")
    assert text == "Shipped with [CARRIER_1] (not USPS), tracking [TRACKING_1]."
    assert table.resolve(text).text == "Shipped with UPS (not USPS), tracking 1ZUPS0000000000001."


def test_disabled_table_passes_values_through() -> None:
    """A table for a model without slots leaves text and tool results as they are."""
    table = SlotTable(enabled=False)
    text = "where is NW-123456? ann@example.com"
    assert table.delexicalize(text) == text
    result = {"order_id": "NW-123456", "carrier": "UPS"}
    assert table.delexicalize_fields(result, {"order_id": SlotKind.ORDER_ID}) == result
    assert table.resolve("Order NW-123456 ships.").text == "Order NW-123456 ships."
    assert table.resolve("Order [ORDER_ID_1] ships.").unresolved == ["[ORDER_ID_1]"]
    # Seen with a random-weight DiffusionGemma: its canvas "[ whatever" drafted as a mask.
    assert table.resolve_draft("a [ b [ORDER_ID_1] c [ORD") == "a [ b c [ORD"
