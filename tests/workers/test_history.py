"""Rebuilding a turn's history from stored messages and tool calls (pure, plus the SQL loader)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from assistant.agent.prompting import HistoryItem
from assistant.store import migrate
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import Channel, MessageStatus, ToolCallStatus
from workers.history import (
    HistoryError,
    HistoryLoader,
    StoredMessage,
    StoredToolCall,
    build_history,
)


@pytest.fixture
def migrated_url(sqlite_url: str) -> str:
    migrate.upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
async def sqlite_store(migrated_url: str) -> AsyncIterator[Repository]:
    store = Repository(create_engine(migrated_url))
    yield store
    await store.close()


def call(turn: str, round_: int, name: str = "search_kb", **kw: object) -> StoredToolCall:
    fields: dict[str, object] = {
        "arguments": {"topic": "returns"},
        "status": "ok",
        "result": {"found": True, "round": round_},
    }
    fields.update(kw)
    return StoredToolCall(turn_id=turn, round=round_, name=name, **fields)  # type: ignore[arg-type]


MESSAGES = [
    StoredMessage("user", "hi", "t1"),
    StoredMessage("assistant", "hello", "t1"),
    StoredMessage("user", "returns?", "t2"),
    StoredMessage("assistant", "30 days", "t2"),
    StoredMessage("operator", "anything else?"),
    StoredMessage("user", "and refunds?", "t3"),
    StoredMessage("assistant", "a reply stored by an earlier delivery", "t3"),
    StoredMessage("user", "later message", "t4"),
]


def test_earlier_tool_calls_sit_between_user_message_and_reply() -> None:
    """Each earlier turn's calls, by round, follow its user message and precede its reply."""
    calls = [call("t2", 1), call("t2", 0)]
    history = build_history(MESSAGES, calls, "t3")
    assert [(h.role, h.text) for h in history] == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "returns?"),
        ("tool_call", ""),
        ("tool_result", ""),
        ("tool_call", ""),
        ("tool_result", ""),
        ("assistant", "30 days"),
        ("operator", "anything else?"),
        ("user", "and refunds?"),
    ]
    assert [h.payload.get("round") for h in history if h.role == "tool_result"] == [0, 1]
    assert history[3] == HistoryItem("tool_call", tool="search_kb", payload={"topic": "returns"})


def test_stops_at_the_turns_user_message_without_its_own_calls() -> None:
    """Later messages and the turn's own tool calls (the loop redoes them) are left out."""
    history = build_history(MESSAGES, [call("t3", 0)], "t3")
    assert history[-1] == HistoryItem("user", "and refunds?")
    assert all(h.role != "tool_call" for h in history)
    assert build_history(MESSAGES, [], "t1") == [HistoryItem("user", "hi")]


def test_failed_and_unfinished_calls() -> None:
    """A failed call shows the model an error; a call that never finished is skipped."""
    calls = [
        call("t2", 0, status="timeout", result=None, error="took over 5 s"),
        call("t2", 1, status="running", result=None),
    ]
    history = build_history(MESSAGES, calls, "t3")
    results = [h for h in history if h.role == "tool_result"]
    assert [r.payload for r in results] == [{"error": "timeout", "message": "took over 5 s"}]
    assert sum(h.role == "tool_call" for h in history) == 1


def test_empty_cancelled_reply_is_skipped() -> None:
    """A reply cancelled before it said anything does not reach the prompt."""
    messages = [
        StoredMessage("user", "a", "t1"),
        StoredMessage("assistant", "", "t1", status="cancelled"),
        StoredMessage("user", "b", "t2"),
    ]
    assert [h.text for h in build_history(messages, [], "t2")] == ["a", "b"]


def test_missing_user_message_is_an_error() -> None:
    """A turn whose user message is not stored cannot be answered."""
    with pytest.raises(HistoryError, match="t9"):
        build_history(MESSAGES, [], "t9")


async def test_loader_reads_sql_in_order(sqlite_store: Repository) -> None:
    """The loader rebuilds the same history from real rows."""
    store = sqlite_store
    tenant = await store.create_tenant("shop")
    conversation = await store.create_conversation(tenant.id, Channel.WIDGET)
    cid = conversation.id
    await store.add_user_message(cid, "returns?", "m1", "t1")
    row, _ = await store.start_tool_call(cid, "t1", 0, "search_kb", {"topic": "returns"})
    await store.finish_tool_call(row.id, ToolCallStatus.OK, {"found": True})
    await store.store_reply(cid, "t1", "30 days", MessageStatus.COMPLETE)
    await store.add_user_message(cid, "thanks", "m2", "t2")
    await store.start_tool_call(cid, "t2", 0, "search_kb", {"topic": "x"})
    history = await HistoryLoader(store.engine).load(cid, "t2")
    assert [h.role for h in history] == ["user", "tool_call", "tool_result", "assistant", "user"]
    assert history[2].payload == {"found": True}
    loader = HistoryLoader(store.engine)
    reply = await loader.reply("t1")
    assert reply is not None and reply.text == "30 days"
    assert await loader.reply("t2") is None
