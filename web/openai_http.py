"""The OpenAI-compatible API's I/O: ``/v1/...`` requests on the gateway's own port.

websockets parses only bodiless GET requests and answers each with one whole response, so
it can neither read a ``POST /v1/chat/completions`` body nor stream server-sent events.
aiohttp's low-level server does both. Both share the gateway's port: the connection class
handed to websockets (``api_connection``) reads the request line first and gives a
``/v1/`` request's socket to aiohttp (``asyncio.Transport.set_protocol``); every other
request (``/ws``, the pages, probes) goes on to websockets untouched.

A chat request is a turn of a stored conversation, taken through the same
``ConversationService`` as a widget's message: stored, echoed and queued in one Redis step,
answered by any worker, relayed from the event log by the gateway's one fanout read. A
client that disconnects before the final cancels its turn (stored as cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from assistant.bus import heartbeat
from assistant.bus.schema import (
    DraftEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from assistant.core.log import bind_turn
from assistant.store.tables import KeyKind, Owner
from web import auth
from web import openai_api as api
from web.client_ip import client_ip
from web.protocol import Channel, ErrorCode, Hello, ProtocolError, UserMessage
from web.service import ConversationService, GatewayOptions, Identity, derive_turn_id

log = structlog.get_logger(__name__)

# How long a request waits for its reply's final before giving up (504); a guard only.
REPLY_TIMEOUT_S = 300.0
_MAX_REQUEST_LINE = 8192
_JSON = "application/json"

# The gateway's answer to a plain request (the pages, probes, metrics); None for /ws.
OtherRoutes = Callable[[Request], Awaitable[Response | None]]


def _json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        body, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _error_response(error: api.ApiError) -> web.Response:
    return _json_response(error.status, error.body(), error.headers())


class _Turn:
    """One chat request's turn: its ids and the events that belong to it."""

    def __init__(self, conversation_id: str, turn_id: str) -> None:
        self.conversation_id = conversation_id
        self.turn_id = turn_id
        self.completion_id = f"chatcmpl-{turn_id}"
        self.created = int(time.time())


class OpenAIApi:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` of one gateway."""

    def __init__(
        self,
        service: ConversationService,
        options: GatewayOptions,
        other_routes: OtherRoutes | None = None,
    ) -> None:
        self.service = service
        self.options = options
        self.other_routes = other_routes
        self.closing = False
        self._cancels: set[asyncio.Task[Any]] = set()
        # handler_cancellation: a client that goes away cancels its handler at once, and
        # the handler cancels the turn (see _follow).
        self.server = web.Server(self._handle, handler_cancellation=True)

    def protocol(self) -> asyncio.Protocol:
        """A fresh aiohttp protocol for one connection."""
        return self.server()

    async def close(self, timeout_s: float = 2.0) -> None:
        """End every API connection (a stream in progress stops; its turn goes on)."""
        self.closing = True
        await self.server.shutdown(timeout_s)
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)

    # routing -------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        structlog.contextvars.bind_contextvars(api_request=uuid.uuid4().hex[:12])
        try:
            return await self._route(request)
        except api.ApiError as exc:
            return _error_response(exc)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            log.exception("API request failed on Redis or SQL", path=request.path)
            return _error_response(api.unavailable(f"temporarily unavailable: {exc}"))
        except Exception:
            log.exception("API request failed", path=request.path)
            return _error_response(
                api.ApiError(500, "internal error", type_="server_error", code="internal")
            )

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        if not request.path.startswith(api.API_PREFIX):
            return await self._other(request)
        path = request.path.rstrip("/")
        if path == "/v1/chat/completions":
            if request.method != "POST":
                raise api.ApiError(405, "use POST", code="method_not_allowed")
            who = await self._authenticate(request)
            return await self._chat(request, who)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if request.method != "GET":
                raise api.ApiError(405, "use GET", code="method_not_allowed")
            await self._authenticate(request)
            if path == "/v1/models":
                return _json_response(200, api.models_list())
            if path.removeprefix("/v1/models/") != api.MODEL:
                raise api.not_found("no such model", "model_not_found")
            return _json_response(200, api.model_view())
        raise api.not_found(f"no route {request.method} {request.path}", "unknown_url")

    async def _other(self, request: web.BaseRequest) -> web.StreamResponse:
        """A later request on a kept-alive API connection that is not for the API (a load
        balancer reusing its upstream connections): the gateway answers it as websockets
        would have, so a connection's first request does not decide what it may ask next."""
        if self.other_routes is None or request.method != "GET":
            raise api.not_found(f"no route {request.method} {request.path}", "unknown_url")
        answer = await self.other_routes(Request(request.path_qs, Headers(request.headers.items())))
        if answer is None:  # /ws: an upgrade needs a connection of its own
            raise api.ApiError(400, "open a new connection for /ws", code="upgrade_required")
        headers = [(k, v) for k, v in answer.headers.raw_items() if k.lower() != "content-length"]
        return web.Response(status=answer.status_code, body=answer.body, headers=headers)

    async def _authenticate(self, request: web.BaseRequest) -> Identity:
        """The per-address rate limit (every request), the secret key, its rate limit."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        address = str(peer[0]) if peer else ""
        forwarded = request.headers.getall("X-Forwarded-For", [])
        ip = client_ip(address, forwarded, self.options.trusted_proxies)
        wait = await self.service.rate_limit("ip", ip, self.options.ip_bucket)
        if wait:
            raise api.rate_limited(wait)
        key = api.bearer_key(request.headers.get("Authorization"))
        row = await self.service.store.authenticate(key)
        # Secret keys only: a public key lives in pages, an operator key is a person's.
        if row is None or row.kind is not KeyKind.SECRET:
            raise api.unauthorized()
        wait = await self.service.rate_limit("key", row.prefix, self.options.key_bucket)
        if wait:
            raise api.rate_limited(wait)
        structlog.contextvars.bind_contextvars(tenant_id=row.tenant_id)
        return Identity(row.tenant_id, Channel.WIDGET, row.prefix)

    # chat completions ----------------------------------------------------------------------

    async def _chat(self, request: web.BaseRequest, who: Identity) -> web.StreamResponse:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:  # over 1 MiB, aiohttp's default
            raise api.ApiError(413, "the body is too large", code="too_large") from None
        chat = api.parse_chat_request(raw, request.headers.get(api.CONVERSATION_HEADER))
        if chat.model != api.MODEL:
            raise api.not_found(
                f"no model {chat.model[:64]!r}: GET /v1/models lists {api.MODEL!r}",
                "model_not_found",
                "model",
            )
        if not await heartbeat.alive(self.service.bus.redis, self.service.bus.keys):
            raise api.unavailable("no worker is ready: try again shortly", code="no_worker")
        conversation_id, after = await self._open(who, chat.conversation_id)
        client_id = f"api-{uuid.uuid4().hex[:24]}"
        turn = _Turn(conversation_id, derive_turn_id(conversation_id, client_id))
        with bind_turn(conversation_id, turn.turn_id):
            fanout = self.service.bus.fanout
            follower = fanout.follow(conversation_id, after)
            try:
                try:
                    await self.service.user_message(
                        who, conversation_id, UserMessage(id=client_id, text=chat.text)
                    )
                except ProtocolError as exc:
                    raise _api_error(exc) from None
                log.info("API turn submitted", stream=chat.stream)
                async with contextlib.aclosing(self._follow(turn, follower.events())) as events:
                    if chat.stream:
                        return await self._stream(request, chat, turn, events)
                    return await self._complete(turn, events)
            except (asyncio.CancelledError, ConnectionResetError):
                # The client went away before the final: stop its reply (the worker stores
                # it as cancelled). A gateway shutting down leaves its turns running.
                if not self.closing:
                    log.info("API client went away; cancelling its turn")
                    self._cancel(turn)
                raise
            finally:
                fanout.unfollow(follower)

    async def _open(self, who: Identity, conversation_id: str | None) -> tuple[str, int]:
        """The conversation to continue (the tenant's, a support one, the bot's) or a new
        one; and the seq to follow its events after."""
        token = (
            auth.conversation_token(self.service.secret, who.tenant_id, conversation_id)
            if conversation_id
            else None
        )
        hello = Hello(
            key="",
            channel=Channel.WIDGET,
            conversation_id=conversation_id,
            conversation_token=token,
        )
        try:
            opened = await self.service.open_conversation(who, hello)
        except ProtocolError as exc:
            raise _api_error(exc) from None
        conversation = opened.conversation
        if str(conversation.channel) != Channel.WIDGET.value:
            raise api.invalid(
                f"conversation {conversation.id} is a {conversation.channel} conversation; "
                "this API continues support conversations only",
                api.CONVERSATION_FIELD,
            )
        if conversation.owner is not Owner.BOT:
            raise api.ApiError(
                409,
                "an operator has taken this conversation over: the assistant does not reply",
                code="conversation_taken_over",
                param=api.CONVERSATION_FIELD,
            )
        return conversation.id, opened.last_seq

    async def _follow(
        self, turn: _Turn, events: AsyncIterator[Event]
    ) -> AsyncGenerator[Event, None]:
        """The turn's events up to its final (or its turn_failed error); 504 after
        ``REPLY_TIMEOUT_S`` (the turn is cancelled then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_TIMEOUT_S
        while True:
            try:
                event = await asyncio.wait_for(anext(events), max(0.0, deadline - loop.time()))
            except TimeoutError:
                self._cancel(turn)
                raise api.ApiError(
                    504, "the reply did not come in time", type_="server_error", code="timeout"
                ) from None
            if event.turn_id != turn.turn_id:
                continue
            yield event
            if isinstance(event, FinalEvent | ErrorEvent):
                return

    def _cancel(self, turn: _Turn) -> None:
        # A task of its own: the caller is being cancelled, the request must still go out.
        task = asyncio.get_running_loop().create_task(
            self.service.bus.cancellation.request(turn.conversation_id, turn.turn_id)
        )
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _complete(self, turn: _Turn, events: AsyncIterator[Event]) -> web.Response:
        tool_calls: list[dict[str, Any]] = []
        calls: dict[str, dict[str, Any]] = {}
        async for event in events:
            if isinstance(event, ToolCallEvent):
                entry: dict[str, Any] = {
                    "call_id": event.call_id,
                    "name": event.name,
                    "arguments": event.arguments,
                    "round": event.round,
                }
                calls[event.call_id or event.name] = entry
                tool_calls.append(entry)
            elif isinstance(event, ToolResultEvent):
                called = calls.get(event.call_id or event.name)
                if called is not None:
                    called.update(
                        status=event.status, result=event.result, error=event.error, ms=event.ms
                    )
            elif isinstance(event, ErrorEvent):
                raise _turn_failed(event)
            elif isinstance(event, FinalEvent):
                body = api.completion(
                    completion_id=turn.completion_id,
                    created=turn.created,
                    text=event.text,
                    status=event.status,
                    usage=event.usage,
                    conversation_id=turn.conversation_id,
                    message_id=event.message_id,
                    tool_calls=tool_calls,
                )
                return _json_response(200, body, {api.CONVERSATION_HEADER: turn.conversation_id})
        raise api.unavailable("the reply's events ended early")  # pragma: no cover

    async def _stream(
        self,
        request: web.BaseRequest,
        chat: api.ChatRequest,
        turn: _Turn,
        events: AsyncIterator[Event],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                api.CONVERSATION_HEADER: turn.conversation_id,
            },
        )
        await response.prepare(request)
        ids = (turn.completion_id, turn.created, turn.conversation_id)
        await response.write(api.sse(api.chunk(*ids, {"role": "assistant", "content": ""})))
        try:
            await self._relay(response, chat, turn, events)
        except api.ApiError as exc:  # after the headers: the error is the stream's last event
            await response.write(api.sse(exc.body()))
        await response.write(api.SSE_DONE)
        await response.write_eof()
        return response

    async def _relay(
        self,
        response: web.StreamResponse,
        chat: api.ChatRequest,
        turn: _Turn,
        events: AsyncIterator[Event],
    ) -> None:
        ids = (turn.completion_id, turn.created, turn.conversation_id)
        text = api.CommittedText()
        async for event in events:
            if isinstance(event, DraftEvent):
                delta = text.draft(event.text, event.round)
                extra: dict[str, Any] = {}
                if chat.drafts:
                    extra["draft"] = {
                        "text": event.text,
                        "step": event.step,
                        "round": event.round,
                        "revised": event.revised,
                    }
                if delta or extra:
                    await response.write(
                        api.sse(api.chunk(*ids, {"content": delta} if delta else {}, **extra))
                    )
            elif isinstance(event, ToolCallEvent | ToolResultEvent):
                fields = event.to_dict()
                for name in ("type", "conversation_id", "turn_id", "seq"):
                    fields.pop(name, None)
                extension: dict[str, Any] = {event.TYPE: fields}
                await response.write(api.sse(api.chunk(*ids, None, **extension)))
            elif isinstance(event, ErrorEvent):
                await response.write(api.sse(_turn_failed(event).body()))
                break
            elif isinstance(event, FinalEvent):
                delta = text.final(event.text, event.status)
                final = {
                    "text": event.text,
                    "status": event.status,
                    "message_id": event.message_id,
                    "replaced": text.replaced,
                }
                await response.write(
                    api.sse(
                        api.chunk(
                            *ids,
                            {"content": delta} if delta else {},
                            finish=api.finish_reason(event.status),
                            final=final,
                        )
                    )
                )
                if chat.include_usage:
                    await response.write(api.sse(api.usage_chunk(*ids, event.usage)))
                break


def _api_error(exc: ProtocolError) -> api.ApiError:
    """A refusal of the conversation service as an HTTP error."""
    if exc.code is ErrorCode.NOT_FOUND:
        return api.not_found(exc.message, "conversation_not_found", api.CONVERSATION_FIELD)
    if exc.code in (ErrorCode.BUSY, ErrorCode.RATE_LIMITED):
        # Busy: the queue is full, or the reply this message cancelled has not stopped yet.
        # The message is stored (the conversation's history has it) without a reply.
        why = exc.message.split(";", 1)[0]
        return api.rate_limited(exc.retry_after or 1.0, f"the assistant is busy ({why}): retry")
    if exc.code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE):
        return api.invalid(exc.message)
    return api.ApiError(500, exc.message, type_="server_error", code=exc.code.value)


def _turn_failed(event: ErrorEvent) -> api.ApiError:
    return api.ApiError(
        500,
        event.message or "the reply could not be generated",
        type_="server_error",
        code=event.code,
    )


# sharing the gateway's port -------------------------------------------------------------


class _Detached:
    """What websockets' side of a handed-over connection sees instead of the socket: its
    handshake task ends on its own and its abort must not close aiohttp's connection."""

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def is_api_request(request_line: bytes) -> bool:
    """Whether an HTTP request line (``METHOD SP target SP version``) is for ``/v1/``."""
    parts = request_line.split(b" ")
    return len(parts) == 3 and parts[1].startswith(api.API_PREFIX.encode())


def api_connection(openai: OpenAIApi) -> type[ServerConnection]:
    """A websockets connection class that gives ``/v1/`` requests to ``openai``."""

    class Connection(ServerConnection):
        _head = b""
        _decided = False

        def data_received(self, data: bytes) -> None:
            if self._decided:
                super().data_received(data)
                return
            self._head += data
            end = self._head.find(b"\r\n")
            if end < 0 and len(self._head) < _MAX_REQUEST_LINE:
                return  # the request line is not complete yet
            self._decided = True
            head, self._head = self._head, b""
            if end >= 0 and is_api_request(head[:end]):
                self._hand_over(head)
            else:
                super().data_received(head)

        def _hand_over(self, head: bytes) -> None:
            transport = self.transport
            protocol = openai.protocol()
            self.transport = _Detached()  # type: ignore[assignment]
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            protocol.data_received(head)
            # websockets' handshake task waits for a request or the connection's end: end
            # it now (the socket lives on, aiohttp's).
            with contextlib.suppress(Exception):
                super().connection_lost(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if isinstance(self.transport, _Detached):
                return  # already ended at the hand-over
            super().connection_lost(exc)

    return Connection
