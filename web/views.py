"""SQL rows as the JSON objects of protocol v1 frames (pure: rows in, dicts out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from assistant.store.tables import Conversation, Message, Owner, ToolCall


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def message_view(message: Message) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": message.id,
        "role": str(message.role),
        "text": message.text,
        "client_id": message.client_id,
        "turn_id": message.turn_id,
        "status": str(message.status),
        "created_at": _iso(message.created_at),
    }
    if message.operator_id is not None:
        view["operator_id"] = message.operator_id
    if message.stats:
        view["stats"] = message.stats
    return view


def tool_call_view(call: ToolCall) -> dict[str, Any]:
    ms = None
    if call.finished_at is not None and call.started_at is not None:
        ms = round((call.finished_at - call.started_at).total_seconds() * 1000, 1)
    return {
        "id": call.id,
        "turn_id": call.turn_id,
        "round": call.round,
        "name": call.name,
        "arguments": call.arguments,
        "result": call.result,
        "status": str(call.status),
        "error": call.error,
        "ms": ms,
        "started_at": _iso(call.started_at),
    }


def conversation_view(conversation: Conversation, last_text: str) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "channel": str(conversation.channel),
        "owner": str(conversation.owner),
        "operator_id": conversation.operator_id,
        "updated_at": _iso(conversation.updated_at),
        "last_text": last_text,
        # Handed to the humans (by the bot's handoff tool) and nobody has taken it yet.
        "waiting": conversation.owner == Owner.HUMAN and conversation.operator_id is None,
    }
