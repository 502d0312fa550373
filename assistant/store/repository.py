"""Async repository: the persistence operations the gateway, worker and CLI need.

Every write that a retried or redelivered request can repeat is idempotent: the unique
constraint decides, and the loser of a race reads the winner's row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from assistant.core.errors import UserError
from assistant.store.api_keys import generate_key, hash_key, prefix_of, same_hash
from assistant.store.database import completing, session_factory
from assistant.store.tables import (
    ApiKey,
    Channel,
    Conversation,
    Feedback,
    KeyKind,
    Message,
    MessageStatus,
    Operator,
    Owner,
    Role,
    Tenant,
    ToolCall,
    ToolCallStatus,
    utcnow,
)

T = TypeVar("T")


class NotFound(UserError):
    """The named tenant, key, conversation or message does not exist."""


@completing
class Repository:
    """Tenants, keys, operators, conversations, messages, tool calls and feedback in SQL, one
    short transaction per call (the shop's records are `assistant.store.shop.SqlShop`'s).

    Every public call runs to completion even when its caller is cancelled (a worker that
    finds its turn taken over cancels the turn's task): its transaction is committed or
    rolled back and its connection returned before the cancellation is raised, so a
    cancelled call never leaves a transaction open (``database.run_to_completion``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def _insert_or_get(
        self, row: T, existing: Callable[[AsyncSession], Awaitable[T | None]]
    ) -> tuple[T, bool]:
        """Insert ``row``; if a unique constraint says it exists, return the stored one."""
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
                return row, True
            except IntegrityError as exc:
                await session.rollback()
                conflict = exc
        async with self._sessions() as session:
            stored = await existing(session)
        if stored is None:  # the conflict was on something else: a real error
            raise conflict
        return stored, False

    # Tenants, operators and keys ------------------------------------------------------

    async def create_tenant(self, name: str, allowed_origins: Sequence[str] = ()) -> Tenant:
        tenant = Tenant(name=name, allowed_origins=list(allowed_origins))
        async with self._sessions() as session:
            session.add(tenant)
            try:
                await session.commit()
            except IntegrityError:
                raise UserError(f"tenant {name!r} already exists") from None
        return tenant

    async def get_tenant(self, name_or_id: str) -> Tenant:
        async with self._sessions() as session:
            tenant = await session.scalar(
                select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id))
            )
        if tenant is None:
            raise NotFound(f"no tenant named {name_or_id!r} (create it: assistant tenants create)")
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        async with self._sessions() as session:
            return list(await session.scalars(select(Tenant).order_by(Tenant.name)))

    async def create_key(
        self,
        tenant_id: str,
        kind: KeyKind,
        label: str = "",
        operator_id: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key's hash; return the row and the plain key (shown once)."""
        new = generate_key(kind)
        row = ApiKey(
            tenant_id=tenant_id,
            operator_id=operator_id,
            kind=kind,
            prefix=new.prefix,
            key_hash=new.key_hash,
            label=label,
        )
        async with self._sessions() as session:
            session.add(row)
            await session.commit()
        return row, new.plain

    async def authenticate(self, plain_key: str) -> ApiKey | None:
        """The live key row for a plain key, or None (unknown, malformed or revoked)."""
        prefix = prefix_of(plain_key)
        if not prefix:
            return None
        async with self._sessions() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if row is None or row.revoked_at is not None:
            return None
        return row if same_hash(row.key_hash, hash_key(plain_key)) else None

    async def revoke_key(self, prefix: str) -> ApiKey:
        async with self._sessions() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if row is None:
                raise NotFound(f"no key with prefix {prefix!r} (list them: assistant keys list)")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                await session.commit()
        return row

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        async with self._sessions() as session:
            return list(
                await session.scalars(
                    select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id)
                )
            )

    async def create_operator(self, tenant_id: str, name: str, email: str) -> tuple[Operator, str]:
        """Create an operator and their console key; return both (the key shown once)."""
        operator = Operator(tenant_id=tenant_id, name=name, email=email)
        async with self._sessions() as session:
            session.add(operator)
            try:
                await session.commit()
            except IntegrityError:
                raise UserError(f"an operator with email {email!r} already exists") from None
        _key, plain = await self.create_key(
            tenant_id, KeyKind.OPERATOR, label=email, operator_id=operator.id
        )
        return operator, plain

    async def get_operator(self, operator_id: int) -> Operator | None:
        async with self._sessions() as session:
            return await session.get(Operator, operator_id)

    # Conversations --------------------------------------------------------------------

    async def create_conversation(self, tenant_id: str, channel: Channel) -> Conversation:
        conversation = Conversation(tenant_id=tenant_id, channel=channel)
        async with self._sessions() as session:
            session.add(conversation)
            await session.commit()
        return conversation

    async def get_conversation(
        self, conversation_id: str, tenant_id: str | None = None
    ) -> Conversation | None:
        """The conversation, or None if it does not exist or belongs to another tenant."""
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
        if conversation is None or (tenant_id is not None and conversation.tenant_id != tenant_id):
            return None
        return conversation

    async def set_owner(
        self, conversation_id: str, owner: Owner, operator_id: int | None = None
    ) -> Conversation:
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                raise NotFound(f"no conversation {conversation_id!r}")
            conversation.owner = owner
            conversation.operator_id = operator_id if owner is Owner.HUMAN else None
            await session.commit()
        return conversation

    async def list_conversations(
        self, tenant_id: str, limit: int = 50, owner: Owner | None = None
    ) -> list[Conversation]:
        query = select(Conversation).where(Conversation.tenant_id == tenant_id)
        if owner is not None:
            query = query.where(Conversation.owner == owner)
        query = query.order_by(Conversation.updated_at.desc()).limit(limit)
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def _touch(self, session: AsyncSession, conversation_id: str) -> None:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(updated_at=utcnow())
        )

    # Messages -------------------------------------------------------------------------

    async def add_user_message(
        self, conversation_id: str, text: str, client_id: str, turn_id: str
    ) -> tuple[Message, bool]:
        """Store a user message once per client id; return (message, created)."""
        row = Message(
            conversation_id=conversation_id,
            role=Role.USER,
            text=text,
            client_id=client_id,
            turn_id=turn_id,
        )

        async def existing(session: AsyncSession) -> Message | None:
            return await session.scalar(
                select(Message).where(
                    Message.conversation_id == conversation_id, Message.client_id == client_id
                )
            )

        message, created = await self._insert_or_get(row, existing)
        if created:
            async with self._sessions() as session:
                await self._touch(session, conversation_id)
                await session.commit()
        return message, created

    async def store_reply(
        self,
        conversation_id: str,
        turn_id: str,
        text: str,
        status: MessageStatus = MessageStatus.COMPLETE,
        stats: dict[str, Any] | None = None,
    ) -> tuple[Message, bool]:
        """Store the assistant reply of a turn exactly once; return (message, created).

        A second call for the same turn, even a concurrent one, returns the first row.
        """
        row = Message(
            conversation_id=conversation_id,
            role=Role.ASSISTANT,
            text=text,
            turn_id=turn_id,
            status=status,
            stats=stats,
        )

        async def existing(session: AsyncSession) -> Message | None:
            return await session.scalar(
                select(Message).where(Message.turn_id == turn_id, Message.role == Role.ASSISTANT)
            )

        message, created = await self._insert_or_get(row, existing)
        if created:
            async with self._sessions() as session:
                await self._touch(session, conversation_id)
                await session.commit()
        return message, created

    async def add_system_message(self, conversation_id: str, text: str) -> Message:
        """A system note in the conversation (a tutoring exercise, as the corpus writes it)."""
        row = Message(conversation_id=conversation_id, role=Role.SYSTEM, text=text)
        async with self._sessions() as session:
            session.add(row)
            await self._touch(session, conversation_id)
            await session.commit()
        return row

    async def add_system_message_once(
        self, conversation_id: str, text: str, turn_id: str
    ) -> tuple[Message, bool]:
        """A system note made for a turn (an exercise a typed message asked for), stored once
        per turn however often its message is retried; return (message, created)."""
        row = Message(conversation_id=conversation_id, role=Role.SYSTEM, text=text, turn_id=turn_id)

        async def existing(session: AsyncSession) -> Message | None:
            return await self._system_message_for_turn(session, turn_id)

        message, created = await self._insert_or_get(row, existing)
        if created:
            async with self._sessions() as session:
                await self._touch(session, conversation_id)
                await session.commit()
        return message, created

    async def system_message_for_turn(self, turn_id: str) -> Message | None:
        """The system note stored for a turn by ``add_system_message_once``, if any."""
        async with self._sessions() as session:
            return await self._system_message_for_turn(session, turn_id)

    async def _system_message_for_turn(self, session: AsyncSession, turn_id: str) -> Message | None:
        found: Message | None = await session.scalar(
            select(Message).where(Message.turn_id == turn_id, Message.role == Role.SYSTEM)
        )
        return found

    async def reply_for_turn(self, turn_id: str) -> Message | None:
        """The stored assistant reply of a turn, if it has one."""
        async with self._sessions() as session:
            reply: Message | None = await session.scalar(
                select(Message).where(Message.turn_id == turn_id, Message.role == Role.ASSISTANT)
            )
        return reply

    async def add_operator_message(
        self, conversation_id: str, operator_id: int, text: str, client_id: str | None = None
    ) -> tuple[Message, bool]:
        row = Message(
            conversation_id=conversation_id,
            role=Role.OPERATOR,
            text=text,
            operator_id=operator_id,
            client_id=client_id,
        )

        async def existing(session: AsyncSession) -> Message | None:
            if client_id is None:
                return None
            return await session.scalar(
                select(Message).where(
                    Message.conversation_id == conversation_id, Message.client_id == client_id
                )
            )

        message, created = await self._insert_or_get(row, existing)
        if created:
            async with self._sessions() as session:
                await self._touch(session, conversation_id)
                await session.commit()
        return message, created

    async def last_texts(self, conversation_ids: Sequence[str]) -> dict[str, str]:
        """The newest message's text of each conversation (one query), for the console's list."""
        if not conversation_ids:
            return {}
        newest = (
            select(Message.conversation_id, func.max(Message.created_at).label("at"))
            .where(Message.conversation_id.in_(list(conversation_ids)))
            .group_by(Message.conversation_id)
            .subquery()
        )
        query = select(Message.conversation_id, Message.text).join(
            newest,
            (Message.conversation_id == newest.c.conversation_id)
            & (Message.created_at == newest.c.at),
        )
        async with self._sessions() as session:
            return {cid: text for cid, text in (await session.execute(query)).all()}

    async def history(self, conversation_id: str, limit: int = 100) -> list[Message]:
        """The last ``limit`` messages, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(limit)
            )
            return list(reversed(list(rows)))

    async def get_message(self, message_id: str) -> Message | None:
        async with self._sessions() as session:
            return await session.get(Message, message_id)

    async def count_messages(self, conversation_id: str, role: Role | None = None) -> int:
        query = (
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == conversation_id)
        )
        if role is not None:
            query = query.where(Message.role == role)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    # Tool calls -----------------------------------------------------------------------

    async def start_tool_call(
        self,
        conversation_id: str,
        turn_id: str,
        round_: int,
        name: str,
        arguments: dict[str, Any],
    ) -> tuple[ToolCall, bool]:
        """Record that round ``round_`` of a turn calls a tool; once per (turn, round)."""
        row = ToolCall(
            conversation_id=conversation_id,
            turn_id=turn_id,
            round=round_,
            name=name,
            arguments=arguments,
        )

        async def existing(session: AsyncSession) -> ToolCall | None:
            return await session.scalar(
                select(ToolCall).where(ToolCall.turn_id == turn_id, ToolCall.round == round_)
            )

        return await self._insert_or_get(row, existing)

    async def finish_tool_call(
        self,
        call_id: str,
        status: ToolCallStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        finished_at: datetime | None = None,
    ) -> ToolCall:
        async with self._sessions() as session:
            call = await session.get(ToolCall, call_id)
            if call is None:
                raise NotFound(f"no tool call {call_id!r}")
            call.status = status
            call.result = result
            call.error = error
            call.finished_at = finished_at or utcnow()
            await session.commit()
        return call

    async def conversation_tool_calls(
        self, conversation_id: str, limit: int = 200
    ) -> list[ToolCall]:
        """The conversation's last ``limit`` tool calls, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ToolCall)
                .where(ToolCall.conversation_id == conversation_id)
                .order_by(ToolCall.started_at.desc(), ToolCall.round.desc())
                .limit(limit)
            )
            return list(reversed(list(rows)))

    async def tool_calls(self, turn_id: str) -> list[ToolCall]:
        async with self._sessions() as session:
            return list(
                await session.scalars(
                    select(ToolCall).where(ToolCall.turn_id == turn_id).order_by(ToolCall.round)
                )
            )

    # Feedback -------------------------------------------------------------------------

    async def rate(self, message_id: str, rating: int, comment: str = "") -> Feedback:
        """Rate a reply (+1 or -1); rating it again replaces the earlier rating."""
        if rating not in (1, -1):
            raise UserError(f"rating must be 1 or -1, got {rating!r}")
        async with self._sessions() as session:
            message = await session.get(Message, message_id)
            if message is None or message.role is not Role.ASSISTANT:
                raise NotFound(f"no assistant reply {message_id!r} to rate")
            feedback = await session.scalar(
                select(Feedback).where(Feedback.message_id == message_id)
            )
            if feedback is None:
                feedback = Feedback(message_id=message_id, conversation_id=message.conversation_id)
                session.add(feedback)
            feedback.rating = rating
            feedback.comment = comment
            try:
                await session.commit()
            except IntegrityError:  # a concurrent first rating won; apply ours over it
                await session.rollback()
                return await self.rate(message_id, rating, comment)
        return feedback
