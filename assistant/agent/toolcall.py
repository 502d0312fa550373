"""Parsing what the model wrote: a plain reply, or one tool call, or a clear parse error.

The model asks for a tool by writing
``<|tool_call|>{"name": ..., "arguments": {...}}<|/tool_call|>`` (the chat template renders
a message's ``tool_calls`` the same way). Parsing never raises:
malformed output becomes a :class:`ParseError` with a stable code, so a turn survives it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from dlm_runtime.tokenizer import END_TOKEN, TOOL_CALL_CLOSE_TOKEN, TOOL_CALL_OPEN_TOKEN


@dataclass(frozen=True)
class Reply:
    text: str


@dataclass(frozen=True)
class ToolRequest:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # Anything the model wrote before the call (usually nothing).
    preamble: str = ""


@dataclass(frozen=True)
class ParseError:
    code: str  # unbalanced | multiple_calls | bad_json | bad_shape | unknown_tool
    message: str


ParsedOutput = Reply | ToolRequest | ParseError


def parse_output(text: str, known_tools: Collection[str] | None = None) -> ParsedOutput:
    """Classify decoded model output (special tokens kept) as reply, tool call or error."""
    text = text.split(END_TOKEN, 1)[0]
    opens, closes = text.count(TOOL_CALL_OPEN_TOKEN), text.count(TOOL_CALL_CLOSE_TOKEN)
    if opens == 0 and closes == 0:
        return Reply(text.strip())
    if opens != closes or text.find(TOOL_CALL_CLOSE_TOKEN) < text.find(TOOL_CALL_OPEN_TOKEN):
        return ParseError("unbalanced", "tool-call delimiters do not pair up")
    if opens > 1:
        return ParseError("multiple_calls", "only one tool call per reply is supported")
    preamble, rest = text.split(TOOL_CALL_OPEN_TOKEN, 1)
    body = rest.split(TOOL_CALL_CLOSE_TOKEN, 1)[0].strip()
    try:
        call = json.loads(body)
    except json.JSONDecodeError as exc:
        return ParseError("bad_json", f"tool call is not valid JSON: {exc.msg} at {exc.pos}")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return ParseError("bad_shape", 'tool call must be {"name": ..., "arguments": {...}}')
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        return ParseError("bad_shape", "tool-call arguments must be a JSON object")
    name = call["name"]
    if known_tools is not None and name not in known_tools:
        return ParseError("unknown_tool", f"no tool named {name!r}")
    return ToolRequest(name=name, arguments=arguments, preamble=preamble.strip())
