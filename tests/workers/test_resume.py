"""What a turn's event log already holds, and a runner that never repeats a tool that writes."""

from __future__ import annotations

from typing import Any

from assistant.bus.schema import (
    DraftEvent,
    FinalEvent,
    HandoffEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from assistant.demo.shop import build_shop
from assistant.store.tables import ToolCallStatus
from assistant.tools.base import ToolContext
from assistant.tools.registry import TOOLS
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from workers.history import StoredToolCall
from workers.resume import Published, ends_search
from workers.turns import INTERRUPTED, ReplayingRunner

C, T = "c1", "t1"


def draft(step: int, round_: int = 0, turn: str = T) -> DraftEvent:
    return DraftEvent(conversation_id=C, turn_id=turn, text="…", step=step, round=round_)


def tool_call(round_: int, turn: str = T) -> ToolCallEvent:
    return ToolCallEvent(conversation_id=C, turn_id=turn, name="search_kb", round=round_)


def tool_result(round_: int) -> ToolResultEvent:
    return ToolResultEvent(
        conversation_id=C, turn_id=T, name="search_kb", status="ok", round=round_
    )


def final(turn: str = T) -> FinalEvent:
    return FinalEvent(conversation_id=C, turn_id=turn, message_id="m", text="hi")


def test_what_an_earlier_delivery_published_is_held() -> None:
    published = Published.of(
        T, [draft(3), tool_call(0), tool_result(0), draft(2, round_=1), tool_call(0, turn="t0")]
    )
    assert published.holds(tool_call(0)) and published.holds(tool_result(0))
    assert not published.holds(tool_call(1)) and not published.holds(tool_result(1))
    # Drafts: up to the step already shown of their round, and any of a finished round.
    assert published.holds(draft(2, round_=1)) and not published.holds(draft(3, round_=1))
    assert published.holds(draft(9, round_=0))
    assert not published.holds(HandoffEvent(conversation_id=C, turn_id=T, owner="human"))
    assert not published.holds(final())  # the event log itself keeps one final per turn
    assert not published.holds(tool_call(0, turn="t2"))  # another turn's event


def test_a_first_delivery_holds_nothing() -> None:
    published = Published.of(T, [draft(5, turn="t0"), final("t0")])
    assert published.empty
    assert not published.holds(draft(1)) and not published.holds(tool_call(0))


def test_the_search_ends_at_the_turns_own_echo() -> None:
    echo = UserMessageEvent(conversation_id=C, turn_id=T, message_id="m", client_id="x", text="q")
    assert ends_search(T, echo)
    assert not ends_search(T, draft(1)) and not ends_search("t2", echo)


class CountingShop(MemoryShop):
    def __init__(self) -> None:
        super().__init__(build_shop())
        self.ticket_calls = 0
        self.article_calls = 0

    async def open_ticket(self, *args: Any) -> str:
        self.ticket_calls += 1
        return await super().open_ticket(*args)

    async def article(self, tenant_id: str, topic: str) -> Any:
        self.article_calls += 1
        return await super().article(tenant_id, topic)


def running_row(name: str, arguments: dict[str, Any], round_: int = 0) -> StoredToolCall:
    return StoredToolCall(T, round_, name, arguments, str(ToolCallStatus.RUNNING))


def test_only_read_only_tools_are_flagged() -> None:
    assert {n for n, tool in TOOLS.items() if tool.read_only} == {
        "lookup_order",
        "search_kb",
        "check_answer",
    }


async def test_a_call_an_earlier_delivery_left_running_is_repeated_only_when_read_only() -> None:
    shop = CountingShop()
    runner = ReplayingRunner(ToolRunner(shop))
    context = ToolContext("t", C)
    ticket = {"category": "damaged"}
    runner.stored = running_row("create_ticket", ticket)
    outcome = await runner.run(context, "create_ticket", ticket)
    assert outcome.status == "error" and outcome.error == INTERRUPTED and shop.ticket_calls == 0
    runner.stored = running_row("search_kb", {"topic": "returns"})
    outcome = await runner.run(context, "search_kb", {"topic": "returns"})
    assert outcome.status == "ok" and shop.article_calls == 1


async def test_a_call_this_process_recorded_but_never_started_does_run() -> None:
    """The same delivery run again (after a Redis outage) knows the tool never started."""
    shop = CountingShop()
    runner = ReplayingRunner(ToolRunner(shop))
    runner.rows_created.add(0)
    ticket = {"category": "damaged"}
    runner.stored = running_row("create_ticket", ticket)
    outcome = await runner.run(ToolContext("t", C), "create_ticket", ticket)
    assert outcome.status == "ok" and shop.ticket_calls == 1
    # Started here and left running: not again.
    runner.stored = running_row("create_ticket", ticket)
    outcome = await runner.run(ToolContext("t", C), "create_ticket", ticket)
    assert outcome.error == INTERRUPTED and shop.ticket_calls == 1
