"""One WebSocket connection: read frames, apply the protocol, relay events, write frames.

Three kinds of tasks per connection: the reader (this session's ``run``: frames are handled
one at a time, in the order sent), one writer draining the outbound queue, and followers
that copy the event log of a conversation (or the tenant's activity) into the queue. Every
frame the server sends goes through the queue, so the order of the socket is the queue's.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from assistant.core.log import bind_turn
from web.client_ip import client_ip
from web.gateway_metrics import GatewayMetrics
from web.protocol import (
    Cancel,
    Channel,
    ClientFrame,
    CloseCode,
    CloseView,
    ConnectionState,
    ErrorCode,
    Feedback,
    HandBack,
    Hello,
    NextExercise,
    Open,
    OperatorMessage,
    ProtocolError,
    State,
    Subscribe,
    TakeOver,
    UserMessage,
    console_ready_frame,
    conversation_list_frame,
    conversation_update_frame,
    encode,
    feedback_saved_frame,
    parse_frame,
    ready_frame,
)
from web.relay import Close, OutboundQueue
from web.service import ConversationService, GatewayOptions, Identity

log = structlog.get_logger(__name__)

_FLUSH_TIMEOUT_S = 5.0


class Session:
    def __init__(
        self,
        ws: ServerConnection,
        service: ConversationService,
        options: GatewayOptions,
        metrics: GatewayMetrics,
    ) -> None:
        self.ws = ws
        self.service = service
        self.options = options
        self.metrics = metrics
        self.id = uuid.uuid4().hex[:12]
        self.state = ConnectionState()
        self.queue = OutboundQueue(options.max_queued_frames, metrics.coalesced)
        self.who: Identity | None = None
        self.conversation_id: str | None = None  # widget and tutor: the one conversation
        self.followers: dict[str, asyncio.Task[None]] = {}
        self.activity: asyncio.Task[None] | None = None
        address = ws.remote_address
        forwarded = ws.request.headers.get_all("X-Forwarded-For") if ws.request else []
        # The address the per-address rate limit counts: behind a trusted load balancer,
        # the client it forwards, not the balancer (else all its clients share one bucket).
        self.ip = client_ip(str(address[0]) if address else "", forwarded, options.trusted_proxies)

    # the connection's life ------------------------------------------------------------------

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(connection_id=self.id)
        writer = asyncio.create_task(self._write(), name=f"writer-{self.id}")
        log.info("connection opened", ip=self.ip)
        try:
            await self._hello_phase()
            while self.state.state is State.READY and not self.queue.closing:
                await self._receive(await self.ws.recv())
        except ConnectionClosed:
            pass
        finally:
            self.state.close()
            tasks = [*self.followers.values(), *([self.activity] if self.activity else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.queue.closing:  # let the writer send the last error and the close
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), _FLUSH_TIMEOUT_S)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            log.info("connection closed", code=self.ws.close_code)

    async def _hello_phase(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.options.hello_timeout_s
        while self.state.state is State.UNAUTHENTICATED and not self.queue.closing:
            try:
                async with asyncio.timeout_at(deadline):
                    raw = await self.ws.recv()
            except TimeoutError:
                self._fail(
                    ProtocolError(
                        ErrorCode.AUTH_TIMEOUT,
                        f"no hello within {self.options.hello_timeout_s:g} s",
                    )
                )
                return
            await self._receive(raw)

    async def _write(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, Close):
                await self.ws.close(item.code, item.reason)
                return
            try:
                text = encode(item)
            except (TypeError, ValueError):  # a bug upstream must not silence the socket
                log.exception("frame cannot be encoded; skipped", frame_type=item.get("type"))
                continue
            await self.ws.send(text)
            self.metrics.frames_out += 1
            if item.get("type") == "error":
                self.metrics.errors[str(item.get("code"))] += 1

    def _fail(self, error: ProtocolError) -> None:
        """Send the error; close the connection when the error is a closing one."""
        self.queue.put(error.frame())
        if error.close_code is not None:
            log.info("closing connection", code=error.code.value, reason=error.message)
            self.queue.close(error.close_code, error.code.value)

    # inbound --------------------------------------------------------------------------------

    async def _receive(self, raw: str | bytes) -> None:
        self.metrics.frames_in += 1
        frame: ClientFrame | None = None
        problem: ProtocolError | None = None
        try:
            frame = parse_frame(raw)
        except ProtocolError as exc:
            problem = exc
        try:
            # Every frame counts, bad ones too: garbage must not be a way around the limit.
            await self._rate_limit(getattr(frame, "id", None))
            if problem is not None:
                raise problem
            assert frame is not None
            self.state.check(frame)
            await self._dispatch(frame)
        except ProtocolError as exc:
            self._fail(exc)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            log.exception("frame failed on Redis or SQL", frame=getattr(frame, "TYPE", None))
            self._fail(ProtocolError(ErrorCode.INTERNAL, f"temporarily unavailable: {exc}"))
        except Exception:
            log.exception("frame failed", frame=getattr(frame, "TYPE", None))
            self._fail(ProtocolError(ErrorCode.INTERNAL, f"internal error (connection {self.id})"))

    async def _rate_limit(self, ref: Any) -> None:
        ref = ref if isinstance(ref, str) else None
        wait = await self.service.rate_limit("ip", self.ip, self.options.ip_bucket)
        if not wait and self.who is not None:
            wait = await self.service.rate_limit(
                "key", self.who.key_prefix, self.options.key_bucket
            )
        if wait:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "too many frames: slow down", ref=ref, retry_after=wait
            )

    async def _dispatch(self, frame: ClientFrame) -> None:
        if isinstance(frame, Hello):
            await self._hello(frame)
            return
        who = self.who
        assert who is not None
        conversation_id = getattr(frame, "conversation_id", None)
        if conversation_id is not None:  # console frames name their conversation
            with bind_turn(conversation_id):
                await self._console(who, frame)
            return
        if isinstance(frame, UserMessage | Cancel | Feedback | NextExercise):
            own = self.conversation_id  # widget and tutor: the hello's conversation
            assert own is not None
            if isinstance(frame, UserMessage):
                await self.service.user_message(who, own, frame)
            elif isinstance(frame, Cancel):
                await self.service.cancel(own)
            elif isinstance(frame, Feedback):
                await self.service.feedback(own, frame)
                self.queue.put(feedback_saved_frame(frame.message_id, frame.rating))
            else:
                await self.service.next_exercise(who, own, frame.kind)
        elif isinstance(frame, Subscribe):
            await self._subscribe(who)

    async def _console(self, who: Identity, frame: ClientFrame) -> None:
        if isinstance(frame, Open):
            history, after = await self.service.history(
                who, frame.conversation_id, frame.resume_from
            )
            self._stop_following(frame.conversation_id)
            self.queue.put(history)
            self._follow(frame.conversation_id, after)
        elif isinstance(frame, CloseView):
            self._stop_following(frame.conversation_id)
        elif isinstance(frame, TakeOver):
            await self.service.take_over(who, frame.conversation_id)
        elif isinstance(frame, HandBack):
            await self.service.hand_back(who, frame.conversation_id)
        elif isinstance(frame, OperatorMessage):
            await self.service.operator_message(who, frame)

    async def _hello(self, hello: Hello) -> None:
        origin = self.ws.request.headers.get("Origin") if self.ws.request else None
        who = await self.service.authenticate(hello, origin)
        if who.channel is Channel.CONSOLE:
            assert who.operator_id is not None
            self.state.authenticated(who.channel)
            self.who = who
            structlog.contextvars.bind_contextvars(
                tenant_id=who.tenant_id, operator_id=who.operator_id
            )
            self.queue.put(console_ready_frame(who.tenant_id, who.operator_id, who.operator_name))
            log.info("console ready")
            return
        opened = await self.service.open_conversation(who, hello)
        conversation = opened.conversation
        self.state.authenticated(who.channel)
        self.who = who
        self.conversation_id = conversation.id
        structlog.contextvars.bind_contextvars(
            tenant_id=who.tenant_id, conversation_id=conversation.id
        )
        self.queue.put(
            ready_frame(
                who.channel,
                conversation_id=conversation.id,
                conversation_token=opened.token,
                owner=str(conversation.owner),
                last_seq=opened.last_seq,
                messages=opened.messages,
            )
        )
        self._follow(conversation.id, opened.after)
        log.info("conversation ready", after=opened.after, last_seq=opened.last_seq)

    # followers ------------------------------------------------------------------------------

    def _follow(self, conversation_id: str, after: int) -> None:
        self.followers[conversation_id] = asyncio.create_task(
            self._relay_events(conversation_id, after), name=f"follow-{conversation_id}"
        )

    def _stop_following(self, conversation_id: str) -> None:
        task = self.followers.pop(conversation_id, None)
        if task is not None:
            task.cancel()

    async def _relay_events(self, conversation_id: str, after: int) -> None:
        """Every event with seq > ``after``, once each and in order, until cancelled."""
        fanout = self.service.bus.fanout
        follower = fanout.follow(conversation_id, after)
        try:
            async for event in follower.events():
                if self.queue.closing or not self.queue.put(event.to_dict()):
                    return
                # Let the writer take it: drafts coalesce only when the socket is slow, not
                # because a replay put a hundred events into the queue at once.
                await asyncio.sleep(0)
        finally:
            fanout.unfollow(follower)

    async def _subscribe(self, who: Identity) -> None:
        if self.activity is not None:
            self.activity.cancel()
        # The stream's position first, then the list: a change in between shows up twice,
        # never not at all.
        after = await self.service.bus.activity.last_id(who.tenant_id)
        self.queue.put(conversation_list_frame(await self.service.conversation_list(who)))
        self.activity = asyncio.create_task(self._relay_activity(who, after), name="activity")

    async def _relay_activity(self, who: Identity, after: str) -> None:
        activity = self.service.bus.activity
        while not self.queue.closing:
            try:
                batch = await activity.read_after(
                    who.tenant_id, after, block_ms=self.options.follow_block_ms
                )
                if not batch:
                    continue
                after = batch[-1].stream_id
                for conversation_id in dict.fromkeys(a.conversation_id for a in batch):
                    entry = await self.service.conversation_entry(who, conversation_id)
                    if entry is not None:
                        self.queue.put(conversation_update_frame(entry))
            except (RedisError, SQLAlchemyError, OSError) as exc:
                log.warning("cannot relay activity; retrying", error=str(exc))
                await asyncio.sleep(1.0)


async def serve_connection(
    ws: ServerConnection,
    service: ConversationService,
    options: GatewayOptions,
    metrics: GatewayMetrics,
) -> None:
    metrics.connections_total += 1
    metrics.connections_open += 1
    try:
        await Session(ws, service, options, metrics).run()
    finally:
        metrics.connections_open -= 1


__all__ = ["CloseCode", "Session", "serve_connection"]
