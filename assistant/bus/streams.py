"""The thin Redis layer of the bus.

- ``EventLog``: each conversation's events in one stream, numbered 1, 2, 3, ... The number
  (``seq``) is given out by a Lua script that increments a counter and adds the entry in one
  step, with ``<seq>-0`` as the entry id: appends cannot interleave, never skip a number, and
  "everything after seq N" is a plain ``XREAD`` from id ``N-0`` on any gateway. A turn's
  first final or error is its last event: nothing else of that turn is appended after it.
- ``InFlight``: at most one turn in flight per conversation, a ``SET NX PX`` lock holding the
  turn id. The producer takes it on submit, the worker refreshes it while it works and
  releases it when the turn ends (ack or dead letter); the TTL frees it if everyone died.
- ``TurnQueue``: the producer side. It refuses new turns with ``Busy`` while the turn stream
  holds ``max_backlog`` turns or more (acked turns are deleted, so its length is the work
  not yet finished), and with ``TurnInFlight`` while the conversation has a turn in flight.
  ``submit_with_echo`` appends a user message's echo, takes the lock and queues its turn in
  one script, so no crash leaves an acknowledged message without its turn; with replicas
  to wait for (``replication.py``), it reports ``NotReplicated`` when none confirmed them.
- ``TurnConsumer``: the worker side of the consumer group: own pending turns first after a
  restart, then new ones; idle turns taken over (``XPENDING IDLE`` then ``XCLAIM``) only
  from workers whose heartbeat expired, so a slow live one keeps its turns and is not
  counted a failed delivery; long turns kept; dead letters after too many deliveries, and
  only when no delivery of the turn is alive and the turn has not ended.
- ``Cancellation``: a key per conversation holding the id of the turn to stop. A key, not
  pub/sub, because it is still there for a worker that takes the turn over after a crash or
  that polls a moment later. Workers poll it from a background task (``cancelled`` checks a
  whole batch in one round trip) rather than from the engine's step loop, so Redis latency
  never sits between two forward passes.

Delivery is at least once: a client with a redis-py ``Retry`` policy resends a command whose
connection dropped. An append carries an append id, so a resent one is not applied twice; a
submit may rarely be (one turn delivered twice), and the turn id is the idempotency key
downstream. A submit that took the lock but lost its queue entry (Redis went down in between)
is queued again when the same turn is submitted again, rather than reported as a duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from assistant.bus.activity import ActivityLog
from assistant.bus.connection import bounded_block_ms
from assistant.bus.keys import DEFAULT_KEYS, Keys
from assistant.bus.replication import ReplicaAcks
from assistant.bus.schema import ErrorEvent, Event, FinalEvent, SchemaError, TurnRequest

log = structlog.get_logger(__name__)

TURN_FAILED = "turn_failed"
TURN_FAILED_MESSAGE = "Sorry, the reply could not be generated. Please send your message again."


def _str(value: Any) -> str:
    """A reply value as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _seq_of(stream_id: Any) -> int:
    return int(_str(stream_id).split("-", 1)[0])


Entry = tuple[str, dict[Any, Any]]


def _entries(response: Any) -> list[Entry]:
    """Entries of a one-stream XREAD/XREADGROUP reply, in any redis-py reply shape."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    out: list[Entry] = []
    for _name, entries in streams:
        if entries and isinstance(entries[0], list):  # RESP3 shape nests one more level
            entries = entries[0]
        out.extend((_str(sid), fields or {}) for sid, fields in entries if sid is not None)
    return out


class BusError(Exception):
    """The bus refused a request; the message says why."""


class Busy(BusError):
    """Too many turns are waiting: try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: float, backlog: int) -> None:
        super().__init__(f"{backlog} turns are waiting; retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s
        self.backlog = backlog


class TurnInFlight(BusError):
    """The conversation already has a turn in flight (possibly this very turn)."""

    def __init__(self, conversation_id: str, holder: str | None, turn_id: str) -> None:
        super().__init__(f"conversation {conversation_id} already has turn {holder} in flight")
        self.conversation_id = conversation_id
        self.holder = holder
        # True when the same turn was submitted again (a retry): it is already queued.
        self.duplicate = holder == turn_id


# event log -----------------------------------------------------------------------------

_APPEND_FUNCTION = """
-- append(kseq, kevents, konce, maxlen, ttl, aid, turn, kind, fields): add one event, return
-- its seq. A client that resends an append whose reply it lost (its connection dropped)
-- finds its append id on the newest entry and gets that entry's seq back instead of a second
-- copy of the event. A turn ends once: its first final or error is its last event. A
-- second final (error) gets the first one's seq back; anything else of an ended turn, a
-- final after its error included, is not appended: 0.
local function append(kseq, kevents, konce, maxlen, ttl, aid, turn, kind, fields)
  if turn ~= '' then
    local final = redis.call('HGET', konce, 'final:' .. turn)
    local failed = redis.call('HGET', konce, 'error:' .. turn)
    if kind == 'final' and final then return tonumber(final) end
    if kind == 'error' and failed then return tonumber(failed) end
    if final or failed then return 0 end
  end
  local newest = redis.call('XREVRANGE', kevents, '+', '-', 'COUNT', 1)[1]
  if newest then
    local stored = newest[2]
    for i = 1, #stored, 2 do
      if stored[i] == 'aid' and stored[i + 1] == aid then
        return tonumber(string.match(newest[1], '^(%d+)'))
      end
    end
  end
  local seq = redis.call('INCR', kseq)
  local args = {'XADD', kevents, 'MAXLEN', '~', maxlen, seq .. '-0', 'seq', tostring(seq)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  args[#args + 1] = 'aid'
  args[#args + 1] = aid
  local added = redis.pcall(unpack(args))
  if type(added) == 'table' and added.err then
    -- The counter is behind the stream (it expired or was restored on its own): continue
    -- after the stream's last id, so numbers stay strictly increasing.
    local info = redis.call('XINFO', 'STREAM', kevents)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        seq = tonumber(string.match(info[i + 1], '^(%d+)')) + 1
      end
    end
    redis.call('SET', kseq, seq)
    args[6] = seq .. '-0'
    args[8] = tostring(seq)
    redis.call(unpack(args))
  end
  if turn ~= '' and (kind == 'final' or kind == 'error') then
    redis.call('HSET', konce, kind .. ':' .. turn, seq)
    redis.call('PEXPIRE', konce, ttl)
  end
  redis.call('PEXPIRE', kseq, ttl)
  redis.call('PEXPIRE', kevents, ttl)
  return seq
end
"""

_APPEND = (
    _APPEND_FUNCTION
    + """
-- KEYS[1] seq counter, KEYS[2] event stream, KEYS[3] once-hash; ARGV[1] maxlen, ARGV[2] ttl
-- ms, ARGV[3] append id, ARGV[4] the event's turn id ('' for an event of no turn), ARGV[5]
-- 'final', 'error' or 'event', ARGV[6..] fields.
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
return append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], fields)
"""
)


class EventLog:
    """Per-conversation event streams with gapless, strictly increasing sequence numbers.

    A stream keeps about ``maxlen`` newest events (approximate trimming, which is cheap) and
    expires, with its counter, ``ttl_s`` after the last append. A client resuming from a seq
    below ``first_seq() - 1`` missed trimmed events, and one resuming from a seq above
    ``last_seq()`` saw a log that has since expired: both must reload the history from SQL.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keys = DEFAULT_KEYS,
        maxlen: int = 1000,
        ttl_s: float = 24 * 3600,
    ) -> None:
        if maxlen < 1 or ttl_s <= 0:
            raise ValueError("maxlen and ttl_s must be positive")
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.ttl_ms = int(ttl_s * 1000)
        self._append = redis.register_script(_APPEND)
        # Append ids: unique per append, the same for a resent one (see _APPEND).
        self._aid_prefix = os.urandom(6).hex()
        self._aids = itertools.count()

    async def append(self, conversation_id: str, event: Event) -> int:
        """Append ``event`` and return its seq; 0 when its turn has already ended.

        A turn ends once, with a final or an error, and that is its last event, even when two
        deliveries of it run at once (a worker that lost Redis or stalled for a while and the
        one that took its turn over, or a dead letter beside a copy still running): a second
        final (error) gets the first one's seq back, and a later draft, tool event, final
        after an error or error after a final of that turn is not appended (0).
        """
        if event.conversation_id != conversation_id:
            raise ValueError(
                f"event of conversation {event.conversation_id!r} appended to {conversation_id!r}"
            )
        seq = await self._append(
            keys=self.append_keys(conversation_id), args=self.append_args(event)
        )
        return int(seq)

    def append_keys(self, conversation_id: str) -> list[str]:
        """The keys of ``_APPEND_FUNCTION``'s append, in order (for scripts that append)."""
        return [
            self.keys.seq(conversation_id),
            self.keys.events(conversation_id),
            self.keys.once(conversation_id),
        ]

    def append_args(self, event: Event) -> list[Any]:
        """maxlen, ttl, a fresh append id, turn id, kind ('final', 'error', 'event'), fields."""
        fields = event.to_fields()
        fields.pop("seq", None)  # the script sets it
        flat = [item for pair in fields.items() for item in pair]
        kind = "event"
        if isinstance(event, FinalEvent):
            kind = "final"
        elif isinstance(event, ErrorEvent):
            kind = "error"
        return [
            self.maxlen,
            self.ttl_ms,
            f"{self._aid_prefix}{next(self._aids)}",
            event.turn_id,
            kind,
            *flat,
        ]

    async def turn_ended(self, conversation_id: str, turn_id: str) -> bool:
        """Whether the turn's final or error is in the log (nothing else of it is appended)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.once(conversation_id), f"final:{turn_id}")
            pipe.hexists(self.keys.once(conversation_id), f"error:{turn_id}")
            final, failed = await pipe.execute()
        return bool(final or failed)

    async def read_from(
        self,
        conversation_id: str,
        after_seq: int,
        block_ms: int | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """Events with seq > ``after_seq``, oldest first.

        With ``block_ms``, wait up to that long (0: forever) for one when there is none yet,
        but never longer than the client's socket timeout allows (``bounded_block_ms``): an
        empty list is not the end of the log, callers read again. An entry this build cannot
        read is logged and skipped, so one bad entry cannot wedge a relay.
        """
        if after_seq < 0:
            raise ValueError(f"after_seq must be >= 0, got {after_seq}")
        response = await self.redis.xread(
            {self.keys.events(conversation_id): f"{after_seq}-0"},
            count=count,
            block=bounded_block_ms(self.redis, block_ms),
        )
        events: list[Event] = []
        for stream_id, fields in _entries(response):
            try:
                events.append(Event.from_fields(fields))
            except SchemaError as exc:
                log.error(
                    "unreadable event skipped",
                    conversation_id=conversation_id,
                    stream_id=stream_id,
                    error=str(exc),
                )
        return events

    async def read_many(
        self,
        after: dict[str, int],
        block_ms: int | None = None,
        count: int | None = None,
        client: aioredis.Redis | None = None,
    ) -> dict[str, list[Event]]:
        """Events after each conversation's seq in ``after``, in one XREAD (one Redis server).

        ``client`` runs the read (a dedicated connection that another one may unblock with
        CLIENT UNBLOCK); by default this log's client. Conversations with nothing new are
        left out of the result.
        """
        if not after:
            return {}
        reader = client or self.redis
        by_key = {self.keys.events(cid): cid for cid in after}
        response: Any = await reader.xread(
            {key: f"{after[cid]}-0" for key, cid in by_key.items()},
            count=count,
            block=bounded_block_ms(reader, block_ms),
        )
        if not response:
            return {}
        streams = response.items() if isinstance(response, dict) else response
        out: dict[str, list[Event]] = {}
        for name, entries in streams:
            if entries and isinstance(entries[0], list):  # RESP3 shape nests one more level
                entries = entries[0]
            conversation_id = by_key[_str(name)]
            for stream_id, fields in entries:
                try:
                    out.setdefault(conversation_id, []).append(Event.from_fields(fields or {}))
                except SchemaError as exc:
                    log.error(
                        "unreadable event skipped",
                        conversation_id=conversation_id,
                        stream_id=_str(stream_id),
                        error=str(exc),
                    )
        return out

    async def last_seq(self, conversation_id: str) -> int:
        """The seq of the newest event, 0 when there is none."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.seq(conversation_id))
            pipe.xrevrange(self.keys.events(conversation_id), count=1)
            counter, newest = await pipe.execute()
        return max(int(counter or 0), _seq_of(newest[0][0]) if newest else 0)

    async def first_seq(self, conversation_id: str) -> int:
        """The seq of the oldest event still kept, 0 when there is none."""
        oldest = await self.redis.xrange(self.keys.events(conversation_id), count=1)
        return _seq_of(oldest[0][0]) if oldest else 0


# one turn in flight ----------------------------------------------------------------------

_REFRESH = """
-- KEYS[1] lock; ARGV[1] turn id, ARGV[2] ttl ms. Extend our lock, or take it back if it lapsed.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
-- KEYS[1] lock; ARGV[1] turn id. Delete only our own lock, never the next turn's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class InFlight:
    """The lock that allows one turn in flight per conversation; it holds the turn id.

    ``ttl_s`` must exceed the idle time after which workers take over a dead worker's turns,
    so that the lock is still there when the turn is taken over; working workers refresh it.
    """

    def __init__(self, redis: aioredis.Redis, *, keys: Keys = DEFAULT_KEYS, ttl_s: float = 120):
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(ttl_s * 1000)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, conversation_id: str, turn_id: str) -> bool:
        """Take the lock for ``turn_id``; False when any turn (this one too) holds it."""
        key = self.keys.turn(conversation_id)
        return bool(await self.redis.set(key, turn_id, nx=True, px=self.ttl_ms))

    async def holder(self, conversation_id: str) -> str | None:
        value = await self.redis.get(self.keys.turn(conversation_id))
        return _str(value) if value is not None else None

    async def refresh(self, conversation_id: str, turn_id: str) -> bool:
        """Extend the lock of ``turn_id``; False when another turn holds it now."""
        keys = [self.keys.turn(conversation_id)]
        return bool(await self._refresh(keys=keys, args=[turn_id, self.ttl_ms]))

    async def release(self, conversation_id: str, turn_id: str) -> bool:
        return bool(await self._release(keys=[self.keys.turn(conversation_id)], args=[turn_id]))


# producer --------------------------------------------------------------------------------


class TurnQueue:
    """Submits turns to the worker group, with a bounded backlog and one turn per conversation.

    The bound is soft: producers check the stream length, then add, so concurrent producers
    may overshoot it by one turn each.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keys = DEFAULT_KEYS,
        max_backlog: int = 256,
        retry_after_s: float = 1.0,
        in_flight: InFlight | None = None,
        replicas: ReplicaAcks | None = None,
    ) -> None:
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        self.redis = redis
        # Replicas that must hold a submitted message before it counts as taken (none: the
        # primary's word is enough).
        self.replicas = replicas or ReplicaAcks(0)
        self.keys = keys
        self.max_backlog = max_backlog
        self.retry_after_s = retry_after_s
        self.in_flight = in_flight or InFlight(redis, keys=keys)
        self._submit_with_echo = redis.register_script(_SUBMIT_WITH_ECHO)

    async def backlog(self) -> int:
        """Turns waiting or being worked on (acked turns are deleted from the stream)."""
        return int(await self.redis.xlen(self.keys.turns))

    async def submit(self, turn: TurnRequest) -> str:
        """Queue ``turn``; return its stream id. Raises ``Busy`` or ``TurnInFlight``."""
        # The backlog check and the lock in one round trip (a pipeline, not a script: the two
        # keys live in different cluster slots); a refused turn gives the lock back.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.turns)
            pipe.set(
                self.keys.turn(turn.conversation_id),
                turn.turn_id,
                nx=True,
                px=self.in_flight.ttl_ms,
            )
            backlog, acquired = await pipe.execute()
        if backlog >= self.max_backlog:
            if acquired:
                await self.in_flight.release(turn.conversation_id, turn.turn_id)
            raise self._busy(backlog)
        if not acquired:
            holder = await self.in_flight.holder(turn.conversation_id)
            if holder != turn.turn_id or await self._queued(turn.turn_id):
                raise TurnInFlight(turn.conversation_id, holder, turn.turn_id)
            # This turn holds the lock but is not in the stream: an earlier submit took the
            # lock and lost its XADD. Queued again, else it would wait for the lock's TTL and
            # then never run. Were it acked meanwhile, the worker finds its stored reply.
            log.warning("resubmitted turn was not queued; queuing it", turn_id=turn.turn_id)
        try:
            fields: dict[Any, Any] = turn.to_fields()
            stream_id = await self.redis.xadd(self.keys.turns, fields)
        except Exception:
            await self.in_flight.release(turn.conversation_id, turn.turn_id)
            raise
        log.debug("turn submitted", turn_id=turn.turn_id, stream_id=_str(stream_id))
        return _str(stream_id)

    async def submit_with_echo(
        self, turn: TurnRequest, echo: Event, events: EventLog
    ) -> tuple[int, str]:
        """Append ``echo`` (the user message's event), take the lock and queue ``turn``, in
        one script: all or nothing. Return (the echo's seq, the turn's stream id).

        A gateway that dies mid-way cannot leave an acknowledged message without its turn,
        nor a lock without a queued turn (each would have the conversation answer nothing,
        then ``busy`` for the lock's TTL). Raises ``Busy`` or ``TurnInFlight`` with nothing
        written; ``TurnInFlight.duplicate`` means this turn was already taken (a resent call,
        or two takes of one message racing: its reply may even be done and its lock gone);
        ``NotReplicated`` with everything written but not yet on a replica (send it again).
        The script touches the turn stream and the conversation's keys at once, so on Redis
        Cluster the turn stream would need to share the conversation's slot (see
        docs/deploy.md).
        """
        if echo.conversation_id != turn.conversation_id:
            raise ValueError("the echo and the turn belong to different conversations")
        conversation_id = turn.conversation_id
        append_args = events.append_args(echo)
        event_fields = append_args[5:]
        turn_fields = [item for pair in turn.to_fields().items() for item in pair]
        keys = [
            *events.append_keys(conversation_id),
            self.keys.turn(conversation_id),
            self.keys.turns,
        ]
        args = [
            *append_args[:5],
            self.in_flight.ttl_ms,
            self.max_backlog,
            len(event_fields),
            *event_fields,
            *turn_fields,
        ]
        needed = await self.replicas.needed(self.redis)
        acked = 0
        if needed:
            # WAIT counts the writes of its own connection: one pipeline keeps them on one.
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._submit_with_echo(keys=keys, args=args, client=pipe)
                pipe.wait(needed, self.replicas.wait_ms)
                (status, *rest), acked = await pipe.execute()
        else:
            status, *rest = await self._submit_with_echo(keys=keys, args=args)
        status = _str(status)
        if status == "busy":
            raise self._busy(int(rest[0]))
        if status == "held":
            raise TurnInFlight(conversation_id, _str(rest[0]), turn.turn_id)
        await self.replicas.confirm(self.redis, needed, int(acked))
        if status == "echoed":  # taken before (and, confirmed above, on a replica)
            raise TurnInFlight(conversation_id, turn.turn_id, turn.turn_id)
        seq, stream_id = int(rest[0]), _str(rest[1])
        log.debug("turn submitted with its echo", turn_id=turn.turn_id, stream_id=stream_id)
        return seq, stream_id

    def _busy(self, backlog: int) -> Busy:
        # The hint grows with the overshoot, so a crowd of clients spreads out.
        excess = backlog - self.max_backlog + 1
        hint = min(30.0, self.retry_after_s * (1 + excess / self.max_backlog))
        return Busy(round(hint, 1), backlog)

    async def queued(self, turn_id: str) -> bool:
        """Whether the turn stream holds ``turn_id`` (waiting or being worked on)."""
        return await self._queued(turn_id)

    async def _queued(self, turn_id: str) -> bool:
        """Whether the turn stream holds ``turn_id``: a scan, only on a resubmit.

        Acked turns are deleted, so the stream holds about ``max_backlog`` entries at most.
        """
        last = "-"
        while True:
            entries = await self.redis.xrange(self.keys.turns, last, "+", count=500) or []
            for _stream_id, fields in entries:
                fields = fields or {}
                value = fields.get(b"turn_id", fields.get("turn_id"))
                if value is not None and _str(value) == turn_id:
                    return True
            if len(entries) < 500:
                return False
            last = f"({_str(entries[-1][0])}"


_SUBMIT_WITH_ECHO = (
    _APPEND_FUNCTION
    + """
-- KEYS[1..3] the conversation's seq counter, event stream and once-hash (see append),
-- KEYS[4] its in-flight lock, KEYS[5] the turn stream. ARGV[1..5] as the append's (maxlen,
-- ttl, append id, turn id, kind), ARGV[6] lock ttl ms, ARGV[7] max backlog, ARGV[8] the
-- number n of event field items, ARGV[9..8+n] the event's fields, the rest the turn's.
-- The echo, the lock and the turn in one step: all of them or none, and once per turn: a
-- turn whose echo is marked in the once-hash was taken (its reply may be done, the lock
-- gone), so a second take of its message, racing the first, writes nothing.
local echoed = redis.call('HGET', KEYS[3], 'echo:' .. ARGV[4])
if echoed then return {'echoed', echoed} end
local backlog = redis.call('XLEN', KEYS[5])
if backlog >= tonumber(ARGV[7]) then return {'busy', backlog} end
local holder = redis.call('GET', KEYS[4])
if holder then return {'held', holder} end
local n = tonumber(ARGV[8])
local event, turn = {}, {}
for i = 9, 8 + n do event[#event + 1] = ARGV[i] end
for i = 9 + n, #ARGV do turn[#turn + 1] = ARGV[i] end
local seq = append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], '', ARGV[5], event)
redis.call('HSET', KEYS[3], 'echo:' .. ARGV[4], seq)
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[6])
local args = {'XADD', KEYS[5], '*'}
for i = 1, #turn do args[#args + 1] = turn[i] end
return {'ok', seq, redis.call(unpack(args))}
"""
)


# worker ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A turn handed to this worker; ``attempt`` counts deliveries, this one included."""

    stream_id: str
    turn: TurnRequest
    attempt: int


_KEEP_ALIVE = """
-- KEYS[1] turn stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids.
-- Reset the idle time of the ids this consumer still owns (JUSTID: no delivery counted);
-- an id another worker took over stays theirs. Returns per id: 1 still owned, 0 taken over,
-- -1 no longer pending (acked meanwhile, e.g. by this very worker while the call was sent).
local status = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 then
    status[#status + 1] = -1
  elseif p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    status[#status + 1] = 1
  else
    status[#status + 1] = 0
  end
end
return status
"""


class TurnConsumer:
    """One worker's membership in the consumer group.

    ``consumer`` should be stable across restarts of the same worker (e.g. host and
    accelerator index), so that a restarted worker first takes back its own pending turns.
    After ``max_deliveries`` failed deliveries a turn is dead-lettered instead of delivered.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        consumer: str,
        *,
        keys: Keys = DEFAULT_KEYS,
        max_deliveries: int = 3,
        dead_maxlen: int = 10_000,
        events: EventLog | None = None,
        in_flight: InFlight | None = None,
        activity: ActivityLog | None = None,
        on_dead_letter: Callable[[TurnRequest], Awaitable[None]] | None = None,
    ) -> None:
        if not consumer:
            raise ValueError("consumer name must not be empty")
        self.on_dead_letter = on_dead_letter
        self.redis = redis
        self.consumer = consumer
        self.keys = keys
        self.max_deliveries = max_deliveries
        self.dead_maxlen = dead_maxlen
        self.events = events or EventLog(redis, keys=keys)
        self.in_flight = in_flight or InFlight(redis, keys=keys)
        self.activity = activity or ActivityLog(redis, keys=keys)
        self._history_cursor: str | None = "0-0"  # None once own pending turns are re-read
        self._autoclaim_cursor = "0-0"
        self._keep_alive = redis.register_script(_KEEP_ALIVE)

    @property
    def autoclaim_cursor(self) -> str:
        """Where the next ``reclaim_idle`` continues its scan of the pending list."""
        return self._autoclaim_cursor

    async def ensure_group(self) -> None:
        """Create the group (and the stream); from id 0 so turns queued before it count."""
        try:
            await self.redis.xgroup_create(self.keys.turns, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, count: int = 1, block_ms: int | None = None) -> list[Delivery]:
        """Up to ``count`` turns: first this consumer's own pending ones, then new ones.

        Own pending turns are those a previous run of this consumer took and never acked;
        they are read once, in order, without blocking. ``block_ms`` waits for new turns.
        """
        deliveries = await self._own_pending(count)
        if deliveries:
            return deliveries
        return await self._deliver(await self._read(">", count, block_ms))

    async def _own_pending(self, count: int) -> list[Delivery]:
        """The next of the turns a previous run of this consumer left pending, until none.

        Read before anything else this run takes: re-reading a turn that this run already
        holds would count one more delivery of it."""
        while self._history_cursor is not None:
            entries = await self._read(self._history_cursor, count, None)
            if not entries:
                self._history_cursor = None
                break
            self._history_cursor = entries[-1][0]
            deliveries = await self._deliver(entries)
            if deliveries:
                return deliveries
        return []

    async def reclaim_idle(
        self, min_idle_ms: int, count: int = 10, running: Collection[str] = ()
    ) -> list[Delivery]:
        """Take over turns idle for ``min_idle_ms`` whose delivery is no longer alive.

        A turn idles when its holder stopped keeping it alive. That holder's delivery is
        over when the holder is dead (its heartbeat, ``assistant.bus.heartbeat``, expired;
        a consumer that never announced one counts as dead) or when the holder is this very
        consumer and the turn is not among its ``running`` stream ids (its handler raised).
        A holder whose heartbeat lives is slow, not failed: its turn is left to it, and no
        delivery is counted against the turn. ``XCLAIM`` with the idle time rechecks each
        entry atomically, so a turn kept alive meanwhile stays with its holder.

        The scan cursor is kept between calls, so repeated calls walk the whole pending list
        instead of re-scanning its head; it wraps to the start when the scan is complete.
        """
        own = await self._own_pending(count)  # first, as ``claim`` does
        if own:
            return own
        start = self._autoclaim_cursor
        try:
            rows = await self.redis.xpending_range(
                self.keys.turns,
                self.keys.group,
                "-" if start == "0-0" else start,
                "+",
                count + 1,
                idle=min_idle_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        # As XAUTOCLAIM's: the first id of the next scan, or "0-0" when this one reached the end.
        self._autoclaim_cursor = _str(rows[count]["message_id"]) if len(rows) > count else "0-0"
        holders = {_str(row["message_id"]): _str(row["consumer"]) for row in rows[:count]}
        alive = await self._alive({h for h in holders.values() if h != self.consumer})
        ids = [
            sid
            for sid, holder in holders.items()
            if (holder == self.consumer and sid not in running)
            or (holder != self.consumer and holder not in alive)
        ]
        slow = sorted({h for h in holders.values() if h in alive})
        if slow:
            log.debug("idle turns left to their live holders", holders=slow)
        if not ids:
            return []
        claimed: Any = await self.redis.xclaim(
            self.keys.turns, self.keys.group, self.consumer, min_idle_ms, list[Any](ids)
        )
        claimed = claimed or []
        entries = [(_str(sid), fields or {}) for sid, fields in claimed if sid is not None]
        if len(entries) < len(claimed):  # Redis 6.2: deleted entries come back as nil
            await self._drop_deleted(ids, {sid for sid, _ in entries})
        deliveries = await self._deliver(entries, holders)
        if deliveries:
            log.info(
                "took over idle turns",
                consumer=self.consumer,
                turn_ids=[d.turn.turn_id for d in deliveries],
                from_holders=sorted({holders[d.stream_id] for d in deliveries}),
            )
        return deliveries

    async def _alive(self, names: Collection[str]) -> set[str]:
        """Of the consumer names, those whose worker heartbeat lives."""
        checked = sorted(names)
        if not checked:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in checked:
                try:
                    pipe.exists(self.keys.worker_heartbeat(name))
                except ValueError:  # a name unfit for a key never announced itself
                    pipe.exists(self.keys.worker_heartbeat("-"))
            found = await pipe.execute()
        return {name for name, present in zip(checked, found, strict=True) if present}

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Keep turns still being worked on from being taken over; return the ones lost.

        Call it well within the takeover idle time. A lost turn was taken over by another
        worker (this one looked dead): stop working on it and do not ack it.
        """
        if not deliveries:
            return []
        ids = [d.stream_id for d in deliveries]
        status = await self._keep_alive(
            keys=[self.keys.turns], args=[self.keys.group, self.consumer, *ids]
        )
        by_id = {sid: int(code) for sid, code in zip(ids, status, strict=True)}
        kept = [d for d in deliveries if by_id[d.stream_id] == 1]
        locked = await asyncio.gather(
            *(self.in_flight.refresh(d.turn.conversation_id, d.turn.turn_id) for d in kept)
        )
        if not all(locked):  # the lock lapsed and another turn took it: two are in flight
            log.warning(
                "in-flight lock held by another turn",
                turn_ids=[d.turn.turn_id for d, ok in zip(kept, locked, strict=True) if not ok],
            )
        # Not pending any more means finished (acked between the snapshot and this call).
        lost = [d for d in deliveries if by_id[d.stream_id] == 0]
        if lost:
            log.warning("turns were taken over", turn_ids=[d.turn.turn_id for d in lost])
        return lost

    async def ack(self, delivery: Delivery) -> bool:
        """The turn is finished: remove it from the group and the stream, free the lock.

        Acked before the lock is freed: the other order could let a new turn start while
        this one may still be redelivered.
        """
        acked = await self._ack(delivery.stream_id)
        await self.in_flight.release(delivery.turn.conversation_id, delivery.turn.turn_id)
        return acked

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Give up on a turn: record it, tell the client, then ack it and free the lock.

        ``on_dead_letter`` runs first (the worker stores the failed reply in SQL there, so
        that a copy still running finds its reply stored and cannot store another), then the
        turn's cancellation is requested.

        The dead-letter entry and the client's error are written before the ack, so a crash
        in between leaves the turn pending (to be dead-lettered again), never lost unseen.
        """
        turn = delivery.turn
        if self.on_dead_letter is not None:
            await self.on_dead_letter(turn)
        # A copy that still runs somewhere (a holder that looked dead) stops, and whatever it
        # publishes after the error below is refused by the event log.
        await Cancellation(self.redis, keys=self.keys).request(turn.conversation_id, turn.turn_id)
        await self._write_dead(delivery.stream_id, turn.to_fields(), reason, delivery.attempt)
        await self._tell_client(turn.conversation_id, turn.turn_id)
        await note_activity(self.activity, turn.tenant_id, turn.conversation_id, TURN_FAILED)
        await self._ack(delivery.stream_id)
        await self.in_flight.release(turn.conversation_id, turn.turn_id)
        log.error(
            "turn dead-lettered",
            turn_id=turn.turn_id,
            conversation_id=turn.conversation_id,
            attempt=delivery.attempt,
            reason=reason,
        )

    # internals ---------------------------------------------------------------------------

    async def _read(self, stream_id: str, count: int, block_ms: int | None) -> list[Entry]:
        streams: dict[Any, Any] = {self.keys.turns: stream_id}
        block_ms = bounded_block_ms(self.redis, block_ms)
        try:
            reply = await self.redis.xreadgroup(
                self.keys.group, self.consumer, streams, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream was lost (a flushed or fresh Redis): recreate and read again.
            await self.ensure_group()
            reply = await self.redis.xreadgroup(
                self.keys.group, self.consumer, streams, count=count, block=block_ms
            )
        return _entries(reply)

    async def _deliver(
        self, entries: Iterable[Entry], holders: dict[str, str] | None = None
    ) -> list[Delivery]:
        """Turn entries into deliveries; drop deleted ones, dead-letter unreadable ones.

        ``holders``: the consumer each entry was taken from (a takeover). A turn past its
        deliveries is dead-lettered only when no delivery of it is alive: one whose final or
        error is already in the event log is acked instead (it ended; a dead letter would
        contradict it), and one whose previous holder came back to life meanwhile is given
        back to it, its delivery uncounted.
        """
        turns: list[tuple[str, TurnRequest]] = []
        for stream_id, fields in entries:
            if not fields:  # deleted while pending: nothing left to do
                await self._ack(stream_id)
                continue
            try:
                turns.append((stream_id, TurnRequest.from_fields(fields)))
            except SchemaError as exc:
                await self._dead_letter_unreadable(stream_id, fields, str(exc))
        attempts = await self._attempts([stream_id for stream_id, _ in turns])
        deliveries = []
        for stream_id, turn in turns:
            if stream_id not in attempts:  # acked meanwhile by another worker
                continue
            delivery = Delivery(stream_id, turn, attempts[stream_id])
            if delivery.attempt <= self.max_deliveries:
                deliveries.append(delivery)
            elif await self.events.turn_ended(turn.conversation_id, turn.turn_id):
                log.info("turn past its deliveries had ended; acked", turn_id=turn.turn_id)
                await self.ack(delivery)
            elif (holder := (holders or {}).get(stream_id, self.consumer)) != self.consumer and (
                holder in await self._alive([holder])
            ):
                await self._give_back(delivery, holder)
            else:
                await self.dead_letter(
                    delivery, f"delivered {delivery.attempt} times (max {self.max_deliveries})"
                )
        return deliveries

    async def _give_back(self, delivery: Delivery, holder: str) -> None:
        """Return a turn to its live holder, with the delivery count it had there."""
        await self.redis.xclaim(
            self.keys.turns,
            self.keys.group,
            holder,
            0,
            [delivery.stream_id],
            justid=True,
            retrycount=delivery.attempt - 1,
        )
        log.info(
            "turn past its deliveries given back to its live holder",
            turn_id=delivery.turn.turn_id,
            holder=holder,
        )

    async def _attempts(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Delivery counts from the group's pending list, one round trip."""
        if not stream_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream_id in stream_ids:
                pipe.xpending_range(self.keys.turns, self.keys.group, stream_id, stream_id, 1)
            rows = await pipe.execute()
        return {_str(row[0]["message_id"]): int(row[0]["times_delivered"]) for row in rows if row}

    async def _ack(self, stream_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.turns, self.keys.group, stream_id)
            pipe.xdel(self.keys.turns, stream_id)
            acked, _deleted = await pipe.execute()
        return bool(acked)

    async def _write_dead(
        self, stream_id: str, fields: dict[Any, Any], reason: str, attempt: int
    ) -> None:
        entry = {
            **fields,
            "dead_reason": reason,
            "dead_stream_id": stream_id,
            "dead_attempt": str(attempt),
            "dead_consumer": self.consumer,
            "dead_at": str(int(time.time() * 1000)),
        }
        await self.redis.xadd(self.keys.dead, entry, maxlen=self.dead_maxlen, approximate=True)

    async def _tell_client(self, conversation_id: str, turn_id: str) -> None:
        error = ErrorEvent(
            conversation_id=conversation_id,
            turn_id=turn_id,
            code=TURN_FAILED,
            message=TURN_FAILED_MESSAGE,
        )
        try:
            await self.events.append(conversation_id, error)
        except (ValueError, SchemaError) as exc:  # an id unfit for a key: nobody to tell
            log.warning("cannot publish turn_failed", error=str(exc))

    async def _dead_letter_unreadable(
        self, stream_id: str, fields: dict[Any, Any], reason: str
    ) -> None:
        await self._write_dead(stream_id, fields, f"unreadable: {reason}", 0)
        text = {_str(k): _str(v) for k, v in fields.items()}
        conversation_id, turn_id = text.get("conversation_id"), text.get("turn_id", "")
        if conversation_id:
            await self._tell_client(conversation_id, turn_id)
            tenant_id = text.get("tenant_id")
            if tenant_id:
                await note_activity(self.activity, tenant_id, conversation_id, TURN_FAILED)
        await self._ack(stream_id)
        log.error("unreadable turn dead-lettered", stream_id=stream_id, reason=reason)

    async def _drop_deleted(self, claimed: Sequence[str], present: set[str]) -> None:
        """Ack the deleted entries that a Redis 6.2 XCLAIM handed over as nil."""
        for stream_id in claimed:
            if stream_id not in present and not await self.redis.xrange(
                self.keys.turns, stream_id, stream_id
            ):
                await self.redis.xack(self.keys.turns, self.keys.group, stream_id)


async def note_activity(
    activity: ActivityLog, tenant_id: str, conversation_id: str, kind: str
) -> None:
    """Tell the tenant's consoles the conversation changed; a failure only delays their list.

    Written by whoever publishes the change (the worker for finals, handoffs and failed
    turns), so the list updates whether or not any gateway relays the conversation. Never
    raised: the event itself is already published, and failing the turn for a note would
    have it delivered again.
    """
    try:
        await activity.append(tenant_id, conversation_id, kind)
    except (RedisError, OSError, ValueError) as exc:
        log.warning(
            "cannot note activity", conversation_id=conversation_id, kind=kind, error=str(exc)
        )


# cancellation ----------------------------------------------------------------------------


class Cancellation:
    """Stop requests: a key per conversation holding the id of the turn to stop."""

    def __init__(self, redis: aioredis.Redis, *, keys: Keys = DEFAULT_KEYS, ttl_s: float = 600):
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(ttl_s * 1000)

    async def request(self, conversation_id: str, turn_id: str | None = None) -> str | None:
        """Ask the worker to stop ``turn_id`` (default: the turn in flight); return its id."""
        if turn_id is None:
            holder = await self.redis.get(self.keys.turn(conversation_id))
            if holder is None:
                return None
            turn_id = _str(holder)
        await self.redis.set(self.keys.cancel(conversation_id), turn_id, px=self.ttl_ms)
        log.info("cancel requested", conversation_id=conversation_id, turn_id=turn_id)
        return turn_id

    async def is_cancelled(self, conversation_id: str, turn_id: str) -> bool:
        value = await self.redis.get(self.keys.cancel(conversation_id))
        return value is not None and _str(value) == turn_id

    async def cancelled(self, turns: Iterable[tuple[str, str]]) -> set[str]:
        """Of the ``(conversation_id, turn_id)`` pairs, the turn ids to stop; one round trip."""
        pairs = list(turns)
        if not pairs:
            return set()
        # GETs in a pipeline, not MGET: the keys live in different cluster slots.
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation_id, _ in pairs:
                pipe.get(self.keys.cancel(conversation_id))
            values = await pipe.execute()
        return {
            turn_id
            for (_, turn_id), value in zip(pairs, values, strict=True)
            if value is not None and _str(value) == turn_id
        }
