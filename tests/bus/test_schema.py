"""Pure tests of the bus schemas and key names: no Redis."""

from __future__ import annotations

from typing import Any

import pytest

from assistant.bus.keys import GROUP, Keys
from assistant.bus.schema import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    DraftEvent,
    ErrorEvent,
    Event,
    ExerciseEvent,
    FinalEvent,
    HandoffEvent,
    OperatorMessageEvent,
    SchemaError,
    ToolCallEvent,
    ToolResultEvent,
    TurnRequest,
    UserMessageEvent,
)


def _turn(**changes: Any) -> TurnRequest:
    values: dict[str, Any] = {
        "turn_id": "t1",
        "conversation_id": "c1",
        "tenant_id": "ten",
        "channel": "widget",
        "user_message_id": "m1",
        "created_at": 1_700_000_000_000,
    }
    return TurnRequest(**(values | changes))


EVENTS: list[Event] = [
    DraftEvent(
        conversation_id="c1",
        turn_id="t1",
        text="Your order ▒▒ shipped",
        step=3,
        round=1,
        revised=2,
        committed=[[0, 10]],
        revised_spans=[[11, 13]],
    ),
    ToolCallEvent(
        conversation_id="c1",
        turn_id="t1",
        name="order_status",
        arguments={"order": "A-17", "nested": {"x": [1, 2]}},
        round=1,
        call_id="k1",
    ),
    ToolResultEvent(
        conversation_id="c1",
        turn_id="t1",
        name="order_status",
        status="ok",
        result={"status": "shipped"},
        ms=12.5,
        round=1,
    ),
    ToolResultEvent(
        conversation_id="c1", turn_id="t1", name="x", status="error", error="boom", ms=3
    ),
    FinalEvent(
        conversation_id="c1",
        turn_id="t1",
        message_id="m2",
        text="Shipped.",
        usage={"steps": 4, "forward_passes": 4, "tokens": 9, "milliseconds": 31.5},
    ),
    ErrorEvent(conversation_id="c1", turn_id="t1", code="turn_failed", message="Sorry."),
    OperatorMessageEvent(
        conversation_id="c1", message_id="m3", text="Hi, Ana here.", operator_id="7"
    ),
    OperatorMessageEvent(
        conversation_id="c1", message_id="m7", text="Still here.", operator_id="7", client_id="o1"
    ),
    HandoffEvent(conversation_id="c1", owner="human", operator_id="7"),
    HandoffEvent(conversation_id="c1", owner="bot"),
    UserMessageEvent(
        conversation_id="c1", turn_id="t2", message_id="m4", client_id="k-1", text="Hi"
    ),
    UserMessageEvent(conversation_id="c1", message_id="m5", client_id="k-2", text="Hi again"),
    ExerciseEvent(conversation_id="c1", exercise_id="m6", kind="percent", prompt="What is 5%?"),
]


def test_turn_round_trip() -> None:
    """A turn survives to_fields/from_fields, with the version and flat string fields."""
    turn = _turn()
    fields = turn.to_fields()
    assert fields["v"] == str(SCHEMA_VERSION)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    assert TurnRequest.from_fields(fields) == turn


def test_turn_carries_no_text_or_mode_and_reads_bytes() -> None:
    """The worker reads text from SQL and decodes in its own mode; bytes read the same."""
    turn = _turn()
    fields = turn.to_fields()
    assert "mode" not in fields
    assert "text" not in fields
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert TurnRequest.from_fields(raw) == turn


def test_turn_defaults_created_at_to_now() -> None:
    """created_at defaults to the current time in milliseconds."""
    turn = TurnRequest(
        turn_id="t", conversation_id="c", tenant_id="x", channel="tutor", user_message_id="m"
    )
    assert turn.created_at > 1_600_000_000_000


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_event_round_trip(event: Event) -> None:
    """Every event type survives to_fields/from_fields, seq included once set."""
    appended = event.with_seq(42)
    fields = appended.to_fields()
    assert fields["type"] == event.type
    assert fields["seq"] == "42"
    assert all(isinstance(v, str) for v in fields.values())
    decoded = Event.from_fields(fields)
    assert decoded == appended
    assert type(decoded) is type(event)
    assert type(event).from_fields(fields) == appended


def test_operator_message_written_before_client_id_reads_as_empty() -> None:
    """An operator_message entry without client_id (an older writer) decodes with ""."""
    fields = {"v": "1", "type": "operator_message", "conversation_id": "c1", "seq": "4"}
    event = Event.from_fields({**fields, "message_id": "m3", "text": "Hi", "operator_id": "7"})
    assert isinstance(event, OperatorMessageEvent) and event.client_id == ""


def test_event_without_seq_has_no_seq_field() -> None:
    """An event not yet appended has no seq field."""
    assert "seq" not in EVENTS[0].to_fields()
    assert Event.from_fields(EVENTS[0].to_fields()).seq is None


def test_event_types_registry_is_complete() -> None:
    """The registry knows every type the protocol names."""
    assert set(EVENT_TYPES) == {
        "draft",
        "tool_call",
        "tool_result",
        "final",
        "error",
        "operator_message",
        "handoff",
        "user_message",
        "exercise",
    }


def test_to_dict_is_json_ready() -> None:
    """to_dict gives a frame-ready dict with the type first."""
    frame = EVENTS[4].with_seq(5).to_dict()
    assert next(iter(frame)) == "type"
    assert frame["type"] == "final"
    assert frame["seq"] == 5
    assert frame["usage"]["steps"] == 4


def test_turn_from_an_older_writer_with_a_mode_reads() -> None:
    """A turn queued before the mode field was dropped still reads (rolling upgrade)."""
    fields = _turn().to_fields() | {"mode": "fast-diffusion"}
    assert TurnRequest.from_fields(fields) == _turn()


def test_unknown_fields_are_ignored() -> None:
    """A newer writer's extra optional field does not break this reader."""
    fields = _turn().to_fields() | {"priority": "high"}
    assert TurnRequest.from_fields(fields) == _turn()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": None}, "schema version"),
        ({"v": "2"}, "unsupported schema version"),
        ({"v": "x"}, "unsupported schema version"),
        ({"turn_id": None}, "turn_id"),
        ({"created_at": "soon"}, "created_at"),
        ({"turn_id": ""}, "turn_id"),
    ],
)
def test_malformed_turn_is_rejected(change: dict[str, str | None], message: str) -> None:
    """Missing, malformed or other-version turns raise SchemaError naming the problem."""
    fields: dict[str, str] = _turn().to_fields()
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    with pytest.raises(SchemaError, match=message):
        TurnRequest.from_fields(fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": None}, "no 'type'"),
        ({"type": "telepathy"}, "unknown event type"),
        ({"v": "0"}, "unsupported schema version"),
        ({"step": "three"}, "step"),
        ({"text": None}, "text"),
        ({"committed": "[[0,"}, "committed"),
        ({"committed": "[1, 2]"}, "committed"),
        ({"conversation_id": ""}, "conversation_id"),
    ],
)
def test_malformed_event_is_rejected(change: dict[str, str | None], message: str) -> None:
    """Malformed events raise SchemaError, never a bare KeyError or TypeError."""
    fields = EVENTS[0].to_fields()
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    with pytest.raises(SchemaError, match=message):
        Event.from_fields(fields)


def test_wrong_subclass_is_rejected() -> None:
    """Decoding through a subclass checks the type."""
    with pytest.raises(SchemaError, match="expected a 'final' event"):
        FinalEvent.from_fields(EVENTS[0].to_fields())


def test_invalid_values_are_rejected_on_construction() -> None:
    """Unknown final status or owner, or a non-object argument map, raise SchemaError."""
    with pytest.raises(SchemaError, match="status"):
        FinalEvent(conversation_id="c", message_id="m", text="t", status="meh")
    with pytest.raises(SchemaError, match="owner"):
        HandoffEvent(conversation_id="c", owner="robot")
    with pytest.raises(SchemaError, match="arguments"):
        ToolCallEvent.from_fields(EVENTS[1].to_fields() | {"arguments": "[1]"})


def test_unserialisable_value_is_a_schema_error() -> None:
    """A value JSON cannot carry fails at to_fields with SchemaError."""
    call = ToolCallEvent(conversation_id="c", name="x", arguments={"when": object()})
    with pytest.raises(SchemaError, match="arguments"):
        call.to_fields()


def test_schema_error_is_a_value_error() -> None:
    """Callers may catch ValueError."""
    assert issubclass(SchemaError, ValueError)


def test_non_text_map_is_a_schema_error() -> None:
    """Bytes that are not UTF-8 raise SchemaError."""
    with pytest.raises(SchemaError, match="UTF-8"):
        TurnRequest.from_fields({b"v": b"\xff"})


# keys ----------------------------------------------------------------------------------


def test_conversation_keys_share_one_hash_tag() -> None:
    """All keys of a conversation carry the same {c:<id>} hash tag."""
    keys = Keys()
    names = [keys.events("abc"), keys.seq("abc"), keys.turn("abc"), keys.cancel("abc")]
    assert names == [
        "asst:{c:abc}:events",
        "asst:{c:abc}:seq",
        "asst:{c:abc}:turn",
        "asst:{c:abc}:cancel",
    ]
    assert keys.turns == "asst:turns"
    assert keys.dead == "asst:turns:dead"
    assert keys.group == GROUP == "workers"
    assert keys.rate_limit("tenant", "t1") == "asst:rl:tenant:t1"


def test_prefix_separates_deployments() -> None:
    """Another prefix gives disjoint names."""
    keys = Keys("staging")
    assert keys.events("abc") == "staging:{c:abc}:events"
    assert keys.turns == "staging:turns"


@pytest.mark.parametrize("bad", ["", "a}b", "a{b", "a b", "x" * 201])
def test_unsafe_ids_are_refused(bad: str) -> None:
    """Ids that would break the hash tag or the key are refused."""
    with pytest.raises(ValueError):
        Keys().events(bad)


@pytest.mark.parametrize("bad", ["", "a{b}", "has space"])
def test_unsafe_prefix_is_refused(bad: str) -> None:
    """A prefix with braces or spaces is refused."""
    with pytest.raises(ValueError, match="prefix"):
        Keys(bad)
