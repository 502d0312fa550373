"""The repository layer on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest

from assistant.core.errors import UserError
from assistant.store.repository import NotFound, Repository
from assistant.store.tables import Channel, KeyKind, MessageStatus, Owner, Role, ToolCallStatus


async def _conversation(store: Repository) -> tuple[str, str]:
    tenant = await store.create_tenant("shop")
    conversation = await store.create_conversation(tenant.id, Channel.WIDGET)
    return tenant.id, conversation.id


async def test_tenant_names_are_unique(store: Repository) -> None:
    """Creating a tenant twice is a clear error."""
    await store.create_tenant("shop", ["https://shop.example"])
    with pytest.raises(UserError, match="already exists"):
        await store.create_tenant("shop")
    assert (await store.get_tenant("shop")).allowed_origins == ["https://shop.example"]
    with pytest.raises(NotFound):
        await store.get_tenant("nobody")


async def test_keys_are_stored_hashed_and_revocable(store: Repository) -> None:
    """A key authenticates until revoked, and its plain text is never stored."""
    tenant = await store.create_tenant("shop")
    row, plain = await store.create_key(tenant.id, KeyKind.PUBLIC)
    assert plain not in (row.key_hash, row.prefix) and plain.startswith(row.prefix)
    assert (await store.authenticate(plain)) is not None
    assert await store.authenticate(plain[:-1] + ("x" if plain[-1] != "x" else "y")) is None
    assert await store.authenticate("garbage") is None
    await store.revoke_key(row.prefix)
    assert await store.authenticate(plain) is None


async def test_operator_gets_operator_key(store: Repository) -> None:
    """Creating an operator returns a key that authenticates as that operator."""
    tenant = await store.create_tenant("shop")
    operator, plain = await store.create_operator(tenant.id, "Ann", "ann@shop.example")
    key = await store.authenticate(plain)
    assert key is not None and key.kind is KeyKind.OPERATOR and key.operator_id == operator.id
    with pytest.raises(UserError):
        await store.create_operator(tenant.id, "Ann again", "ann@shop.example")


async def test_conversation_is_tenant_scoped(store: Repository) -> None:
    """Another tenant cannot see a conversation."""
    tenant_id, conversation_id = await _conversation(store)
    other = await store.create_tenant("other")
    assert await store.get_conversation(conversation_id, tenant_id) is not None
    assert await store.get_conversation(conversation_id, other.id) is None
    assert [c.id for c in await store.list_conversations(tenant_id)] == [conversation_id]
    assert await store.list_conversations(other.id) == []


async def test_owner_changes(store: Repository) -> None:
    """Take over sets the operator; handing back clears it."""
    tenant_id, conversation_id = await _conversation(store)
    operator, _ = await store.create_operator(tenant_id, "Ann", "ann@shop.example")
    taken = await store.set_owner(conversation_id, Owner.HUMAN, operator.id)
    assert taken.owner is Owner.HUMAN and taken.operator_id == operator.id
    back = await store.set_owner(conversation_id, Owner.BOT)
    assert back.owner is Owner.BOT and back.operator_id is None
    assert await store.list_conversations(tenant_id, owner=Owner.HUMAN) == []


async def test_user_message_retry_is_not_stored_twice(store: Repository) -> None:
    """The same client message id stores one message."""
    _tenant_id, conversation_id = await _conversation(store)
    first, created = await store.add_user_message(conversation_id, "hi", "c1", "t1")
    again, created_again = await store.add_user_message(conversation_id, "hi", "c1", "t1")
    assert created and not created_again and again.id == first.id
    assert await store.count_messages(conversation_id, Role.USER) == 1


async def test_reply_is_stored_once_per_turn(store: Repository) -> None:
    """A second store of the same turn returns the first row."""
    _tenant_id, conversation_id = await _conversation(store)
    first, created = await store.store_reply(conversation_id, "t1", "Hello!", stats={"steps": 3})
    second, created_again = await store.store_reply(conversation_id, "t1", "Different")
    assert created and not created_again
    assert second.id == first.id and second.text == "Hello!" and second.stats == {"steps": 3}


async def test_concurrent_replies_store_one_row(store: Repository) -> None:
    """Many concurrent stores of one turn leave exactly one message."""
    _tenant_id, conversation_id = await _conversation(store)
    results = await asyncio.gather(
        *(store.store_reply(conversation_id, "turn-x", f"reply {i}") for i in range(8))
    )
    assert len({message.id for message, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await store.count_messages(conversation_id, Role.ASSISTANT) == 1


async def test_cancelled_reply_keeps_status(store: Repository) -> None:
    """A cancelled reply is stored with its status."""
    _tenant_id, conversation_id = await _conversation(store)
    message, _ = await store.store_reply(
        conversation_id, "t1", "partial", status=MessageStatus.CANCELLED
    )
    assert (await store.get_message(message.id)).status is MessageStatus.CANCELLED  # type: ignore[union-attr]


async def test_history_is_in_order(store: Repository) -> None:
    """History returns the last messages, oldest first."""
    _tenant_id, conversation_id = await _conversation(store)
    for i in range(5):
        await store.add_user_message(conversation_id, f"q{i}", f"c{i}", f"t{i}")
        await store.store_reply(conversation_id, f"t{i}", f"a{i}")
    texts = [m.text for m in await store.history(conversation_id, limit=4)]
    assert texts == ["q3", "a3", "q4", "a4"]


async def test_tool_calls_are_recorded_once_per_round(store: Repository) -> None:
    """A redelivered turn does not duplicate its tool-call rows."""
    _tenant_id, conversation_id = await _conversation(store)
    call, created = await store.start_tool_call(
        conversation_id, "t1", 0, "lookup_order", {"order_id": "A1"}
    )
    again, created_again = await store.start_tool_call(
        conversation_id, "t1", 0, "lookup_order", {"order_id": "A1"}
    )
    assert created and not created_again and again.id == call.id
    await store.finish_tool_call(call.id, ToolCallStatus.OK, result={"status": "shipped"})
    failed, _ = await store.start_tool_call(conversation_id, "t1", 1, "search_kb", {"q": "x"})
    await store.finish_tool_call(failed.id, ToolCallStatus.TIMEOUT, error="took over 5 s")
    calls = await store.tool_calls("t1")
    assert [(c.round, c.status, c.result, c.error) for c in calls] == [
        (0, ToolCallStatus.OK, {"status": "shipped"}, None),
        (1, ToolCallStatus.TIMEOUT, None, "took over 5 s"),
    ]
    assert all(c.finished_at is not None for c in calls)


async def test_feedback_replaces_earlier_rating(store: Repository) -> None:
    """Rating a reply again replaces the rating; bad ratings are refused."""
    _tenant_id, conversation_id = await _conversation(store)
    reply, _ = await store.store_reply(conversation_id, "t1", "Hello!")
    await store.rate(reply.id, 1)
    feedback = await store.rate(reply.id, -1, "wrong order")
    assert (feedback.rating, feedback.comment) == (-1, "wrong order")
    with pytest.raises(UserError):
        await store.rate(reply.id, 5)
    question, _ = await store.add_user_message(conversation_id, "q", "c1", "t2")
    with pytest.raises(NotFound):
        await store.rate(question.id, 1)
