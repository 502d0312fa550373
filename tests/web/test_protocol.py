"""Protocol v1 as pure code: the frame parser, the connection state machine, server frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.tutoring.exercises import KINDS
from web.protocol import (
    CHANNEL_FRAMES,
    EXERCISE_KINDS,
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    Cancel,
    Channel,
    ConnectionState,
    ErrorCode,
    Feedback,
    Hello,
    NextExercise,
    Open,
    OperatorMessage,
    ProtocolError,
    State,
    Subscribe,
    UserMessage,
    encode,
    error_frame,
    parse_frame,
)


def code_of(raw: str | bytes) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(raw)
    return caught.value.code


def frame(**fields: Any) -> str:
    return json.dumps(fields)


# parser ------------------------------------------------------------------------------------


def test_hello_with_every_field() -> None:
    """A full widget hello parses into a typed Hello."""
    parsed = parse_frame(
        frame(
            type="hello",
            v=1,
            key="pk_x_y",
            channel="tutor",
            conversation_id="abc",
            conversation_token="t",
            resume_from=12,
        )
    )
    assert parsed == Hello("pk_x_y", Channel.TUTOR, "abc", "t", 12)


def test_exercise_kinds_are_those_the_tutoring_domain_makes() -> None:
    """The protocol names its exercise kinds itself (it stays pure); they must match."""
    assert EXERCISE_KINDS == KINDS


def test_hello_defaults_to_the_widget_channel() -> None:
    """Only the key is required in a hello."""
    assert parse_frame(frame(type="hello", key="k")) == Hello("k")


def test_client_frames_parse() -> None:
    """Every client frame type parses into its dataclass."""
    assert parse_frame(frame(type="user_message", id="m-1", text="hi")) == UserMessage("m-1", "hi")
    assert parse_frame(frame(type="cancel")) == Cancel()
    assert parse_frame(frame(type="feedback", message_id="x", rating=-1)) == Feedback("x", -1)
    assert parse_frame(frame(type="next_exercise", kind="percent")) == NextExercise("percent")
    assert parse_frame(frame(type="subscribe")) == Subscribe()
    assert parse_frame(frame(type="open", conversation_id="c", resume_from=0)) == Open("c", 0)
    assert parse_frame(
        frame(type="operator_message", conversation_id="c", id="o1", text="hello")
    ) == OperatorMessage("c", "o1", "hello")


def test_unknown_fields_are_ignored() -> None:
    """A newer client's extra fields do not break an older gateway."""
    assert parse_frame(frame(type="cancel", extra={"x": 1})) == Cancel()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"type": "cancel"}', ErrorCode.BINARY_FRAME),
        ("not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('"hello"', ErrorCode.BAD_JSON),
        ('{"type": "cancel", "x": NaN}', ErrorCode.BAD_JSON),
        ("{}", ErrorCode.UNKNOWN_TYPE),
        ('{"type": "launch"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": 7}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "hello"}', ErrorCode.BAD_FRAME),
        ('{"type": "hello", "key": "k", "v": 2}', ErrorCode.BAD_FRAME),
        ('{"type": "hello", "key": "k", "channel": "admin"}', ErrorCode.BAD_FRAME),
        ('{"type": "hello", "key": "k", "resume_from": -1}', ErrorCode.BAD_FRAME),
        ('{"type": "hello", "key": "k", "resume_from": true}', ErrorCode.BAD_FRAME),
        ('{"type": "hello", "key": "k", "conversation_id": "a b"}', ErrorCode.BAD_FRAME),
        ('{"type": "user_message", "text": "hi"}', ErrorCode.BAD_FRAME),
        ('{"type": "user_message", "id": "a/b", "text": "hi"}', ErrorCode.BAD_FRAME),
        ('{"type": "user_message", "id": "m", "text": "  "}', ErrorCode.BAD_FRAME),
        ('{"type": "user_message", "id": "m", "text": 5}', ErrorCode.BAD_FRAME),
        ('{"type": "feedback", "message_id": "m", "rating": 2}', ErrorCode.BAD_FRAME),
        ('{"type": "feedback", "message_id": "m", "rating": true}', ErrorCode.BAD_FRAME),
        ('{"type": "next_exercise", "kind": "poetry"}', ErrorCode.BAD_FRAME),
        ('{"type": "open"}', ErrorCode.BAD_FRAME),
    ],
)
def test_bad_frames_get_their_code(raw: str | bytes, code: ErrorCode) -> None:
    """Each kind of bad frame maps to its stable error code."""
    assert code_of(raw) == code


def test_long_text_is_too_large_and_frame_over_the_limit_too() -> None:
    """A text over 4000 characters and a frame over 16 KiB are both too_large."""
    long_text = frame(type="user_message", id="m", text="x" * (MAX_TEXT_CHARS + 1))
    assert code_of(long_text) == ErrorCode.TOO_LARGE
    assert code_of(" " * (MAX_FRAME_BYTES + 1)) == ErrorCode.TOO_LARGE
    # Multi-byte characters count in bytes, as the socket does.
    assert code_of("\u00e9" * (MAX_FRAME_BYTES // 2 + 1)) == ErrorCode.TOO_LARGE


def test_errors_echo_the_client_id_as_ref() -> None:
    """An error about a user_message names its id, so the client can match them."""
    with pytest.raises(ProtocolError) as caught:
        parse_frame(frame(type="user_message", id="m-7", text=""))
    assert caught.value.frame()["ref"] == "m-7"


# state machine -----------------------------------------------------------------------------


def test_only_hello_before_ready() -> None:
    """Before hello succeeded every other frame is unauthenticated; hello passes."""
    state = ConnectionState()
    with pytest.raises(ProtocolError) as caught:
        state.check(Cancel())
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    state.check(Hello("k"))
    assert state.state is State.UNAUTHENTICATED


def test_second_hello_is_bad_state() -> None:
    """Once ready, hello is refused with bad_state."""
    state = ConnectionState()
    state.authenticated(Channel.WIDGET)
    with pytest.raises(ProtocolError) as caught:
        state.check(Hello("k"))
    assert caught.value.code is ErrorCode.BAD_STATE


@pytest.mark.parametrize("channel", list(Channel))
def test_each_channel_sends_only_its_frames(channel: Channel) -> None:
    """Operator frames from the widget and widget frames from the console are forbidden."""
    state = ConnectionState()
    state.authenticated(channel)
    samples = [
        UserMessage("m", "x"),
        Cancel(),
        Feedback("m", 1),
        NextExercise(),
        Subscribe(),
        Open("c"),
        OperatorMessage("c", "o", "x"),
    ]
    for sample in samples:
        if sample.TYPE in CHANNEL_FRAMES[channel]:
            state.check(sample)
        else:
            with pytest.raises(ProtocolError) as caught:
                state.check(sample)
            assert caught.value.code is ErrorCode.FORBIDDEN


def test_closed_refuses_everything() -> None:
    """After close nothing is accepted and nothing reopens it."""
    state = ConnectionState()
    state.close()
    with pytest.raises(ProtocolError):
        state.check(Hello("k"))
    with pytest.raises(ProtocolError):
        state.authenticated(Channel.WIDGET)
    assert state.state is State.CLOSED


def test_closing_errors_carry_their_close_code() -> None:
    """auth_failed, bad_token and auth_timeout close the socket; the others do not."""
    assert ProtocolError(ErrorCode.AUTH_FAILED, "x").close_code == 4401
    assert ProtocolError(ErrorCode.BAD_TOKEN, "x").close_code == 4403
    assert ProtocolError(ErrorCode.AUTH_TIMEOUT, "x").close_code == 4408
    assert ProtocolError(ErrorCode.NOT_FOUND, "x").close_code is None


def test_server_frames_encode_as_json() -> None:
    """Server frames are compact JSON; non-finite numbers become null."""
    error = error_frame(ErrorCode.BUSY, "later", ref="m", retry_after=1.234)
    assert json.loads(encode(error)) == {
        "type": "error",
        "code": "busy",
        "message": "later",
        "ref": "m",
        "retry_after": 1.24,
    }
    assert json.loads(encode({"type": "x", "ms": float("nan")})) == {"type": "x", "ms": None}


# fuzzing ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
frame_types = st.sampled_from(
    [
        "hello",
        "user_message",
        "cancel",
        "feedback",
        "next_exercise",
        "subscribe",
        "open",
        "close_view",
        "take_over",
        "hand_back",
        "operator_message",
        "bogus",
    ]
)
field_names = st.sampled_from(
    [
        "key",
        "channel",
        "conversation_id",
        "conversation_token",
        "resume_from",
        "id",
        "text",
        "message_id",
        "rating",
        "comment",
        "kind",
        "v",
    ]
)
frame_objects = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    frame_types,
    st.dictionaries(field_names, json_values, max_size=6),
)
raw_inputs = (
    st.text(max_size=200)
    | st.binary(max_size=64)
    | json_values.map(json.dumps)
    | frame_objects.map(json.dumps)
)


@settings(max_examples=400, deadline=None)
@given(raw_inputs)
def test_parser_never_crashes(raw: str | bytes) -> None:
    """Any text or bytes gives a frame or a ProtocolError with a known code, nothing else."""
    try:
        parsed = parse_frame(raw)
    except ProtocolError as exc:
        assert exc.code in ErrorCode
        json.loads(encode(exc.frame()))
    else:
        assert parsed.TYPE in {t for types in CHANNEL_FRAMES.values() for t in types} | {"hello"}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            raw_inputs.map(lambda r: ("frame", r)),
            st.sampled_from(list(Channel)).map(lambda c: ("auth", c)),
            st.just(("close", None)),
        ),
        max_size=20,
    )
)
def test_state_machine_never_crashes_and_never_goes_back(steps: list[tuple[str, Any]]) -> None:
    """Any sequence of frames and transitions only raises ProtocolError and only moves on."""
    order = [State.UNAUTHENTICATED, State.READY, State.CLOSED]
    state = ConnectionState()
    for action, value in steps:
        before = state.state
        try:
            if action == "frame":
                state.receive(value)
            elif action == "auth":
                state.authenticated(value)
            else:
                state.close()
        except ProtocolError as exc:
            assert exc.code in ErrorCode
        assert order.index(state.state) >= order.index(before)
        if state.state is State.READY:
            assert state.channel is not None


# text validation: code points no text may hold -------------------------------------------

# One valid frame of each type with text fields, and the fields to spoil: every string a
# client frame carries (free text, keys, tokens, ids, enum words).
_TEXT_FIELDS: list[tuple[dict[str, Any], str]] = [
    *(
        (
            {
                "type": "hello",
                "key": "pk_x_y",
                "channel": "widget",
                "conversation_id": "abc",
                "conversation_token": "t0k",
            },
            name,
        )
        for name in ("key", "channel", "conversation_id", "conversation_token")
    ),
    *(({"type": "user_message", "id": "m1", "text": "hi there"}, n) for n in ("id", "text")),
    *(
        ({"type": "feedback", "message_id": "x1", "rating": 1, "comment": "nice"}, n)
        for n in ("message_id", "comment")
    ),
    ({"type": "next_exercise", "kind": "fractions"}, "kind"),
    ({"type": "open", "conversation_id": "c1"}, "conversation_id"),
    ({"type": "close_view", "conversation_id": "c1"}, "conversation_id"),
    ({"type": "take_over", "conversation_id": "c1"}, "conversation_id"),
    ({"type": "hand_back", "conversation_id": "c1"}, "conversation_id"),
    *(
        ({"type": "operator_message", "conversation_id": "c1", "id": "o1", "text": "hello"}, n)
        for n in ("conversation_id", "id", "text")
    ),
]

# NUL, lone surrogates (high, low, a low before a high) and non-characters of several planes.
_FORBIDDEN = [
    "\x00",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\udc00\ud800",
    "\ufdd0",
    "\ufdef",
    "\ufffe",
    "\uffff",
    "\U0001fffe",
    "\U0001ffff",
    "\U0010fffe",
    "\U0010ffff",
]


@pytest.mark.parametrize(("base", "name"), _TEXT_FIELDS, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("bad", _FORBIDDEN, ids=lambda c: "+".join(f"U{ord(x):04X}" for x in c))
def test_forbidden_code_points_in_any_text_field_are_bad_frame(
    base: dict[str, Any], name: str, bad: str
) -> None:
    """NUL, a lone surrogate or a non-character in any text field of any frame: bad_frame.

    Escaped ("\\ud800" in the JSON) and, where UTF-8 can carry it, written out as is."""
    assert parse_frame(json.dumps(base))  # the frame is valid without it
    spoiled = {**base, name: base[name][:1] + bad + base[name][1:]}
    surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in bad)
    for ascii_json in (True,) if surrogate else (True, False):
        with pytest.raises(ProtocolError) as caught:
            parse_frame(json.dumps(spoiled, ensure_ascii=ascii_json))
        assert caught.value.code == ErrorCode.BAD_FRAME
        assert name in caught.value.message
        # The error frame encodes as UTF-8: its message never quotes the code point raw.
        encode(caught.value.frame()).encode("utf-8")
        if name in ("text", "comment", "key", "conversation_token"):
            assert f"U+{ord(bad[0]):04X}" in caught.value.message


def test_a_lone_surrogate_message_names_the_problem() -> None:
    """The message tells a person what is wrong and where."""
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"type": "user_message", "id": "m7", "text": "ab\\ud800c"}')
    assert caught.value.code == ErrorCode.BAD_FRAME
    assert caught.value.ref == "m7"
    assert caught.value.message == (
        "user_message: the field 'text' holds U+D800 (a lone surrogate) at character 2: "
        "send valid Unicode text"
    )


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f600 smile",  # a surrogate pair, escaped in the JSON: one valid character
        "\ufffd replacement",
        "\ufdcf \ufdf0 around the non-character block",
        "\ufffd\U0001fffd\U0010fffd",
        "tab\tnewline\nreturn\r",
        "\u200b zero width and \u00e9",
        "\U000e0001 tag",
    ],
)
def test_valid_text_next_to_the_forbidden_code_points_is_accepted_unchanged(text: str) -> None:
    """Only the forbidden code points are refused; their neighbours pass as they are."""
    for ascii_json in (True, False):
        raw = json.dumps({"type": "user_message", "id": "m", "text": text}, ensure_ascii=ascii_json)
        assert parse_frame(raw) == UserMessage(id="m", text=text)
    feedback = json.dumps({"type": "feedback", "message_id": "x", "rating": 1, "comment": text})
    assert parse_frame(feedback) == Feedback(message_id="x", rating=1, comment=text)


def _is_forbidden(c: str) -> bool:
    point = ord(c)
    return (
        point == 0
        or 0xD800 <= point <= 0xDFFF
        or 0xFDD0 <= point <= 0xFDEF
        or point & 0xFFFE == 0xFFFE
    )


@settings(max_examples=300)
@given(text=st.text(st.characters(codec=None), min_size=1, max_size=30))
def test_any_text_is_accepted_unchanged_or_refused_for_a_forbidden_code_point(text: str) -> None:
    """The rule, checked against an independent statement of it on arbitrary text."""
    raw = json.dumps({"type": "user_message", "id": "m", "text": text})
    try:
        parsed = parse_frame(raw)
    except ProtocolError as exc:
        if exc.code == ErrorCode.BAD_FRAME and "must not be empty" in exc.message:
            assert not text.strip()
            return
        assert exc.code == ErrorCode.BAD_FRAME, exc
        assert any(_is_forbidden(c) for c in text)
        return
    assert parsed == UserMessage(id="m", text=text)
    assert not any(_is_forbidden(c) for c in text)
