"""The gateway process: HTTP health endpoints and the WebSocket endpoint on one port.

Protocol v1 (conversations over WebSocket) and the pages arrive with the gateway issue;
today the gateway answers health and readiness checks against the real Redis and SQL.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
from http import HTTPStatus

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from assistant.config import Settings
from assistant.db.engine import create_engine
from assistant.errors import UserError
from assistant.redis_conn import connect

log = structlog.get_logger(__name__)

WS_PATH = "/ws"
MAX_FRAME_BYTES = 64 * 1024

STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Diffusion assistant</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
code{background:#f2f2f2;padding:0 .2em}</style></head>
<body><h1>Diffusion assistant</h1>
<p>The gateway is running. Health: <a href="/healthz">/healthz</a>,
readiness (Redis and SQL): <a href="/readyz">/readyz</a>.</p>
<p>WebSocket endpoint: <code>/ws</code>.</p></body></html>
"""


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class Gateway:
    """One gateway process: owns its Redis client, SQL engine and listening socket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect(settings.redis_url)
        self.engine: AsyncEngine = create_engine(settings.effective_database_url)

    async def readiness(self) -> dict[str, str]:
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
        return checks

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        if path == "/readyz":
            checks = await self.readiness()
            ready = all(v == "ok" for v in checks.values())
            body = json.dumps({"ready": ready, **checks}).encode()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, body, "application/json")
        if path in ("/", "/index.html"):
            return _response(HTTPStatus.OK, STATUS_PAGE.encode(), "text/html; charset=utf-8")
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    async def handle(self, connection: ServerConnection) -> None:
        await connection.send(
            json.dumps(
                {
                    "type": "error",
                    "code": "unavailable",
                    "message": "conversations are not served by this version of the gateway",
                }
            )
        )
        await connection.close(1013, "try again later")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            server = await serve(
                self.handle,
                self.settings.host,
                self.settings.port,
                process_request=self.process_request,
                max_size=MAX_FRAME_BYTES,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {self.settings.port} is already in use: choose another with --port"
                ) from None
            raise UserError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}"
            ) from None
        log.info("gateway listening", host=self.settings.host, port=self.settings.port)
        async with server:
            await stop.wait()
            log.info("gateway stopping")
        await self.redis.aclose()
        await self.engine.dispose()


async def run_gateway(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await Gateway(settings).run(stop)
