"""``assistant worker``: run one worker process (an ``assistant.commands`` entry point)."""

from __future__ import annotations

import argparse
import asyncio

from assistant.app.options import require_redis, runtime_options
from assistant.core.config import Settings


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.agent.decoding import check_decoding_mode
    from workers.main import run_worker

    check_decoding_mode(settings.decoding_mode)
    require_redis(settings)
    asyncio.run(run_worker(settings))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "worker",
        parents=[runtime_options()],
        help="run one worker process (needs --redis-url)",
        description="Take turns from the Redis stream and generate replies with the model.",
    ).set_defaults(handler=cmd_worker)
