"""The unit of generated data: a conversation with real values and what each turn must do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.agent.prompting import HistoryItem


@dataclass
class TurnExpectation:
    """What the assistant must do in reply to the user message at ``index``."""

    index: int
    tool: str | None = None  # the tool it must call first, or None for a direct reply
    arguments: dict[str, Any] | None = None  # with real values
    facts: list[str] = field(default_factory=list)  # values the final reply must contain
    verdict: bool | None = None  # tutoring: is the student's answer right


@dataclass
class Dialogue:
    split: str
    domain: str  # support | tutoring | smalltalk | refusal
    intent: str
    channel: str  # widget | tutor
    items: list[HistoryItem] = field(default_factory=list)
    turns: list[TurnExpectation] = field(default_factory=list)

    def user(self, text: str, **expect: Any) -> None:
        self.turns.append(TurnExpectation(index=len(self.items), **expect))
        self.items.append(HistoryItem("user", text))

    def system(self, text: str) -> None:
        self.items.append(HistoryItem("system", text))

    def say(self, text: str) -> None:
        self.items.append(HistoryItem("assistant", text))

    def call(self, tool: str, arguments: dict[str, Any], result: dict[str, Any]) -> None:
        self.items.append(HistoryItem("tool_call", tool=tool, payload=arguments))
        self.items.append(HistoryItem("tool_result", tool=tool, payload=result))
