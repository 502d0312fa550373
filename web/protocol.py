"""Client protocol v1 (docs/protocol.md) as pure code: frames, parser, connection states.

No I/O here. ``parse_frame`` turns whatever a socket delivered (text or bytes) into one typed
client frame or raises :class:`ProtocolError` with a stable code; ``ConnectionState`` says
whether a parsed frame may be sent now, on this channel; the ``*_frame`` builders make the
server frames. The gateway around it only moves bytes, Redis entries and SQL rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Final

VERSION: Final = 1
WS_PATH: Final = "/ws"
MAX_FRAME_BYTES: Final = 16 * 1024
# The most a gateway reads of one WebSocket message. Above MAX_FRAME_BYTES and up to this, the
# frame is read and refused with a too_large error frame (the connection stays open); beyond
# it the WebSocket layer stops reading and closes with 1009.
READ_LIMIT_BYTES: Final = 4 * MAX_FRAME_BYTES
MAX_TEXT_CHARS: Final = 4000
MAX_COMMENT_CHARS: Final = 1000
MAX_KEY_CHARS: Final = 200
HELLO_TIMEOUT_S: Final = 10.0
HISTORY_LIMIT: Final = 100
# The kinds a next_exercise frame may name: protocol v1's words (docs/protocol.md). The tutoring
# domain makes the exercises (assistant.tutoring.exercises.KINDS); a test keeps the two equal.
EXERCISE_KINDS: Final = ("arithmetic", "fractions", "percent", "equation", "conversion")

# Client-chosen ids and conversation/message ids: safe in logs, keys and URLs.
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Code points no client text may hold: NUL, lone surrogates (JSON's "\ud800" escapes decode to
# them; they cannot be encoded as UTF-8, so SQL and Redis would fail on them) and the Unicode
# non-characters U+FDD0-U+FDEF and U+nFFFE/U+nFFFF of every plane.
_FORBIDDEN_RE: Final = re.compile(
    "[\x00\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]"
)


def _forbidden_reason(char: str) -> str:
    point = ord(char)
    if point == 0:
        return "NUL"
    if 0xD800 <= point <= 0xDFFF:
        return "a lone surrogate"
    return "a non-character"


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BINARY_FRAME = "binary_frame"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FRAME = "bad_frame"
    UNAUTHENTICATED = "unauthenticated"
    AUTH_TIMEOUT = "auth_timeout"
    AUTH_FAILED = "auth_failed"
    BAD_TOKEN = "bad_token"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BAD_STATE = "bad_state"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    TURN_FAILED = "turn_failed"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    TOO_LARGE = 1009
    SERVICE_RESTART = 1012
    TOO_SLOW = 4008  # the client read too slowly; it resumes from its last seq
    AUTH_FAILED = 4401
    BAD_TOKEN = 4403
    AUTH_TIMEOUT = 4408


# The errors after which the gateway closes the socket, and with which code.
CLOSING_ERRORS: Final[Mapping[ErrorCode, CloseCode]] = {
    ErrorCode.AUTH_TIMEOUT: CloseCode.AUTH_TIMEOUT,
    ErrorCode.AUTH_FAILED: CloseCode.AUTH_FAILED,
    ErrorCode.BAD_TOKEN: CloseCode.BAD_TOKEN,
}


class ProtocolError(Exception):
    """A frame the gateway refuses; ``code`` is stable, ``message`` is for a person."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after

    @property
    def close_code(self) -> CloseCode | None:
        """The close code when this error ends the connection, else None."""
        return CLOSING_ERRORS.get(self.code)

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message, ref=self.ref, retry_after=self.retry_after)


class Channel(StrEnum):
    WIDGET = "widget"
    TUTOR = "tutor"
    CONSOLE = "console"


# frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    key: str
    channel: Channel = Channel.WIDGET
    conversation_id: str | None = None
    conversation_token: str | None = None
    resume_from: int | None = None


@dataclass(frozen=True)
class UserMessage:
    TYPE: ClassVar[str] = "user_message"
    id: str
    text: str


@dataclass(frozen=True)
class Cancel:
    TYPE: ClassVar[str] = "cancel"


@dataclass(frozen=True)
class Feedback:
    TYPE: ClassVar[str] = "feedback"
    message_id: str
    rating: int
    comment: str = ""


@dataclass(frozen=True)
class NextExercise:
    TYPE: ClassVar[str] = "next_exercise"
    kind: str | None = None


@dataclass(frozen=True)
class Subscribe:
    TYPE: ClassVar[str] = "subscribe"


@dataclass(frozen=True)
class Open:
    TYPE: ClassVar[str] = "open"
    conversation_id: str
    resume_from: int | None = None


@dataclass(frozen=True)
class CloseView:
    TYPE: ClassVar[str] = "close_view"
    conversation_id: str


@dataclass(frozen=True)
class TakeOver:
    TYPE: ClassVar[str] = "take_over"
    conversation_id: str


@dataclass(frozen=True)
class HandBack:
    TYPE: ClassVar[str] = "hand_back"
    conversation_id: str


@dataclass(frozen=True)
class OperatorMessage:
    TYPE: ClassVar[str] = "operator_message"
    conversation_id: str
    id: str
    text: str


ClientFrame = (
    Hello
    | UserMessage
    | Cancel
    | Feedback
    | NextExercise
    | Subscribe
    | Open
    | CloseView
    | TakeOver
    | HandBack
    | OperatorMessage
)

# Which frames each channel may send once ready (hello is handled by the state machine).
CHANNEL_FRAMES: Final[Mapping[Channel, frozenset[str]]] = {
    Channel.WIDGET: frozenset({"user_message", "cancel", "feedback"}),
    Channel.TUTOR: frozenset({"user_message", "cancel", "feedback", "next_exercise"}),
    Channel.CONSOLE: frozenset(
        {"subscribe", "open", "close_view", "take_over", "hand_back", "operator_message"}
    ),
}


# parser ------------------------------------------------------------------------------------


class _Fields:
    """Typed reads of one frame's fields; every failure is a ``bad_frame`` error."""

    def __init__(self, data: Mapping[str, Any], ref: str | None) -> None:
        self.data = data
        self.ref = ref
        self.type = str(data.get("type"))

    def _bad(self, message: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_FRAME, f"{self.type}: {message}", ref=self.ref)

    def string(self, name: str, max_chars: int, *, required: bool = True) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._bad(f"the field {name!r} is missing")
            return None
        if not isinstance(value, str):
            raise self._bad(f"the field {name!r} must be a string")
        if len(value) > max_chars:
            raise self._bad(f"the field {name!r} is longer than {max_chars} characters")
        self._clean(name, value)
        return value

    def _clean(self, name: str, value: str) -> None:
        """Refuse a text with a code point that cannot be stored or shown (see _FORBIDDEN_RE)."""
        found = _FORBIDDEN_RE.search(value)
        if found is not None:
            char = found.group()
            raise self._bad(
                f"the field {name!r} holds U+{ord(char):04X} ({_forbidden_reason(char)}) at "
                f"character {found.start()}: send valid Unicode text"
            )

    def ident(self, name: str, *, required: bool = True) -> str | None:
        value = self.string(name, 64, required=required)
        if value is not None and not _ID_RE.fullmatch(value):
            raise self._bad(f"the field {name!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value

    def text(self, name: str) -> str:
        value = self.data.get(name)
        if not isinstance(value, str):
            raise self._bad(f"the field {name!r} must be a string")
        if len(value) > MAX_TEXT_CHARS:
            # Its own code: the client should shorten the text, not fix its program.
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"the text has {len(value)} characters; the limit is {MAX_TEXT_CHARS}",
                ref=self.ref,
            )
        if not value.strip():
            raise self._bad(f"the field {name!r} must not be empty")
        self._clean(name, value)
        return value

    def seq(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is None:
            return None
        # bool is an int in Python, never a sequence number.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad(f"the field {name!r} must be a whole number >= 0")
        if value > 2**53:  # beyond what a JavaScript client can count exactly
            raise self._bad(f"the field {name!r} is out of range")
        return value


def _ref_of(data: Mapping[str, Any]) -> str | None:
    """The client id a frame carries, echoed in its error so the client can match them."""
    value = data.get("id")
    return value if isinstance(value, str) and _ID_RE.fullmatch(value) else None


def _hello(f: _Fields) -> Hello:
    version = f.data.get("v", VERSION)
    if isinstance(version, bool) or version != VERSION:
        raise f._bad(f"unsupported protocol version {str(version)[:16]!r}; this is v{VERSION}")
    channel = f.data.get("channel", Channel.WIDGET.value)
    if channel not in (c.value for c in Channel):
        raise f._bad(f"channel must be one of {', '.join(c.value for c in Channel)}")
    key = f.string("key", MAX_KEY_CHARS)
    assert key is not None
    return Hello(
        key=key,
        channel=Channel(channel),
        conversation_id=f.ident("conversation_id", required=False),
        conversation_token=f.string("conversation_token", 128, required=False),
        resume_from=f.seq("resume_from"),
    )


def _user_message(f: _Fields) -> UserMessage:
    client_id = f.ident("id")
    assert client_id is not None
    return UserMessage(id=client_id, text=f.text("text"))


def _feedback(f: _Fields) -> Feedback:
    message_id = f.ident("message_id")
    assert message_id is not None
    rating = f.data.get("rating")
    if isinstance(rating, bool) or rating not in (1, -1):
        raise f._bad("rating must be 1 or -1")
    comment = f.string("comment", MAX_COMMENT_CHARS, required=False) or ""
    return Feedback(message_id=message_id, rating=int(rating), comment=comment)


def _next_exercise(f: _Fields) -> NextExercise:
    kind = f.data.get("kind")
    if kind is not None and kind not in EXERCISE_KINDS:
        raise f._bad(f"kind must be one of {', '.join(EXERCISE_KINDS)}")
    return NextExercise(kind=kind)


def _conversation_id(f: _Fields) -> str:
    value = f.ident("conversation_id")
    assert value is not None
    return value


def _open(f: _Fields) -> Open:
    return Open(conversation_id=_conversation_id(f), resume_from=f.seq("resume_from"))


def _operator_message(f: _Fields) -> OperatorMessage:
    conversation_id = _conversation_id(f)
    client_id = f.ident("id")
    assert client_id is not None
    return OperatorMessage(conversation_id=conversation_id, id=client_id, text=f.text("text"))


_PARSERS: Final[Mapping[str, Any]] = {
    "hello": _hello,
    "user_message": _user_message,
    "cancel": lambda f: Cancel(),
    "feedback": _feedback,
    "next_exercise": _next_exercise,
    "subscribe": lambda f: Subscribe(),
    "open": _open,
    "close_view": lambda f: CloseView(conversation_id=_conversation_id(f)),
    "take_over": lambda f: TakeOver(conversation_id=_conversation_id(f)),
    "hand_back": lambda f: HandBack(conversation_id=_conversation_id(f)),
    "operator_message": _operator_message,
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_frame(raw: str | bytes) -> ClientFrame:
    """One client frame from one WebSocket message; raises :class:`ProtocolError`."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raise ProtocolError(ErrorCode.BINARY_FRAME, "binary frames are not accepted: send text")
    if len(raw) > MAX_FRAME_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"a frame may have at most {MAX_FRAME_BYTES} bytes"
        )
    try:
        # NaN and Infinity are not JSON, whatever Python's parser allows by default.
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a frame must be a JSON object")
    ref = _ref_of(data)
    kind = data.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if kind is None:
            message = "the frame has no 'type'"
        else:
            shown = kind[:32] if isinstance(kind, str) else type(kind).__name__
            message = f"unknown frame type {shown!r}"
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, message, ref=ref)
    frame: ClientFrame = parser(_Fields(data, ref))
    return frame


# connection state machine ------------------------------------------------------------------


class State(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class ConnectionState:
    """Where one connection is: ``unauthenticated -> ready -> closed``, never backwards."""

    state: State = State.UNAUTHENTICATED
    channel: Channel | None = None

    def check(self, frame: ClientFrame) -> None:
        """Raise :class:`ProtocolError` unless ``frame`` may be sent now on this channel."""
        ref = frame.id if isinstance(frame, UserMessage | OperatorMessage) else None
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.BAD_STATE, "the connection is closed", ref=ref)
        if self.state is State.UNAUTHENTICATED:
            if not isinstance(frame, Hello):
                raise ProtocolError(
                    ErrorCode.UNAUTHENTICATED, "send hello with your key first", ref=ref
                )
            return
        if isinstance(frame, Hello):
            raise ProtocolError(ErrorCode.BAD_STATE, "already authenticated")
        assert self.channel is not None
        if frame.TYPE not in CHANNEL_FRAMES[self.channel]:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"{frame.TYPE} is not allowed on the {self.channel} channel",
                ref=ref,
            )

    def authenticated(self, channel: Channel) -> None:
        if self.state is not State.UNAUTHENTICATED:
            raise ProtocolError(ErrorCode.BAD_STATE, "already authenticated")
        self.state = State.READY
        self.channel = channel

    def close(self) -> None:
        self.state = State.CLOSED

    def receive(self, raw: str | bytes) -> ClientFrame:
        """Parse ``raw`` and check it against the state: the whole inbound path, pure."""
        frame = parse_frame(raw)
        self.check(frame)
        return frame


# server frames -----------------------------------------------------------------------------


def error_frame(
    code: ErrorCode,
    message: str,
    *,
    ref: str | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if ref is not None:
        frame["ref"] = ref
    if retry_after is not None:
        # Rounded up to hundredths: a client that waits what it is told is never too early.
        frame["retry_after"] = max(0.01, math.ceil(retry_after * 100) / 100)
    return frame


def ready_frame(
    channel: Channel,
    *,
    conversation_id: str,
    conversation_token: str,
    owner: str,
    last_seq: int,
    messages: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "type": "ready",
        "v": VERSION,
        "channel": channel.value,
        "conversation_id": conversation_id,
        "conversation_token": conversation_token,
        "owner": owner,
        "last_seq": last_seq,
        "messages": list(messages),
    }


def console_ready_frame(tenant_id: str, operator_id: int, operator_name: str) -> dict[str, Any]:
    return {
        "type": "ready",
        "v": VERSION,
        "channel": Channel.CONSOLE.value,
        "tenant_id": tenant_id,
        "operator": {"id": operator_id, "name": operator_name},
    }


def feedback_saved_frame(message_id: str, rating: int) -> dict[str, Any]:
    return {"type": "feedback_saved", "message_id": message_id, "rating": rating}


def conversation_list_frame(conversations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "conversation_list", "conversations": list(conversations)}


def conversation_update_frame(conversation: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of the list, its fields at the top level next to ``type``."""
    return {"type": "conversation_update", **conversation}


def history_frame(
    conversation_id: str,
    *,
    owner: str,
    operator_id: int | None,
    last_seq: int,
    messages: Sequence[Mapping[str, Any]],
    tool_calls: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "type": "history",
        "conversation_id": conversation_id,
        "owner": owner,
        "operator_id": operator_id,
        "last_seq": last_seq,
        "messages": list(messages),
        "tool_calls": list(tool_calls),
    }


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null: JSON has no NaN, and browsers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def encode(frame: Mapping[str, Any]) -> str:
    """A server frame as one JSON text message."""
    return json.dumps(_json_safe(dict(frame)), ensure_ascii=False, separators=(",", ":"))
