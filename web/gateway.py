"""The gateway process: protocol v1 on ``/ws``, the pages, /healthz, /readyz, /metrics, and
the OpenAI-compatible API under ``/v1/`` (web/openai_http.py, on the same port).

Any number of gateways run against the same Redis and SQL: a gateway holds sockets and
nothing else, so a client may reconnect to any of them. On SIGTERM it closes every socket
with 1012 (service restart), and clients resume elsewhere from their last seq.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
from http import HTTPStatus

import structlog
from sqlalchemy import text
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from assistant.bus import heartbeat
from assistant.bus.connection import connect
from assistant.bus.keys import Keys
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.demo.load import demo_public_key
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.tools.registry import tool_labels
from web import auth, static
from web.gateway_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from web.gateway_metrics import METRICS_PATHS, CountingLimiter, GatewayMetrics, exposition
from web.openai_http import OpenAIApi, api_connection
from web.protocol import READ_LIMIT_BYTES, WS_PATH, CloseCode
from web.service import Bus, ConversationService, GatewayOptions
from web.session import serve_connection

log = structlog.get_logger(__name__)

TEXT = "text/plain; charset=utf-8"


def _response(
    status: HTTPStatus, body: bytes, content_type: str, cache_control: str = "no-store"
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache_control),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class Gateway:
    """One gateway: its Redis client, SQL engine, listening socket and connections."""

    def __init__(self, settings: Settings, options: GatewayOptions | None = None) -> None:
        self.settings = settings
        self.options = options or GatewayOptions.from_settings(settings)
        self.redis = connect(
            settings.redis_url, socket_timeout_s=self.options.redis_socket_timeout_s
        )
        self.keys = Keys(settings.key_prefix)
        self.engine = create_engine(settings.effective_database_url)
        self.store = Repository(self.engine)
        self.metrics = GatewayMetrics()
        self.service = ConversationService(
            self.store,
            Bus(self.redis, self.keys, self.options),
            self.options,
            auth.load_secret(settings.secret, settings.data_dir),
        )
        # Frames and API requests refused by a rate limit count in /metrics.
        bus = self.service.bus
        bus.limiter = CountingLimiter(bus.limiter, self.metrics)  # type: ignore[assignment]
        self.static_dir = static.STATIC_DIR
        self.tool_labels = tool_labels()
        self.openai = OpenAIApi(
            self.service, self.options, lambda request: self.process_request(None, request)
        )
        self.server: Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "the gateway is not started"
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def readiness(self) -> dict[str, str]:
        """Each check's outcome ("ok" or what failed): Redis, SQL, and a live worker."""
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.redis.ping(), 2)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc}"
        try:
            async with asyncio.timeout(2), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc}"
        # Ready only when some worker has its model loaded and consumes turns: a message
        # sent before then would wait for the model to load.
        try:
            async with asyncio.timeout(2):
                workers = await heartbeat.alive(self.redis, self.keys)
            checks["workers"] = "ok" if workers else "none"
        except Exception as exc:
            checks["workers"] = f"error: {exc}"
        return checks

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", TEXT)
        if path == "/readyz":
            checks = await self.readiness()
            ready = all(v == "ok" for v in checks.values())
            body = json.dumps({"ready": ready, **checks}).encode()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, body, "application/json")
        if path in METRICS_PATHS:
            part = METRICS_PATHS[path]
            body = (await exposition(self.metrics, self.redis, self.keys, part)).encode()
            return _response(HTTPStatus.OK, body, METRICS_CONTENT_TYPE)
        public_key = demo_public_key(self.settings.demo_public_key, self.settings.data_dir)
        found = await asyncio.to_thread(
            static.load, path, public_key, self.static_dir, self.tool_labels
        )
        if found is not None:
            return _response(HTTPStatus.OK, found.body, found.content_type, found.cache_control)
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)

    async def handle(self, connection: ServerConnection) -> None:
        await serve_connection(connection, self.service, self.options, self.metrics)

    async def start(self) -> None:
        try:
            self.server = await serve(
                self.handle,
                self.settings.host,
                self.settings.port,
                process_request=self.process_request,
                create_connection=api_connection(self.openai),  # /v1/ goes to aiohttp
                max_size=READ_LIMIT_BYTES,  # over MAX_FRAME_BYTES: a too_large error frame
                ping_interval=self.options.ping_interval_s,
                ping_timeout=self.options.ping_timeout_s,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {self.settings.port} is already in use: choose another with --port"
                ) from None
            raise UserError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from None
        log.info("gateway listening", host=self.settings.host, port=self.port)

    async def close(self) -> None:
        """Close every socket with 1012 (clients reconnect elsewhere), then the clients."""
        if self.server is not None:
            open_count = len(self.server.connections)
            log.info("gateway stopping", connections=open_count)
            self.server.close(
                close_connections=True, code=CloseCode.SERVICE_RESTART, reason="service restart"
            )
            await self.openai.close()
            await self.server.wait_closed()
            self.server = None
        await self.service.close()
        await self.service.bus.fanout.close()
        await self.redis.aclose()
        await self.engine.dispose()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()


async def run_gateway(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await Gateway(settings).run(stop)
