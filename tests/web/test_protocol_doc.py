"""docs/protocol.md against the server: the documented fields of server events are the sent ones.

The server frames table lists each event's fields; the event dataclasses of the bus schema are
what the gateway sends (``Event.to_dict`` plus ``type``), and a ``final``'s ``usage`` is the
stored reply's stats: ``Usage.as_dict()`` plus ``mode`` and, for a fallback, ``problem``
(``workers/turns.py``). Issue 15: the document said ``usage.ms`` while the server sent
``milliseconds``, ``rounds`` and ``problem``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from assistant.agent.loop import Usage
from assistant.bus.schema import EVENT_TYPES, Event

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

# The events whose schema dataclass is the frame sent as is (``error`` is both an event and
# the gateway's own error frame, documented once for both).
EVENTS = ("user_message", "draft", "tool_call", "tool_result", "final", "operator_message")
EVENTS += ("handoff", "exercise")


def _strip_parentheses(text: str) -> str:
    """``text`` without its (possibly nested) parenthesized remarks; code spans are opaque."""
    out, depth, code = [], 0, False
    for char in text:
        if char == "`":
            code = not code
        if char == "(" and not code:
            depth += 1
        elif char == ")" and not code:
            depth -= 1
        elif depth == 0:
            out.append(char)
    assert depth == 0, f"unbalanced parentheses in {text!r}"
    return "".join(out)


def _names(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def server_frame_rows() -> dict[str, str]:
    """The "Server frames" table: type -> its fields cell."""
    section = DOC.read_text().split("## Server frames", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.fullmatch(r"\| `([a-z_]+)` \| (.*) \|", line.strip())
        if found:
            rows[found.group(1)] = found.group(2)
    return rows


def documented_fields(kind: str) -> set[str]:
    return _names(_strip_parentheses(server_frame_rows()[kind]))


def documented_usage() -> set[str]:
    cell = server_frame_rows()["final"]
    found = re.search(r"`usage` \(([^()]*)\)", cell)
    assert found, f"final's usage fields are not listed in {cell!r}"
    return _names(found.group(1))


def sent_fields(kind: str) -> set[str]:
    cls = EVENT_TYPES[kind]
    # Every conversation event carries conversation_id (stated once above the table).
    return {f.name for f in dataclasses.fields(cls)} - {"conversation_id"}


def with_stated_fields(kind: str) -> set[str]:
    """The documented fields plus turn_id, stated once above the table for turn events."""
    return documented_fields(kind) | {"turn_id"}


def test_the_table_documents_every_sent_event() -> None:
    """Every event type the schema knows is in the table (the parser finds the rows)."""
    rows = server_frame_rows()
    assert set(EVENTS) <= set(rows), set(EVENTS) - set(rows)
    assert set(EVENT_TYPES) <= set(rows)
    assert "conversation_id" in {f.name for f in dataclasses.fields(Event)}


@pytest.mark.parametrize("kind", EVENTS)
def test_documented_event_fields_are_the_sent_ones(kind: str) -> None:
    """Each event's documented fields are exactly its schema dataclass's fields."""
    assert with_stated_fields(kind) == sent_fields(kind)


def test_final_is_documented_with_its_fields() -> None:
    assert documented_fields("final") == {"seq", "turn_id", "message_id", "text", "status", "usage"}


def test_documented_usage_is_what_a_final_carries() -> None:
    """``final.usage``: the reply's Usage as a dict, its decoding mode, and a fallback's problem."""
    sent = set(Usage().as_dict()) | {"mode", "problem"}
    assert documented_usage() == sent
    assert "ms" not in documented_usage()  # the old, wrong name


def test_the_parser_sees_nested_remarks_as_remarks() -> None:
    """A field named only inside a remark (``\\u2591`` in draft's) is not a field."""
    assert _strip_parentheses("`a` (`b` (`c`)), `d`") == "`a` , `d`"
    assert _names(_strip_parentheses("`a` (`[s, e)` spans), `d`")) == {"a", "d"}
    assert _names(_strip_parentheses("`a` (`b` (`c`)), `d`")) == {"a", "d"}
