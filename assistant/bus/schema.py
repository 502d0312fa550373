"""Versioned schemas of what crosses the bus: turn requests and conversation events.

Pure code, no Redis. A Redis stream entry is a flat ``str -> str`` map: strings go as they
are, numbers as decimal text, nested values (arguments, results, usage) as JSON, and a field
that is ``None`` is left out. Every entry carries ``v`` (the schema version); readers reject
another version with ``SchemaError`` and ignore fields they do not know, so adding an optional
field does not need a new version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Final, Literal, Self, TypeVar, cast, get_type_hints

SCHEMA_VERSION: Final = 1

# Mirrors assistant.store.tables (MessageStatus, Owner) without importing SQLAlchemy here.
FINAL_STATUSES: Final = ("complete", "cancelled", "failed")
OWNERS: Final = ("bot", "human", "closed")

Fields = dict[str, str]
RawFields = Mapping[str, str] | Mapping[bytes, bytes]

_Kind = Literal["str", "int", "float", "opt_str", "opt_int", "json"]
_T = TypeVar("_T")


class SchemaError(ValueError):
    """An entry that is malformed, incomplete or of a version this build cannot read."""


def now_ms() -> int:
    return int(time.time() * 1000)


# codec ---------------------------------------------------------------------------------


def _kind_of(hint: object) -> _Kind:
    if hint is str:
        return "str"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint == (str | None):
        return "opt_str"
    if hint == (int | None):
        return "opt_int"
    return "json"


def _codec(cls: type) -> dict[str, tuple[_Kind, bool]]:
    """Field name -> (kind, required), read once per class from its type hints."""
    hints = get_type_hints(cls)
    return {
        f.name: (
            _kind_of(hints[f.name]),
            f.default is MISSING and f.default_factory is MISSING,
        )
        for f in fields(cls)
    }


def _encode(name: str, kind: _Kind, value: Any) -> str | None:
    if value is None:
        if kind in ("opt_str", "opt_int", "json"):
            return None
        raise SchemaError(f"field {name!r} must not be None")
    if kind in ("str", "opt_str"):
        return str(value)
    try:
        if kind == "float":
            return repr(float(value))
        if kind in ("int", "opt_int"):
            return str(int(value))
    except (TypeError, ValueError):
        raise SchemaError(f"field {name!r} must be a number, got {value!r}") from None
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"field {name!r} is not JSON-serialisable: {exc}") from None


def _decode(name: str, kind: _Kind, raw: str) -> Any:
    try:
        if kind in ("str", "opt_str"):
            return raw
        if kind in ("int", "opt_int"):
            return int(raw)
        if kind == "float":
            return float(raw)
        return json.loads(raw)
    except ValueError:
        raise SchemaError(f"field {name!r} has a malformed value {raw[:80]!r}") from None


def _text(raw: RawFields) -> dict[str, str]:
    """Field map with str keys and values, whether the client decodes responses or not."""
    out: dict[str, str] = {}
    try:
        for key, value in raw.items():
            k = key.decode() if isinstance(key, bytes) else key
            out[k] = value.decode() if isinstance(value, bytes) else value
    except (AttributeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"entry is not a map of UTF-8 strings: {exc}") from None
    return out


def _check_version(data: Mapping[str, str]) -> None:
    if "v" not in data:
        raise SchemaError("entry has no schema version field 'v'")
    if data["v"] != str(SCHEMA_VERSION):
        raise SchemaError(
            f"unsupported schema version {data['v'][:16]!r} (this build reads {SCHEMA_VERSION})"
        )


def _to_fields(obj: Any, codec: Mapping[str, tuple[_Kind, bool]]) -> Fields:
    out: Fields = {"v": str(SCHEMA_VERSION)}
    for name, (kind, _required) in codec.items():
        encoded = _encode(name, kind, getattr(obj, name))
        if encoded is not None:
            out[name] = encoded
    return out


def _from_fields(cls: type[_T], codec: Mapping[str, tuple[_Kind, bool]], data: Fields) -> _T:
    kwargs: dict[str, Any] = {}
    for name, (kind, required) in codec.items():
        if name in data:
            kwargs[name] = _decode(name, kind, data[name])
        elif required:
            raise SchemaError(f"{cls.__name__} entry misses the field {name!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a JSON field of the wrong shape, caught by __post_init__
        raise SchemaError(f"{cls.__name__} entry is malformed: {exc}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SchemaError(message)


# turn requests -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TurnRequest:
    """One turn to generate. No text: the worker reads the history from SQL."""

    turn_id: str
    conversation_id: str
    tenant_id: str
    channel: str
    user_message_id: str
    # No decoding mode: each worker decodes with its own (ASSISTANT_DECODING_MODE). Entries
    # from older writers may still carry a ``mode`` field; readers ignore unknown fields.
    created_at: int = field(default_factory=now_ms)  # ms since the epoch

    _CODEC: ClassVar[dict[str, tuple[_Kind, bool]]]

    def __post_init__(self) -> None:
        for name in ("turn_id", "conversation_id", "tenant_id", "channel", "user_message_id"):
            value = getattr(self, name)
            _require(isinstance(value, str) and value != "", f"TurnRequest.{name} is empty")

    def to_fields(self) -> Fields:
        return _to_fields(self, self._CODEC)

    @classmethod
    def from_fields(cls, raw: RawFields) -> TurnRequest:
        data = _text(raw)
        _check_version(data)
        return _from_fields(cls, cls._CODEC, data)


TurnRequest._CODEC = _codec(TurnRequest)


# conversation events -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of the conversation events; ``seq`` is set once the event is appended."""

    TYPE: ClassVar[str] = ""
    _CODEC: ClassVar[dict[str, tuple[_Kind, bool]]]

    conversation_id: str
    turn_id: str = ""  # empty for events that belong to no turn (operator messages)
    seq: int | None = None

    def __post_init__(self) -> None:
        _require(bool(self.conversation_id), f"{type(self).__name__}.conversation_id is empty")
        _require(self.seq is None or self.seq > 0, f"seq must be positive, got {self.seq}")

    @property
    def type(self) -> str:
        return self.TYPE

    def with_seq(self, seq: int) -> Self:
        return replace(self, seq=seq)

    def to_fields(self) -> Fields:
        out = _to_fields(self, self._CODEC)
        out["type"] = self.TYPE
        return out

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (``type`` first), e.g. for a client frame."""
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_fields(cls, raw: RawFields) -> Self:
        """Decode any event type; called on a subclass, also check it is that type."""
        data = _text(raw)
        _check_version(data)
        kind = data.get("type")
        if kind is None:
            raise SchemaError("event entry has no 'type'")
        event_cls = EVENT_TYPES.get(kind)
        if event_cls is None:
            raise SchemaError(f"unknown event type {kind[:32]!r}")
        if cls is not Event and event_cls is not cls:
            raise SchemaError(f"expected a {cls.TYPE!r} event, got {kind!r}")
        return cast(Self, _from_fields(event_cls, event_cls._CODEC, data))


@dataclass(frozen=True, kw_only=True)
class DraftEvent(Event):
    """A whole-reply snapshot; masked positions show as the engine's placeholder."""

    TYPE: ClassVar[str] = "draft"
    text: str
    step: int
    round: int = 0
    revised: int = 0  # positions re-masked in this step
    # [start, end) character spans of ``text`` committed / revised in this step (optional).
    committed: list[list[int]] = field(default_factory=list)
    revised_spans: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("committed", "revised_spans"):
            spans = getattr(self, name)
            _require(
                isinstance(spans, list) and all(isinstance(s, list) and len(s) == 2 for s in spans),
                f"DraftEvent.{name} must be a list of [start, end] pairs",
            )


@dataclass(frozen=True, kw_only=True)
class ToolCallEvent(Event):
    TYPE: ClassVar[str] = "tool_call"
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    round: int = 0
    call_id: str = ""  # pairs a call with its result when one round calls a tool twice

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(isinstance(self.arguments, dict), "ToolCallEvent.arguments must be an object")


@dataclass(frozen=True, kw_only=True)
class ToolResultEvent(Event):
    TYPE: ClassVar[str] = "tool_result"
    name: str
    status: str  # ok | error | timeout
    result: Any = None
    error: str | None = None
    ms: float = 0.0
    round: int = 0
    call_id: str = ""


@dataclass(frozen=True, kw_only=True)
class FinalEvent(Event):
    TYPE: ClassVar[str] = "final"
    message_id: str
    text: str
    status: str = "complete"
    usage: dict[str, Any] = field(default_factory=dict)  # steps, forward passes, tokens, ms

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.status in FINAL_STATUSES, f"FinalEvent.status {self.status!r} is unknown")
        _require(isinstance(self.usage, dict), "FinalEvent.usage must be an object")


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    TYPE: ClassVar[str] = "error"
    code: str  # stable, machine-readable
    message: str  # for a person


@dataclass(frozen=True, kw_only=True)
class OperatorMessageEvent(Event):
    TYPE: ClassVar[str] = "operator_message"
    message_id: str
    text: str
    operator_id: str = ""
    operator_name: str = ""
    # The console's own id of the frame, so it can match the echo to what it sent; empty in
    # events written before the field existed.
    client_id: str = ""


@dataclass(frozen=True, kw_only=True)
class HandoffEvent(Event):
    TYPE: ClassVar[str] = "handoff"
    owner: str  # bot | human | closed
    operator_id: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.owner in OWNERS, f"HandoffEvent.owner {self.owner!r} is unknown")


@dataclass(frozen=True, kw_only=True)
class UserMessageEvent(Event):
    """A stored user message; ``turn_id`` is empty while a human owns the conversation."""

    TYPE: ClassVar[str] = "user_message"
    message_id: str
    client_id: str
    text: str


@dataclass(frozen=True, kw_only=True)
class ExerciseEvent(Event):
    """A tutoring exercise, stored as a system message whose id is ``exercise_id``."""

    TYPE: ClassVar[str] = "exercise"
    exercise_id: str
    kind: str
    prompt: str


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.TYPE: cls
    for cls in (
        UserMessageEvent,
        ExerciseEvent,
        DraftEvent,
        ToolCallEvent,
        ToolResultEvent,
        FinalEvent,
        ErrorEvent,
        OperatorMessageEvent,
        HandoffEvent,
    )
}
for _cls in EVENT_TYPES.values():
    _cls._CODEC = _codec(_cls)
