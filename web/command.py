"""``assistant gateway``: run one gateway process (an ``assistant.commands`` entry point)."""

from __future__ import annotations

import argparse
import asyncio

from assistant.app.options import require_redis, runtime_options
from assistant.core.config import Settings


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from web.gateway import run_gateway

    require_redis(settings)
    asyncio.run(run_gateway(settings))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "gateway",
        parents=[runtime_options()],
        help="run one gateway process (needs --redis-url)",
        description="Serve WebSocket clients, the pages, /healthz, /readyz and /metrics.",
    ).set_defaults(handler=cmd_gateway)
