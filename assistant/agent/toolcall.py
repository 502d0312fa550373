"""Parsing what the model wrote: a plain reply, or one tool call, or a clear parse error.

The model asks for a tool by writing
``<|tool_call|>{"name": ..., "arguments": {...}}<|/tool_call|>`` (the chat template renders
a message's ``tool_calls`` the same way). Parsing never raises:
malformed output becomes a :class:`ParseError` with a stable code, so a turn survives it.
"""

from __future__ import annotations

import itertools
import json
import re
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

_CLOSING = (".", "!", "?", ":", "\u2026")


def stops_mid_sentence(text: str) -> bool:
    """A reply without closing punctuation ("It should arrive by"): parallel decoding ended
    the reply before its sentence did."""
    return not text.rstrip().rstrip("\"')]").endswith(_CLOSING)


_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
# Words people do double ("bye bye", "very very"); single letters are left out too.
_DOUBLED_ON_PURPOSE = frozenset(("bye", "ha", "no", "very", "so", "really"))


def doubled_word(reply: str) -> bool:
    """A word written twice in a row ("The answer answer is"): parallel commits that could
    not see each other."""
    words = [w.lower() for w in _WORD.findall(reply)]
    return any(
        a == b and len(a) > 1 and a not in _DOUBLED_ON_PURPOSE for a, b in itertools.pairwise(words)
    )


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


# --- foreign instruct models --------------------------------------------------------------------

# Tool-call wrappers of the common chat templates (Hermes/Qwen/Dream, Mistral, Llama 3.1's
# python tag); the JSON inside is read the same way.
_FOREIGN_WRAPPERS = (
    ("<tool_call>", "</tool_call>"),
    ("[TOOL_CALLS]", None),
    ("<|python_tag|>", None),
)


def parse_foreign_output(
    text: str, known_tools: Collection[str] | None = None
) -> Reply | ToolRequest:
    """A foreign model's reply (cut at its end token already): a tool call, or else a reply.

    A call is a JSON object ``{"name": ..., "arguments": {...}}`` (``"parameters"`` too, as
    Llama 3.1 writes it), bare or inside one of the usual wrappers, optionally in a list or a
    code fence. Anything else, a malformed call or one naming an unknown tool included, is
    the reply: a foreign model that writes no usable call still answers, never fails the turn.
    """
    stripped = text.strip()
    body = stripped
    for opener, closer in _FOREIGN_WRAPPERS:
        if opener in body:
            preamble, body = body.split(opener, 1)
            if closer is not None:
                body = body.split(closer, 1)[0]
            call = _json_call(body, known_tools)
            if call is not None:
                return ToolRequest(call[0], call[1], preamble.strip())
            return Reply(stripped)
    start = body.find("{")
    before = body[:start].rstrip() if start >= 0 else ""
    if before.endswith("["):  # a list of one call
        start = len(before) - 1
    if start >= 0:
        call = _json_call(body[start:], known_tools)
        if call is not None:
            return ToolRequest(
                call[0], call[1], body[:start].strip().removesuffix("```json").strip()
            )
    return Reply(stripped)


def _json_call(body: str, known_tools: Collection[str] | None) -> tuple[str, dict[str, Any]] | None:
    body = body.strip().removeprefix("```json").removeprefix("```").strip()
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        return None
    fn = value.get("function", value)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    arguments = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    if known_tools is not None and fn["name"] not in known_tools:
        return None
    return fn["name"], arguments
