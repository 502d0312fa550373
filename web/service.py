"""What the gateway does with a valid frame: SQL writes, bus events, turns. No sockets here.

Every method works on one tenant's data, named by the caller's identity: a conversation id
from a frame is always looked up together with the tenant, so one tenant's key never reads
or writes another tenant's conversations. Refusals are ``ProtocolError``s with their code.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog

from assistant.bus.activity import ActivityLog
from assistant.bus.connection import SOCKET_TIMEOUT_S, is_sentinel_url
from assistant.bus.fanout import EventFanout
from assistant.bus.keys import Keys
from assistant.bus.ratelimit import Bucket, RateLimiter
from assistant.bus.replication import NotReplicated, ReplicaAcks
from assistant.bus.schema import (
    ExerciseEvent,
    HandoffEvent,
    OperatorMessageEvent,
    TurnRequest,
    UserMessageEvent,
)
from assistant.bus.streams import (
    Busy,
    Cancellation,
    EventLog,
    InFlight,
    TurnInFlight,
    TurnQueue,
    note_activity,
)
from assistant.core.config import (
    IPNetwork,
    Settings,
    parse_networks,
    parse_rate,
    parse_replica_acks,
)
from assistant.core.errors import UserError
from assistant.core.log import bind_turn
from assistant.store.repository import NotFound, Repository
from assistant.store.tables import Channel as DbChannel
from assistant.store.tables import Conversation, KeyKind, Message, Owner, Role
from assistant.tutoring.exercises import next_exercise
from assistant.tutoring.requests import EXERCISE_PREFIX, asks_for_next_exercise, exercise_kind
from web import auth
from web.protocol import (
    HISTORY_LIMIT,
    Channel,
    ErrorCode,
    Feedback,
    Hello,
    OperatorMessage,
    ProtocolError,
    UserMessage,
    history_frame,
)
from web.unconfirmed import Unconfirmed
from web.views import conversation_view, message_view, tool_call_view

log = structlog.get_logger(__name__)

# How far back a retried message's own event is looked for in the event log.
_RETRY_LOOKBACK = 200
# How old an unanswered message may be for a hello to queue its lost turn again.
_REQUEUE_WITHIN = timedelta(hours=1)


IP_BUCKET = Bucket(rate=20, burst=60)
KEY_BUCKET = Bucket(rate=200, burst=600)


@dataclass(frozen=True)
class GatewayOptions:
    """Limits and timings of a gateway; the defaults suit production, tests shorten them."""

    hello_timeout_s: float = 10.0
    # Every frame from one address, and every frame with one key (a public key is shared by
    # all visitors of a store, hence its larger bucket).
    ip_bucket: Bucket = IP_BUCKET
    key_bucket: Bucket = KEY_BUCKET
    # How long a new message waits for the reply it cancelled to stop before answering busy.
    cancel_wait_s: float = 5.0
    max_backlog: int = 256
    max_queued_frames: int = 1000
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    # How long one read of a conversation's events blocks; cut to half the Redis socket
    # timeout (see assistant.bus.connection.bounded_block_ms), and read again when it ends.
    follow_block_ms: int = 5000
    redis_socket_timeout_s: float = SOCKET_TIMEOUT_S
    # Load balancers whose X-Forwarded-For is believed (web/client_ip.py).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Replicas that must hold a message and its turn (assistant/bus/replication.py).
    replica_acks: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayOptions:
        """The production defaults with the deployment's rate limits and proxies."""
        return cls(
            ip_bucket=Bucket(*parse_rate(settings.rate_ip, "rate_ip")),
            key_bucket=Bucket(*parse_rate(settings.rate_key, "rate_key")),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            replica_acks=_replica_acks(settings),
        )


@dataclass(frozen=True)
class Identity:
    """Who a connection is, once ``hello`` succeeded."""

    tenant_id: str
    channel: Channel
    key_prefix: str
    operator_id: int | None = None
    operator_name: str = ""


@dataclass(frozen=True)
class Opened:
    """A widget or tutor conversation, opened by ``hello``."""

    conversation: Conversation
    token: str
    last_seq: int
    after: int  # relay events with seq > after
    messages: list[dict[str, Any]]


class Bus:
    """The Redis side of the gateway, one instance per process."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, options: GatewayOptions) -> None:
        self.redis = redis
        self.keys = keys
        self.events = EventLog(redis, keys=keys)
        self.in_flight = InFlight(redis, keys=keys)
        self.queue = TurnQueue(
            redis,
            keys=keys,
            max_backlog=options.max_backlog,
            in_flight=self.in_flight,
            replicas=ReplicaAcks(options.replica_acks),
        )
        self.cancellation = Cancellation(redis, keys=keys)
        self.activity = ActivityLog(redis, keys=keys)
        self.limiter = RateLimiter(redis, keys=keys)
        # A short block bounds how late a follower that joined during a read is served when
        # its wake-up (CLIENT UNBLOCK) overtook the read it was meant to end.
        self.fanout = EventFanout(self.events, redis, min(options.follow_block_ms, 1000))


def _replica_acks(settings: Settings) -> int:
    """The setting's number, or for "auto" one replica behind Sentinel (which has replicas
    to fail over to) and none otherwise."""
    acks = parse_replica_acks(settings.redis_replica_acks)
    return acks if acks is not None else int(is_sentinel_url(settings.redis_url))


def derive_turn_id(conversation_id: str, client_id: str) -> str:
    """The turn of a user message, fixed by its client id: a retry names the same turn."""
    return hashlib.sha256(f"{conversation_id}:{client_id}".encode()).hexdigest()[:32]


def _resume_point(resume_from: int | None, last_seq: int) -> int:
    # A resume point past the log's end means the log expired and restarted: start at its end.
    return last_seq if resume_from is None else min(resume_from, last_seq)


def _not_found(what: str, ref: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, f"no such {what}", ref=ref)


def _busy(retry_after: float, why: str, ref: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BUSY,
        f"{why}; your message is stored: send it again with the same id",
        ref=ref,
        retry_after=retry_after,
    )


def _user_message_event(message: Message, turn_id: str) -> UserMessageEvent:
    return UserMessageEvent(
        conversation_id=message.conversation_id,
        turn_id=turn_id,
        message_id=message.id,
        client_id=message.client_id or "",
        text=message.text,
    )


def _turn_request(conversation: Conversation, message: Message, turn_id: str) -> TurnRequest:
    return TurnRequest(
        turn_id=turn_id,
        conversation_id=conversation.id,
        tenant_id=conversation.tenant_id,
        channel=str(conversation.channel),
        user_message_id=message.id,
    )


class ConversationService:
    def __init__(self, store: Repository, bus: Bus, options: GatewayOptions, secret: bytes) -> None:
        self.store = store
        self.bus = bus
        self.options = options
        self.secret = secret
        self.unconfirmed = Unconfirmed()

    # authentication ------------------------------------------------------------------------

    async def authenticate(self, hello: Hello, origin: str | None) -> Identity:
        failed = ProtocolError(ErrorCode.AUTH_FAILED, "the key is not valid for this channel")
        row = await self.store.authenticate(hello.key)
        if row is None:
            raise failed
        if hello.channel is Channel.CONSOLE:
            if row.kind is not KeyKind.OPERATOR or row.operator_id is None:
                raise failed
            operator = await self.store.get_operator(row.operator_id)
            if operator is None or operator.tenant_id != row.tenant_id:
                raise failed
            return Identity(row.tenant_id, hello.channel, row.prefix, operator.id, operator.name)
        if row.kind is KeyKind.OPERATOR:
            raise failed
        if row.kind is KeyKind.PUBLIC:
            # Public keys live in pages, so the page's origin decides; secret keys are for
            # servers, which send no Origin.
            try:
                tenant = await self.store.get_tenant(row.tenant_id)
            except NotFound:
                raise failed from None
            if not auth.origin_allowed(tenant.allowed_origins, origin):
                raise ProtocolError(
                    ErrorCode.AUTH_FAILED, f"origin {origin!r} is not allowed for this key"
                )
        return Identity(row.tenant_id, hello.channel, row.prefix)

    async def open_conversation(self, who: Identity, hello: Hello) -> Opened:
        """The hello's conversation (checked against its token), or a new one."""
        if hello.conversation_id is not None:
            found = await self.store.get_conversation(hello.conversation_id, who.tenant_id)
            if found is None:
                raise _not_found("conversation")
            if not auth.token_matches(
                self.secret, who.tenant_id, found.id, hello.conversation_token
            ):
                raise ProtocolError(
                    ErrorCode.BAD_TOKEN, "the conversation token does not match the conversation"
                )
            conversation = found
        else:
            conversation = await self.store.create_conversation(
                who.tenant_id, DbChannel(who.channel.value)
            )
            await self.bus.activity.append(who.tenant_id, conversation.id, "created")
        # The seq first, then SQL: a message stored in between shows in both (clients key
        # messages by id), never in neither.
        last_seq = await self.bus.events.last_seq(conversation.id)
        messages = await self.store.history(conversation.id, HISTORY_LIMIT)
        if hello.conversation_id is not None and messages:
            await self._requeue_lost_turn(who, conversation, messages[-1])
        return Opened(
            conversation=conversation,
            token=auth.conversation_token(self.secret, who.tenant_id, conversation.id),
            last_seq=last_seq,
            after=_resume_point(hello.resume_from, last_seq),
            messages=[message_view(m) for m in messages],
        )

    async def _requeue_lost_turn(
        self, who: Identity, conversation: Conversation, last: Message
    ) -> None:
        """Queue again the turn of a conversation's latest user message that has none.

        The echo and the turn are written together, but a power cut can take Redis's last
        second of writes (append-only, fsync every second) after the client saw the echo:
        the client never sends that message again, it comes back with ``hello``. A recent
        unanswered user message of a bot conversation with no turn in flight, queued, ended
        or with events is queued here, its echo appended again if it is gone too.
        """
        if (
            conversation.owner is not Owner.BOT
            or last.role is not Role.USER
            or not last.turn_id
            or (conversation.channel is DbChannel.TUTOR and asks_for_next_exercise(last.text))
        ):
            return
        created = last.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if datetime.now(UTC) - created > _REQUEUE_WITHIN:
            return
        turn_id = last.turn_id
        if (
            await self.bus.in_flight.holder(conversation.id) is not None
            or await self.bus.events.turn_ended(conversation.id, turn_id)
            or await self.bus.queue.queued(turn_id)
        ):
            return
        echoed, reached = await self._logged(last)
        if reached:
            return
        with bind_turn(conversation.id, turn_id):
            log.warning("user message without its turn; queuing it", echoed=echoed)
            try:
                if echoed:
                    await self._submit(conversation, last, turn_id, last.client_id or "")
                else:
                    await self._echo_and_submit(
                        who, conversation, last, turn_id, last.client_id or ""
                    )
            except ProtocolError as exc:  # busy: the client's resend or next hello retries
                log.info("lost turn not queued now", reason=exc.message)
            except NotReplicated:  # queued; were it lost again, the next hello queues it
                log.info("lost turn queued, not yet on a replica")

    async def rate_limit(self, scope: str, ident: str, bucket: Bucket) -> float:
        return await self.bus.limiter.take(scope, ident, bucket)

    # widget and tutor ------------------------------------------------------------------------

    async def user_message(self, who: Identity, conversation_id: str, frame: UserMessage) -> None:
        """Store the message once, then echo it and start its turn once, in one Redis step.

        A tutor message that only asks for a new exercise ("next one") starts no turn: it is
        echoed, then an exercise starts as the ``next_exercise`` frame does, once per id.
        Raises ``busy`` (the message stays stored, not echoed) when the turn cannot start now.
        A message that no replica confirmed is taken again in the background until one has
        (web/unconfirmed.py); the caller is not asked to resend it.
        """
        try:
            await self._take_message(who, conversation_id, frame)
        except NotReplicated:
            self.unconfirmed.add(
                f"{conversation_id}:{frame.id}",
                lambda: self._take_again(who, conversation_id, frame),
            )

    async def _take_again(self, who: Identity, conversation_id: str, frame: UserMessage) -> None:
        """Take an unconfirmed message again unless a later one came (it moved on), then
        check that a replica holds everything written so far."""
        message, _created = await self.store.add_user_message(
            conversation_id, frame.text, frame.id, derive_turn_id(conversation_id, frame.id)
        )
        with bind_turn(conversation_id, message.turn_id or ""):
            if await self._is_latest_user_message(message):
                await self._take_message(who, conversation_id, frame)
            await self.bus.queue.replicas.confirm_written(
                self.bus.redis, self.bus.keys.replication_probe
            )

    async def close(self) -> None:
        await self.unconfirmed.close()

    async def _take_message(self, who: Identity, conversation_id: str, frame: UserMessage) -> None:
        turn_id = derive_turn_id(conversation_id, frame.id)
        message, created = await self.store.add_user_message(
            conversation_id, frame.text, frame.id, turn_id
        )
        turn_id = message.turn_id or turn_id
        with bind_turn(conversation_id, turn_id):
            conversation = await self.store.get_conversation(conversation_id, who.tenant_id)
            if conversation is None:
                raise _not_found("conversation", frame.id)
            echoed, reached_bus = (False, False) if created else await self._logged(message)
            if conversation.owner is not Owner.BOT:
                if not echoed:
                    await self._echo(who, message, turn_id="")
                return
            if conversation.channel is DbChannel.TUTOR and asks_for_next_exercise(message.text):
                await self._exercise_requested(
                    who, conversation, message, turn_id, frame.id, echoed
                )
                return
            if echoed:
                # A retry of a message already shown: start its turn only if it never started
                # (the gateway died between the echo and the submit) and nothing came after.
                if not reached_bus and await self._is_latest_user_message(message):
                    await self._submit(conversation, message, turn_id, frame.id)
                return
            await self._admit(conversation_id, turn_id, frame.id)
            await self._echo_and_submit(who, conversation, message, turn_id, frame.id)

    async def _logged(self, message: Message) -> tuple[bool, bool]:
        """(its user_message event is in the log, its turn has events or a reply)."""
        conversation_id, turn_id = message.conversation_id, message.turn_id or ""
        last = await self.bus.events.last_seq(conversation_id)
        recent = await self.bus.events.read_from(conversation_id, max(0, last - _RETRY_LOOKBACK))
        echoed = any(isinstance(e, UserMessageEvent) and e.message_id == message.id for e in recent)
        reached = any(e.turn_id == turn_id and not isinstance(e, UserMessageEvent) for e in recent)
        if not reached and turn_id:
            reached = (
                await self.bus.in_flight.holder(conversation_id) == turn_id
                or await self.store.reply_for_turn(turn_id) is not None
            )
        return echoed, reached

    async def _is_latest_user_message(self, message: Message) -> bool:
        history = await self.store.history(message.conversation_id, HISTORY_LIMIT)
        users = [m for m in history if m.role is Role.USER]
        return bool(users) and users[-1].id == message.id

    async def _admit(self, conversation_id: str, turn_id: str, ref: str) -> None:
        """Make room for the turn: a full queue is busy; a reply in flight is cancelled."""
        backlog = await self.bus.queue.backlog()
        if backlog >= self.options.max_backlog:
            raise _busy(self.bus.queue.retry_after_s, "too many replies are waiting", ref)
        await self._stop_reply_in_flight(conversation_id, turn_id, ref)

    async def _stop_reply_in_flight(self, conversation_id: str, turn_id: str, ref: str) -> None:
        """Cancel another turn's reply in flight and wait until it stopped (else ``busy``)."""
        holder = await self.bus.in_flight.holder(conversation_id)
        if holder is None or holder == turn_id:
            return
        if await self._release_if_done(conversation_id, holder):
            return
        # A new message makes the reply in flight obsolete: stop it, then answer the new one.
        await self.bus.cancellation.request(conversation_id, holder)
        log.info("new message cancels the reply in flight", cancelled_turn=holder)
        deadline = time.monotonic() + self.options.cancel_wait_s
        polls = 0
        while await self.bus.in_flight.holder(conversation_id) == holder:
            if time.monotonic() >= deadline:
                raise _busy(1.0, "the previous reply is still stopping", ref)
            polls += 1
            if polls % 10 == 0 and await self._release_if_done(conversation_id, holder):
                return
            await asyncio.sleep(0.05)

    async def _release_if_done(self, conversation_id: str, holder: str) -> bool:
        """Free a lock whose turn already has its stored reply (its worker lost Redis or died
        after storing it, before releasing): without this, every message would be busy until
        the lock's TTL ran out."""
        if await self.store.reply_for_turn(holder) is None:
            return False
        await self.bus.in_flight.release(conversation_id, holder)
        log.info("released the lock of a finished turn", finished_turn=holder)
        return True

    async def _echo(self, who: Identity, message: Message, *, turn_id: str) -> None:
        await self.bus.events.append(message.conversation_id, _user_message_event(message, turn_id))
        await self.bus.activity.append(who.tenant_id, message.conversation_id, "message")

    async def _echo_and_submit(
        self, who: Identity, conversation: Conversation, message: Message, turn_id: str, ref: str
    ) -> None:
        """The echo, the in-flight lock and the turn in one Redis step (all or none): a
        gateway that dies here leaves either an unacknowledged message (the client sends it
        again) or an acknowledged one whose turn is queued, never an echo without a turn."""
        try:
            await self.bus.queue.submit_with_echo(
                _turn_request(conversation, message, turn_id),
                _user_message_event(message, turn_id),
                self.bus.events,
            )
        except Busy as exc:  # the backlog filled up since _admit: rare, and still stored
            raise _busy(exc.retry_after_s, "too many replies are waiting", ref) from None
        except TurnInFlight as exc:
            if not exc.duplicate:  # another turn started meanwhile (a second tab)
                raise _busy(1.0, "another reply is in progress", ref) from None
            return  # queued with its echo by an earlier attempt
        log.info("turn submitted")
        # Only the consoles' list: the message and its turn are already on the bus.
        await note_activity(self.bus.activity, who.tenant_id, message.conversation_id, "message")

    async def _submit(
        self, conversation: Conversation, message: Message, turn_id: str, ref: str
    ) -> None:
        """Queue the turn of a message echoed without one (by a gateway before the echo and
        the turn were one step)."""
        turn = _turn_request(conversation, message, turn_id)
        try:
            await self.bus.queue.submit(turn)
        except Busy as exc:  # the backlog filled up since _admit: rare, and still stored
            raise _busy(exc.retry_after_s, "too many replies are waiting", ref) from None
        except TurnInFlight as exc:
            if not exc.duplicate:  # another turn started meanwhile (a second tab)
                raise _busy(1.0, "another reply is in progress", ref) from None
        log.info("turn submitted")

    async def cancel(self, conversation_id: str) -> None:
        """Stop the reply in flight; nothing in flight is not an error."""
        await self.bus.cancellation.request(conversation_id)

    async def feedback(self, conversation_id: str, frame: Feedback) -> None:
        message = await self.store.get_message(frame.message_id)
        if (
            message is None
            or message.conversation_id != conversation_id
            or message.role is not Role.ASSISTANT
        ):
            raise _not_found("reply in this conversation")
        try:
            await self.store.rate(message.id, frame.rating, frame.comment)
        except UserError:
            raise _not_found("reply in this conversation") from None

    async def next_exercise(self, who: Identity, conversation_id: str, kind: str | None) -> None:
        """A new exercise from the tutoring domain, stored as its system message."""
        exercise = next_exercise(kind)
        message = await self.store.add_system_message(conversation_id, exercise.system_message)
        await self._publish_exercise(who, message, exercise.kind)

    async def _exercise_requested(
        self,
        who: Identity,
        conversation: Conversation,
        message: Message,
        turn_id: str,
        ref: str,
        echoed: bool,
    ) -> None:
        """A typed request for a new exercise: echo it (no turn), then one exercise per id.

        The exercise is stored under the message's turn id (unique with its role), so a
        retried id finds it instead of making another; its event is appended if the first
        attempt died before it. "Harder" gets the same kind: the generator has no levels.
        """
        if echoed:
            # A retry of a message already shown: make its exercise only if it never was made
            # and nothing came after it (as a turn is started on a retry).
            made = await self.store.system_message_for_turn(turn_id)
            if made is None and not await self._is_latest_user_message(message):
                return
        else:
            # A new message makes the reply in flight obsolete, as before a turn.
            await self._stop_reply_in_flight(conversation.id, turn_id, ref)
            await self._echo(who, message, turn_id="")
        kind = await self._current_kind(conversation.id)
        exercise = next_exercise(kind)
        stored, created = await self.store.add_system_message_once(
            conversation.id, exercise.system_message, turn_id
        )
        if not created and await self._exercise_logged(stored):
            return
        log.info("typed request starts an exercise", kind=exercise.kind, created=created)
        await self._publish_exercise(who, stored, exercise_kind(stored.text) or exercise.kind)

    async def _current_kind(self, conversation_id: str) -> str | None:
        """The kind of the conversation's latest exercise, if one is in recent history."""
        for message in reversed(await self.store.history(conversation_id, HISTORY_LIMIT)):
            if message.role is Role.SYSTEM and (kind := exercise_kind(message.text)):
                return kind
        return None

    async def _exercise_logged(self, message: Message) -> bool:
        conversation_id = message.conversation_id
        last = await self.bus.events.last_seq(conversation_id)
        recent = await self.bus.events.read_from(conversation_id, max(0, last - _RETRY_LOOKBACK))
        return any(isinstance(e, ExerciseEvent) and e.exercise_id == message.id for e in recent)

    async def _publish_exercise(self, who: Identity, message: Message, kind: str) -> None:
        conversation_id = message.conversation_id
        await self.bus.events.append(
            conversation_id,
            ExerciseEvent(
                conversation_id=conversation_id,
                exercise_id=message.id,
                kind=kind,
                prompt=message.text.removeprefix(EXERCISE_PREFIX),
            ),
        )
        await self.bus.activity.append(who.tenant_id, conversation_id, "exercise")

    # console --------------------------------------------------------------------------------

    async def conversation_list(self, who: Identity, limit: int = 50) -> list[dict[str, Any]]:
        conversations = await self.store.list_conversations(who.tenant_id, limit)
        texts = await self.store.last_texts([c.id for c in conversations])
        return [conversation_view(c, texts.get(c.id, "")) for c in conversations]

    async def conversation_entry(
        self, who: Identity, conversation_id: str
    ) -> dict[str, Any] | None:
        conversation = await self.store.get_conversation(conversation_id, who.tenant_id)
        if conversation is None:
            return None
        texts = await self.store.last_texts([conversation_id])
        return conversation_view(conversation, texts.get(conversation_id, ""))

    async def _own_conversation(self, who: Identity, conversation_id: str) -> Conversation:
        conversation = await self.store.get_conversation(conversation_id, who.tenant_id)
        if conversation is None:
            raise _not_found("conversation")
        return conversation

    async def history(
        self, who: Identity, conversation_id: str, resume_from: int | None
    ) -> tuple[dict[str, Any], int]:
        """The ``history`` frame of a conversation and the seq to relay events after."""
        conversation = await self._own_conversation(who, conversation_id)
        last_seq = await self.bus.events.last_seq(conversation_id)
        messages = await self.store.history(conversation_id, HISTORY_LIMIT)
        calls = await self.store.conversation_tool_calls(conversation_id)
        frame = history_frame(
            conversation_id,
            owner=str(conversation.owner),
            operator_id=conversation.operator_id,
            last_seq=last_seq,
            messages=[message_view(m) for m in messages],
            tool_calls=[tool_call_view(c) for c in calls],
        )
        return frame, _resume_point(resume_from, last_seq)

    async def take_over(self, who: Identity, conversation_id: str) -> None:
        await self._own_conversation(who, conversation_id)
        await self.store.set_owner(conversation_id, Owner.HUMAN, who.operator_id)
        # The bot stops: a reply in flight is cancelled (the worker stores it as cancelled).
        await self.bus.cancellation.request(conversation_id)
        await self._handoff(who, conversation_id, "human", str(who.operator_id))

    async def hand_back(self, who: Identity, conversation_id: str) -> None:
        conversation = await self._own_conversation(who, conversation_id)
        if conversation.owner is Owner.HUMAN and conversation.operator_id not in (
            None,
            who.operator_id,
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, "another operator owns this conversation")
        await self.store.set_owner(conversation_id, Owner.BOT)
        await self._handoff(who, conversation_id, "bot", None)

    async def _handoff(
        self, who: Identity, conversation_id: str, owner: str, operator_id: str | None
    ) -> None:
        await self.bus.events.append(
            conversation_id,
            HandoffEvent(conversation_id=conversation_id, owner=owner, operator_id=operator_id),
        )
        await self.bus.activity.append(who.tenant_id, conversation_id, "owner")

    async def operator_message(self, who: Identity, frame: OperatorMessage) -> None:
        conversation = await self._own_conversation(who, frame.conversation_id)
        if conversation.owner is not Owner.HUMAN or conversation.operator_id != who.operator_id:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "take the conversation over before replying", ref=frame.id
            )
        assert who.operator_id is not None
        message, created = await self.store.add_operator_message(
            frame.conversation_id, who.operator_id, frame.text, frame.id
        )
        if not created:
            if message.role is not Role.OPERATOR:
                raise ProtocolError(
                    ErrorCode.BAD_FRAME, "this id belongs to another message", ref=frame.id
                )
            # A retry: echo it only if its event never reached the log (the first attempt
            # died in between), so the console's pending message is still acknowledged.
            if await self._operator_message_logged(message):
                return
        await self.bus.events.append(
            frame.conversation_id,
            OperatorMessageEvent(
                conversation_id=frame.conversation_id,
                message_id=message.id,
                text=message.text,
                operator_id=str(who.operator_id),
                operator_name=who.operator_name,
                client_id=frame.id,
            ),
        )
        await self.bus.activity.append(who.tenant_id, frame.conversation_id, "message")

    async def _operator_message_logged(self, message: Message) -> bool:
        conversation_id = message.conversation_id
        last = await self.bus.events.last_seq(conversation_id)
        recent = await self.bus.events.read_from(conversation_id, max(0, last - _RETRY_LOOKBACK))
        return any(
            isinstance(e, OperatorMessageEvent) and e.message_id == message.id for e in recent
        )
