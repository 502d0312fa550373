"""What a tool is: one object with its name, schema, result slots, timeout, channels, handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assistant.entities.slots import SlotKind
from assistant.tools.shop import Shop

DEFAULT_TIMEOUT_S = 5.0
SUPPORT_CHANNELS = frozenset({"widget", "console"})
TUTOR_CHANNELS = frozenset({"tutor"})


@dataclass(frozen=True)
class ToolContext:
    """Who a call is for: tools are scoped to the tenant, some to the conversation."""

    tenant_id: str
    conversation_id: str | None = None


Handler = Callable[[Shop, ToolContext, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    """A tool the model can call, registered once in :mod:`assistant.tools.registry`."""

    name: str
    # What a page shows while the tool runs ("Looking up your order…").
    label: str
    description: str
    # JSON schema of the arguments; calls are validated against it before the handler runs.
    parameters: dict[str, Any]
    handler: Handler
    channels: frozenset[str]
    # Result fields whose values enter the prompt as placeholders of this kind.
    result_slots: Mapping[str, SlotKind] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Whether running it again changes nothing (it only reads): a redelivered turn may run
    # it again when an earlier delivery stopped mid-call; a tool that writes is not repeated.
    read_only: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get("required", ()))


def object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A closed JSON object schema: the listed properties and nothing else."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def validate_arguments(tool: Tool, arguments: Mapping[str, Any]) -> str | None:
    """A sentence saying what is wrong with the arguments, or None when they fit the schema."""
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    for name in tool.required:
        if name not in arguments:
            return f"missing argument {name!r}"
    for name, value in arguments.items():
        schema = properties.get(name)
        if schema is None:
            return f"unknown argument {name!r}"
        if schema.get("type") == "string" and not isinstance(value, str):
            return f"argument {name!r} must be a string"
        if "enum" in schema and value not in schema["enum"]:
            return f"argument {name!r} must be one of {', '.join(schema['enum'])}"
    return None
