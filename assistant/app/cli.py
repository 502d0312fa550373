"""The ``assistant`` command: its parser, put together from each package's commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from assistant.app import admin_commands, lab_commands
from assistant.app.options import Handler, Register, runtime_options
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.core.log import configure_logging

# The gateway and the worker live above assistant/ (web/, workers/): they add their own
# commands through this entry-point group instead of being imported from here.
COMMANDS_GROUP = "assistant.commands"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.app.serve import serve

    return serve(settings, gateways=args.gateways, workers=args.workers)


def _name(entry: EntryPoint) -> str:
    return entry.name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant",
        description="An instant chat assistant whose text generator is a diffusion language "
        "model. Every option can also be set with an ASSISTANT_* environment variable.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runtime = runtime_options()

    serve = commands.add_parser(
        "serve",
        parents=[runtime],
        help="run the whole system: migrations, Redis, gateways and workers",
        description="Apply migrations, start an embedded redis-server (unless --redis-url), "
        "then run gateway and worker processes until Ctrl-C.",
    )
    serve.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes (default 1), on consecutive ports from --port",
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(handler=cmd_serve)

    registers: list[Register] = [
        *(entry.load() for entry in sorted(entry_points(group=COMMANDS_GROUP), key=_name)),
        admin_commands.register,
        lab_commands.register,
    ]
    for register in registers:
        register(commands)
    return parser


SETTING_FLAGS = (
    "redis_url",
    "database_url",
    "data_dir",
    "model_path",
    "entity_slots",
    "device",
    "host",
    "port",
    "secret",
    "log_format",
    "log_level",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(**{name: getattr(args, name, None) for name in SETTING_FLAGS})
        configure_logging(settings.log_format, settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
