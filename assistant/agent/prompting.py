"""From a conversation's stored history to the chat messages the model sees.

The history holds real values; the model sees placeholders. The same function builds the
prompt when serving and the training examples, so both see exactly the same text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.demo.shop import STORE_NAME
from assistant.entities.slots import SlotTable
from assistant.tools.registry import TOOLS, tools_for

SUPPORT_SYSTEM = (
    f"You are the support assistant of {STORE_NAME}. "
    f"Tools: {', '.join(tool.name for tool in tools_for('widget'))}."
)
TUTOR_SYSTEM = (
    f"You are a math tutor. Check every answer with {tools_for('tutor')[0].name}, then say if "
    "it is right, why, and what to try next."
)
SYSTEM_PROMPTS = {"widget": SUPPORT_SYSTEM, "console": SUPPORT_SYSTEM, "tutor": TUTOR_SYSTEM}


@dataclass(frozen=True)
class HistoryItem:
    """One stored event of a conversation, with real values."""

    # user | assistant | operator | system | tool_call | tool_result
    role: str
    text: str = ""
    tool: str | None = None
    # Tool arguments (tool_call) or result (tool_result).
    payload: dict[str, Any] = field(default_factory=dict)


def tool_result_text(tool: str, result: dict[str, Any], table: SlotTable) -> str:
    spec = TOOLS.get(tool)
    slots = spec.result_slots if spec else {}
    # Compact separators: every token of a tool result is paid for in each later prompt.
    return json.dumps(
        table.delexicalize_fields(result, slots), ensure_ascii=False, separators=(",", ":")
    )


def current_exercise(history: Sequence[HistoryItem]) -> Sequence[HistoryItem]:
    """A tutoring history from its latest exercise on (an exercise is a system item).

    Earlier exercises are done with; left in the prompt, the model measured here checked a
    new answer against the first exercise of the session.
    """
    starts = [index for index, item in enumerate(history) if item.role == "system"]
    return history[starts[-1] :] if starts else history


def model_messages(
    channel: str, history: Sequence[HistoryItem], table: SlotTable | None = None
) -> list[dict[str, Any]]:
    """Chat messages for the model, entities replaced by the table's placeholders.

    ``table`` is filled as a side effect; pass a fresh one (or None) per call, since the
    placeholders are numbered by first appearance in the history.
    """
    table = table if table is not None else SlotTable()
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPTS[channel]}]
    for item in current_exercise(history) if channel == "tutor" else history:
        if item.role == "user":
            messages.append({"role": "user", "content": table.delexicalize(item.text)})
        elif item.role in ("assistant", "operator"):
            # An operator's words reach the customer from the same side as the bot's.
            messages.append({"role": "assistant", "content": table.delexicalize(item.text)})
        elif item.role == "system":
            messages.append({"role": "system", "content": table.delexicalize(item.text)})
        elif item.role == "tool_call":
            arguments = {
                key: table.delexicalize(value) if isinstance(value, str) else value
                for key, value in item.payload.items()
            }
            call = {"name": item.tool, "arguments": arguments}
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item.role == "tool_result":
            content = tool_result_text(item.tool or "", item.payload, table)
            messages.append({"role": "tool", "content": content})
        else:
            raise ValueError(f"unknown history role {item.role!r}")
    return messages


# --- foreign instruct models (a checkpoint's own chat template) --------------------------------

TOOL_INSTRUCTIONS = (
    "To use a tool, reply with only a JSON object of the form "
    '{"name": "<tool name>", "arguments": {...}} and nothing else. Tools:'
)


def tool_specs(channel: str) -> list[dict[str, Any]]:
    """The channel's tools as OpenAI function specs (what ``apply_chat_template(tools=)`` reads)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools_for(channel)
    ]


def with_tool_instructions(
    messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For a template without a tool format: the tools described in the system message.

    The model is asked to write a call as a bare JSON object, which
    :func:`assistant.agent.toolcall.parse_foreign_output` reads.
    """
    if not tools:
        return messages
    lines = [
        json.dumps(
            {
                "name": spec["function"]["name"],
                "description": spec["function"]["description"],
                "parameters": spec["function"]["parameters"],
            },
            ensure_ascii=False,
        )
        for spec in tools
    ]
    note = TOOL_INSTRUCTIONS + "\n" + "\n".join(lines)
    first = messages[0] if messages else None
    if first is not None and first["role"] == "system":
        return [{**first, "content": first["content"] + "\n\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]
