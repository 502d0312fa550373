"""What a turn's event log already holds, so that a redelivered turn does not publish it again.

Pure: events in, answers out. A delivery of a turn that an earlier one started (a worker
that died, a run again after a Redis outage) replays the same rounds, since decoding is
seeded by the turn; its client already has the earlier delivery's tool calls, tool results,
handoff and drafts. ``Published.holds`` says which of the new delivery's events are already
there: a tool call or result of the same round, the turn's handoff, and a draft no further
along than the drafts of its round already shown (or of a round the log has gone past).
A final is never held back: the event log keeps the first final of a turn (``EventLog.append``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from assistant.bus.schema import (
    DraftEvent,
    Event,
    HandoffEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)

__all__ = ["Published", "ends_search"]


@dataclass
class Published:
    """The events of one turn already in its conversation's event log."""

    turn_id: str
    tool_calls: set[int] = field(default_factory=set)  # rounds
    tool_results: set[int] = field(default_factory=set)  # rounds
    handoff: bool = False
    drafts: dict[int, int] = field(default_factory=dict)  # round -> highest step shown
    last_round: int = -1  # the latest round any event of the turn belongs to

    @classmethod
    def of(cls, turn_id: str, events: Iterable[Event]) -> Published:
        published = cls(turn_id)
        for event in events:
            published.add(event)
        return published

    def add(self, event: Event) -> None:
        """Note ``event`` (an event of another turn is ignored)."""
        if event.turn_id != self.turn_id or not self.turn_id:
            return
        if isinstance(event, ToolCallEvent):
            self.tool_calls.add(event.round)
        elif isinstance(event, ToolResultEvent):
            self.tool_results.add(event.round)
        elif isinstance(event, HandoffEvent):
            self.handoff = True
        elif isinstance(event, DraftEvent):
            self.drafts[event.round] = max(event.step, self.drafts.get(event.round, -1))
        else:
            return
        self.last_round = max(self.last_round, getattr(event, "round", 0))

    @property
    def empty(self) -> bool:
        return not (self.tool_calls or self.tool_results or self.handoff or self.drafts)

    def holds(self, event: Event) -> bool:
        """Whether the log already shows ``event`` (or, for a draft, as much as it says)."""
        if event.turn_id != self.turn_id or not self.turn_id:
            return False
        if isinstance(event, ToolCallEvent):
            return event.round in self.tool_calls
        if isinstance(event, ToolResultEvent):
            return event.round in self.tool_results
        if isinstance(event, HandoffEvent):
            return self.handoff
        if isinstance(event, DraftEvent):
            return event.round < self.last_round or event.step <= self.drafts.get(event.round, -1)
        return False


def ends_search(turn_id: str, event: Event) -> bool:
    """Whether nothing of ``turn_id`` can precede ``event`` in the log (read newest first):
    the turn's own echo, which the gateway appends before it queues the turn."""
    return event.turn_id == turn_id and isinstance(event, UserMessageEvent)
