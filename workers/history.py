"""A conversation's history as the agent loop reads it, rebuilt from SQL for one turn.

``build_history`` is pure: stored messages and tool calls in, ``HistoryItem`` list out. Each
earlier turn's tool calls (call, then result, by round) follow that turn's user message, so
the model sees them before the reply they led to. The list ends with the user message of the
turn being generated: later messages (a reply stored by an earlier delivery, an operator's
words typed meanwhile) are not part of this turn's prompt, and neither are this turn's own
tool calls, which the agent loop makes again (reusing stored results) round by round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.agent.prompting import HistoryItem
from assistant.store.database import session_factory
from assistant.store.tables import Message, MessageStatus, Role, ToolCall, ToolCallStatus
from assistant.tools.runner import ToolOutcome

# Roles of stored messages that reach the prompt, and the history role each becomes.
_ROLES = {"user": "user", "assistant": "assistant", "operator": "operator", "system": "system"}


class HistoryError(LookupError):
    """The turn's user message is not among the stored messages."""


@dataclass(frozen=True)
class StoredMessage:
    role: str
    text: str
    turn_id: str | None = None
    status: str = "complete"


@dataclass(frozen=True)
class StoredToolCall:
    turn_id: str
    round: int
    name: str
    arguments: dict[str, Any]
    status: str  # running | ok | error | timeout
    result: dict[str, Any] | None = None
    error: str | None = None


def tool_outcome(call: StoredToolCall) -> ToolOutcome:
    """The finished call as the runner reported it (so the model reads the same result)."""
    return ToolOutcome(
        name=call.name,
        arguments=dict(call.arguments),
        status=call.status,
        result=dict(call.result or {}),
        error=call.error,
    )


def _tool_items(calls: Iterable[StoredToolCall]) -> list[HistoryItem]:
    items: list[HistoryItem] = []
    for call in sorted(calls, key=lambda c: c.round):
        if call.status == ToolCallStatus.RUNNING:
            continue  # an attempt that died mid-call: it has no result to show
        items.append(HistoryItem("tool_call", tool=call.name, payload=dict(call.arguments)))
        items.append(
            HistoryItem("tool_result", tool=call.name, payload=tool_outcome(call).for_model())
        )
    return items


def build_history(
    messages: Sequence[StoredMessage],
    calls: Iterable[StoredToolCall],
    turn_id: str,
) -> list[HistoryItem]:
    """Messages (oldest first) up to the user message of ``turn_id``, with tool calls placed.

    Raises :class:`HistoryError` when that user message is missing.
    """
    by_turn: dict[str, list[StoredToolCall]] = {}
    for call in calls:
        by_turn.setdefault(call.turn_id, []).append(call)
    history: list[HistoryItem] = []
    for message in messages:
        role = _ROLES.get(str(message.role))
        if role is None:
            continue
        if role == "assistant" and message.status == MessageStatus.CANCELLED and not message.text:
            continue  # a reply stopped before it said anything
        history.append(HistoryItem(role, message.text))
        if role == "user" and message.turn_id is not None:
            if message.turn_id == turn_id:
                return history
            history.extend(_tool_items(by_turn.get(message.turn_id, ())))
    raise HistoryError(f"the user message of turn {turn_id} is not stored")


# SQL ------------------------------------------------------------------------------------


def _message(row: Message) -> StoredMessage:
    return StoredMessage(str(row.role), row.text, row.turn_id, str(row.status))


def stored_call(row: ToolCall) -> StoredToolCall:
    return StoredToolCall(
        turn_id=row.turn_id,
        round=row.round,
        name=row.name,
        arguments=dict(row.arguments or {}),
        status=str(row.status),
        result=row.result,
        error=row.error,
    )


class HistoryLoader:
    """Reads what ``build_history`` needs: one query for messages, one for tool calls."""

    def __init__(self, engine: AsyncEngine, limit: int = 100) -> None:
        self._sessions = session_factory(engine)
        self.limit = limit

    async def load(self, conversation_id: str, turn_id: str) -> list[HistoryItem]:
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(Message.created_at.desc(), Message.id.desc())
                    .limit(self.limit)
                )
            )
            rows.reverse()
            turns = {row.turn_id for row in rows if row.turn_id and row.turn_id != turn_id}
            calls = (
                list(
                    await session.scalars(
                        select(ToolCall).where(
                            ToolCall.conversation_id == conversation_id,
                            ToolCall.turn_id.in_(turns),
                        )
                    )
                )
                if turns
                else []
            )
        return build_history([_message(r) for r in rows], [stored_call(c) for c in calls], turn_id)

    async def reply(self, turn_id: str) -> Message | None:
        """The stored reply of ``turn_id`` (an earlier delivery got that far), if any."""
        async with self._sessions() as session:
            reply: Message | None = await session.scalar(
                select(Message).where(Message.turn_id == turn_id, Message.role == Role.ASSISTANT)
            )
        return reply
