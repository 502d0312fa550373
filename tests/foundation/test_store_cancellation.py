"""A store call cancelled at any of its database operations leaves no transaction open.

A worker cancels a turn's task when it finds the turn taken over; the cancellation may land
anywhere in ``Repository.store_reply`` (or the other writes of a turn), e.g. while the
INSERT that loses to another delivery's row is in flight. On a real SQLite file and a real
PostgreSQL database, each test cancels the call at its 1st, 2nd, ... database operation
(every statement, commit, rollback and connection checkout, seen through SQLAlchemy's
events) until a run finishes uncancelled, and after each run checks, with the garbage
collector off (it would close a leaked connection and hide the leak), that another writer
gets the database at once and that no session is left in a transaction.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from assistant.store.repository import Repository
from assistant.store.tables import Channel, ToolCallStatus

Call = Callable[[], Awaitable[Any]]


@pytest.fixture(autouse=True)
def no_garbage_collector() -> Iterator[None]:
    """A leaked connection lives in a reference cycle: only a collection would close it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class CancelAtOperation:
    """Cancels ``task`` when the engine starts its ``at``-th database operation.

    The cancellation reaches the task at its next await: the operation in flight.
    """

    def __init__(self, store: Repository) -> None:
        self.engine = store.engine.sync_engine
        self.at = 0
        self.count = 0
        self.task: asyncio.Task[Any] | None = None
        for name in ("before_cursor_execute", "commit", "rollback"):
            event.listen(self.engine, name, self._operation)
        event.listen(self.engine.pool, "checkout", self._operation)

    def remove(self) -> None:
        for name in ("before_cursor_execute", "commit", "rollback"):
            event.remove(self.engine, name, self._operation)
        event.remove(self.engine.pool, "checkout", self._operation)

    def _operation(self, *_args: Any, **_kwargs: Any) -> None:
        self.count += 1
        if self.count == self.at and self.task is not None:
            self.task.cancel()

    async def run(self, call: Call, at: int) -> bool:
        """Run ``call`` with a cancel at operation ``at``; True when it was cancelled."""
        self.at, self.count = at, 0
        self.task = asyncio.ensure_future(call())
        try:
            await self.task
        except asyncio.CancelledError:
            return True
        finally:
            self.task = None
        return False


async def assert_no_transaction_open(store: Repository) -> None:
    url = store.engine.url
    pool: Any = store.engine.pool
    assert pool.checkedout() == 0, "a connection was not returned"
    if url.get_backend_name() == "sqlite":
        # Another process's writer: it must get the write lock at once, not after 30 s.
        assert url.database is not None
        writer = sqlite3.connect(url.database, timeout=0.5)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            pytest.fail(f"the SQLite write lock was left taken: {exc}")
        finally:
            writer.close()
        return
    import asyncpg

    plain = make_url(url.render_as_string(hide_password=False)).set(drivername="postgresql")
    conn = await asyncpg.connect(plain.render_as_string(hide_password=False), timeout=5)
    try:
        # Another session's cancelled call may finish a moment after ours returned.
        for _ in range(20):
            open_ = await conn.fetch(
                "SELECT pid, state, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state LIKE 'idle in transaction%'"
            )
            if not open_:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"sessions left in a transaction: {[dict(r) for r in open_]}")
    finally:
        await conn.close()


async def cancel_everywhere(store: Repository, call: Call, *, limit: int = 60) -> int:
    """Cancel ``call`` at each of its operations in turn; return how many there were."""
    hook = CancelAtOperation(store)
    try:
        for at in range(1, limit + 1):
            cancelled = await hook.run(call, at)
            await assert_no_transaction_open(store)
            if hook.count < at:  # the call ended before its ``at``-th operation
                assert not cancelled
                return at - 1
        pytest.fail(f"more than {limit} database operations")
    finally:
        hook.remove()


async def _conversation(store: Repository) -> str:
    tenant = await store.create_tenant("shop")
    return (await store.create_conversation(tenant.id, Channel.WIDGET)).id


async def test_cancelled_store_reply_on_the_conflict_path(store: Repository) -> None:
    """Another delivery stored the reply: the INSERT fails on uq_messages_turn_role, then
    rolls back; a cancel at any step leaves the database free for other writers."""
    conversation_id = await _conversation(store)
    first, created = await store.store_reply(conversation_id, "turn-1", "first")
    assert created

    async def second() -> None:
        message, created = await store.store_reply(conversation_id, "turn-1", "second")
        assert (message.id, created) == (first.id, False)

    assert await cancel_everywhere(store, second) >= 4
    # The database still takes writes from this store as well.
    assert (await store.store_reply(conversation_id, "turn-2", "next"))[1]


async def test_cancelled_first_store_reply(store: Repository) -> None:
    """The first store of a reply (insert, then the conversation's touch), cancelled anywhere:
    either stored once or not at all, and nothing left open."""
    conversation_id = await _conversation(store)
    turn = 0

    async def store_new() -> None:
        nonlocal turn
        turn += 1
        await store.store_reply(conversation_id, f"turn-{turn}", "text")

    assert await cancel_everywhere(store, store_new) >= 4


async def test_cancelled_tool_call_writes(store: Repository) -> None:
    """A turn's tool-call rows: started once per (turn, round) and finished, under cancels."""
    conversation_id = await _conversation(store)
    call, _ = await store.start_tool_call(conversation_id, "turn-1", 0, "search_kb", {"q": "x"})

    async def again() -> None:
        await store.start_tool_call(conversation_id, "turn-1", 0, "search_kb", {"q": "x"})
        await store.finish_tool_call(call.id, ToolCallStatus.OK, result={"hits": []})

    assert await cancel_everywhere(store, again) >= 4


async def test_cancelled_user_message_retry(store: Repository) -> None:
    """The gateway's idempotent insert of a retried user message, under cancels."""
    conversation_id = await _conversation(store)
    await store.add_user_message(conversation_id, "hello", "client-1", "turn-1")

    async def retry() -> None:
        _message, created = await store.add_user_message(
            conversation_id, "hello", "client-1", "turn-1"
        )
        assert not created

    assert await cancel_everywhere(store, retry) >= 4
