"""The ``assistant`` command: run the system, manage the database, tenants, keys, operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from assistant.core.config import LOG_FORMATS, LOG_LEVELS, Settings
from assistant.core.errors import UserError
from assistant.core.log import configure_logging
from assistant.lab.corpus.build import PASTE_SHARE
from assistant.store.tables import KeyKind

Handler = Callable[[argparse.Namespace, Settings], int]


def _logging_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format", choices=LOG_FORMATS, help="default: auto ($ASSISTANT_LOG_FORMAT)"
    )
    group.add_argument(
        "--log-level", choices=LOG_LEVELS, help="default: info ($ASSISTANT_LOG_LEVEL)"
    )
    return parser


def _database_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, parents=[_logging_options()])
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db "
        "(default: a SQLite file in the data directory; $ASSISTANT_DATABASE_URL)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="local state directory (default: ./data; $ASSISTANT_DATA_DIR)",
    )
    return parser


def _runtime_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, parents=[_database_options()])
    group = parser.add_argument_group("services")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis URL, e.g. redis://host:6379/0 (default: start an embedded redis-server; "
        "$ASSISTANT_REDIS_URL)",
    )
    group.add_argument(
        "--model-path",
        metavar="DIR",
        help="checkpoint directory (default: the bundled model; $ASSISTANT_MODEL_PATH)",
    )
    group.add_argument(
        "--device",
        help="torch device: auto, cpu, cuda, cuda:1 ... (default: auto; $ASSISTANT_DEVICE)",
    )
    group.add_argument("--host", help="address to listen on (default: 127.0.0.1; $ASSISTANT_HOST)")
    group.add_argument("--port", type=int, help="gateway port (default: 8765; $ASSISTANT_PORT)")
    group.add_argument(
        "--secret",
        metavar="TEXT",
        help="secret that signs conversation tokens, the same for every gateway (default: a "
        "random one kept in DATA_DIR/secret; prefer $ASSISTANT_SECRET, flags show in ps)",
    )
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


# Handlers ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.app.serve import serve

    return serve(settings, gateways=args.gateways, workers=args.workers)


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from web.gateway import run_gateway

    _require_redis(settings)
    asyncio.run(run_gateway(settings))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.agent.decoding import check_decoding_mode
    from workers.main import run_worker

    check_decoding_mode(settings.decoding_mode)
    _require_redis(settings)
    asyncio.run(run_worker(settings))
    return 0


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.demo.load import read_demo_keys
    from assistant.demo.shop import build_store
    from assistant.lab.loadtest.client import LoadOptions, run_with_idle
    from assistant.lab.loadtest.scenario import make_scripts, render

    key = args.key or settings.demo_public_key
    if not key:
        demo = read_demo_keys(settings.data_dir)
        if demo is None:
            raise UserError(
                f"no --key given and no demo keys in {settings.data_dir}: run 'assistant demo "
                "load' (or 'assistant serve') with this data directory, or pass --key pk_..."
            )
        key = demo.public_key
    if args.clients < 0 or args.turns < 1 or args.idle < 0:
        raise UserError("--clients and --idle must be 0 or more and --turns at least 1")
    options = LoadOptions(
        urls=tuple(args.url or [f"ws://127.0.0.1:{settings.port}/ws"]),
        key=key,
        think_s=args.think,
        turn_timeout_s=args.turn_timeout,
        duration_s=args.duration,
    )
    orders = build_store().orders_in("heldout")
    scripts = make_scripts(args.clients, args.turns, orders, args.tutoring_share, args.seed)
    summary, memory = asyncio.run(run_with_idle(scripts, options, args.idle))
    text = render(summary, args.label)
    mib = {name: f"{value / 2**20:.0f} MiB" if value else "-" for name, value in memory.items()}
    text += (
        f"\n  gateway RSS            {mib['rss_start']} at start, {mib['rss_idle']} with "
        f"{args.idle} idle connections, {mib['rss_after_load']} after the load"
    )
    sys.stdout.write(text + "\n")
    if args.json:
        report = {"label": args.label, **summary.as_dict(), **memory, "idle": args.idle}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not summary.violations else 1


def _require_redis(settings: Settings) -> None:
    if not settings.redis_url:
        raise UserError(
            "this process needs a Redis URL: set ASSISTANT_REDIS_URL or --redis-url "
            "(or use 'assistant serve', which starts an embedded Redis)"
        )


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.store import migrate

    migrate.upgrade(settings.effective_database_url, args.revision)
    revision = migrate.current_revision(settings.effective_database_url)
    print(f"database at revision {revision or 'base (empty)'}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.store import migrate

    migrate.downgrade(settings.effective_database_url, args.revision)
    revision = migrate.current_revision(settings.effective_database_url)
    print(f"database at revision {revision or 'base (empty)'}")
    return 0


def cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.store import migrate

    print(migrate.current_revision(settings.effective_database_url) or "empty (no migrations)")
    return 0


async def _with_store(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from assistant.store import migrate
    from assistant.store.database import check_connection, create_engine
    from assistant.store.repository import Store

    engine = create_engine(settings.effective_database_url)
    store = Store(engine)
    try:
        await check_connection(engine)
        revision = await migrate.current_revision_async(settings.effective_database_url)
        if revision is None:
            raise UserError("the database has no schema yet: run 'assistant db upgrade' first")
        return await action(store)
    finally:
        await store.close()


def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.create_tenant(args.name, args.origin or [])
        print(f"created tenant {tenant.name} (id {tenant.id})")
        return 0

    return _run(_with_store(settings, action))


def cmd_tenants_list(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        for tenant in await store.list_tenants():
            origins = ", ".join(tenant.allowed_origins) or "-"
            print(f"{tenant.name}\t{tenant.id}\torigins: {origins}")
        return 0

    return _run(_with_store(settings, action))


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.get_tenant(args.tenant)
        row, plain = await store.create_key(tenant.id, KeyKind(args.kind), label=args.label)
        print(plain)
        sys.stderr.write(
            f"{row.kind} key {row.prefix} for tenant {tenant.name}: store it now, "
            "it is not shown again\n"
        )
        return 0

    return _run(_with_store(settings, action))


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.get_tenant(args.tenant)
        for row in await store.list_keys(tenant.id):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            print(f"{row.prefix}\t{row.kind}\t{state}\t{row.label}")
        return 0

    return _run(_with_store(settings, action))


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        row = await store.revoke_key(args.prefix)
        print(f"revoked key {row.prefix}")
        return 0

    return _run(_with_store(settings, action))


def cmd_operators_create(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.get_tenant(args.tenant)
        operator, plain = await store.create_operator(tenant.id, args.name, args.email)
        print(plain)
        sys.stderr.write(
            f"operator {operator.name} <{operator.email}> (id {operator.id}) created; "
            "the line above is their console key: store it now, it is not shown again\n"
        )
        return 0

    return _run(_with_store(settings, action))


def cmd_demo_load(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        from assistant.demo.load import DEMO_KEYS_FILE, ensure_demo_keys, load_demo

        tenant_id, added = await load_demo(store.engine)
        keys = await ensure_demo_keys(store.engine, tenant_id, settings.data_dir)
        print(
            f"demo tenant {tenant_id}: added {added['products']} products, "
            f"{added['articles']} articles, {added['orders']} orders"
        )
        print(
            f"demo keys (public key for the pages, operator key for the console) in "
            f"{settings.data_dir / DEMO_KEYS_FILE}"
        )
        print(f"demo operator key: {keys.operator_key}")
        return 0

    return _run(_with_store(settings, action))


def cmd_corpus_build(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from assistant.lab.corpus.build import build_corpus

    stats = build_corpus(
        Path(args.out),
        args.train,
        args.heldout,
        args.seed,
        augment=not args.no_augment,
        dev_dialogues=args.dev,
        entity_slots=not args.no_slots,
        paste_share=args.paste_share,
    )
    for split, figures in stats.items():
        print(
            f"{split}: {figures['dialogues']} dialogues, {figures['examples']} examples, "
            f"by domain {figures['domains']}"
        )
    print(f"written to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from assistant.agent.decoding import decoding_modes
    from assistant.checkpoints import model_dir, uses_entity_slots
    from assistant.lab.evaluation import (
        format_bad_input,
        format_table,
        run_evaluation,
        write_failures,
    )

    heldout = Path(args.heldout)
    if not heldout.is_file():
        raise UserError(
            f"no held-out dialogues at {heldout}: run 'assistant corpus build' first "
            "(or pass --heldout)"
        )
    path = model_dir(settings.model_path)
    if not (path / "config.json").is_file():
        raise UserError(f"no model checkpoint in {path} (set --model-path)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(decoding_modes())
    if unknown:
        raise UserError(
            f"unknown decoding mode(s) {', '.join(sorted(unknown))}: choose from "
            f"{', '.join(decoding_modes())}"
        )
    try:
        levels = [int(x) for x in args.concurrency.split(",")]
    except ValueError:
        raise UserError("--concurrency takes numbers separated by commas, e.g. 1,8") from None
    # Sweeps of the fast modes' settings; unset ones keep the served values.
    sweep = {
        name: value
        for name, value in (
            ("threshold", args.fast_threshold),
            ("revise_below", args.revise_below),
            ("block_size", args.fast_block),
        )
        if value is not None
    }
    reports, bad_reports = asyncio.run(
        run_evaluation(
            path,
            heldout,
            modes,
            args.limit,
            levels,
            args.speed_limit,
            entity_slots=uses_entity_slots(path, settings.entity_slots),
            bad_input=args.bad_input,
            known=decoding_modes(**sweep),
        )
    )
    print(format_table(reports))
    if bad_reports:
        print()
        print(format_bad_input(bad_reports))
    if args.dump:
        first = [r for r in reports if r.concurrency == levels[0]]
        count = write_failures(first, Path(args.dump))
        print(f"{count} failed turns written to {args.dump}")
    return 0


# Parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant",
        description="An instant chat assistant whose text generator is a diffusion language "
        "model. Every option can also be set with an ASSISTANT_* environment variable.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runtime, database = _runtime_options(), _database_options()

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

    commands.add_parser(
        "gateway",
        parents=[runtime],
        help="run one gateway process (needs --redis-url)",
        description="Serve WebSocket clients, the pages, /healthz, /readyz and /metrics.",
    ).set_defaults(handler=cmd_gateway)
    commands.add_parser(
        "worker",
        parents=[runtime],
        help="run one worker process (needs --redis-url)",
        description="Take turns from the Redis stream and generate replies with the model.",
    ).set_defaults(handler=cmd_worker)

    db = commands.add_parser("db", help="database migrations", description="Alembic migrations.")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        parents=[database],
        help="migrate up (default: to the newest revision)",
        description="Apply migrations up to REVISION (default head).",
    )
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    downgrade = db_commands.add_parser(
        "downgrade",
        parents=[database],
        help="migrate down to REVISION ('base' empties it)",
        description="Revert migrations down to REVISION; 'base' removes the whole schema.",
    )
    downgrade.add_argument("revision")
    downgrade.set_defaults(handler=cmd_db_downgrade)
    db_commands.add_parser(
        "current",
        parents=[database],
        help="print the database's revision",
        description="Print the revision the database is at.",
    ).set_defaults(handler=cmd_db_current)

    tenants = commands.add_parser(
        "tenants",
        help="create and list tenants",
        description="Tenants own conversations, keys and operators.",
    )
    tenant_commands = tenants.add_subparsers(
        dest="tenants_command", metavar="ACTION", required=True
    )
    create = tenant_commands.add_parser(
        "create", parents=[database], help="create a tenant", description="Create a tenant."
    )
    create.add_argument("name")
    create.add_argument(
        "--origin",
        action="append",
        metavar="URL",
        help="origin allowed to embed the widget, e.g. https://shop.example (repeatable)",
    )
    create.set_defaults(handler=cmd_tenants_create)
    tenant_commands.add_parser(
        "list", parents=[database], help="list tenants", description="List tenants."
    ).set_defaults(handler=cmd_tenants_list)

    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys are shown once and stored hashed.",
    )
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    key_create = key_commands.add_parser(
        "create",
        parents=[database],
        help="create a key and print it once",
        description="Create an API key for TENANT and print it once on stdout.",
    )
    key_create.add_argument("tenant", help="tenant name or id")
    key_create.add_argument(
        "--kind",
        choices=[KeyKind.PUBLIC.value, KeyKind.SECRET.value],
        default="public",
        help="public: embedded in the widget's page; secret: server to server (default public)",
    )
    key_create.add_argument("--label", default="", help="a note to recognise the key by")
    key_create.set_defaults(handler=cmd_keys_create)
    key_list = key_commands.add_parser(
        "list",
        parents=[database],
        help="list a tenant's keys (prefixes only)",
        description="List a tenant's keys by prefix; the keys themselves are never stored.",
    )
    key_list.add_argument("tenant", help="tenant name or id")
    key_list.set_defaults(handler=cmd_keys_list)
    revoke = key_commands.add_parser(
        "revoke",
        parents=[database],
        help="revoke a key by its prefix",
        description="Revoke the key with PREFIX (as printed by 'keys list', e.g. pk_1a2b3c4d).",
    )
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=cmd_keys_revoke)

    operators = commands.add_parser(
        "operators",
        help="create agent-console operators",
        description="Operators use the agent console.",
    )
    operator_commands = operators.add_subparsers(
        dest="operators_command", metavar="ACTION", required=True
    )
    op_create = operator_commands.add_parser(
        "create",
        parents=[database],
        help="create an operator and print their key once",
        description="Create an operator of TENANT and print their console key once.",
    )
    op_create.add_argument("tenant", help="tenant name or id")
    op_create.add_argument("--name", required=True)
    op_create.add_argument("--email", required=True)
    op_create.set_defaults(handler=cmd_operators_create)

    demo = commands.add_parser(
        "demo",
        help="the demo store (Northwind Outfitters)",
        description="The fictional store the support tools work on.",
    )
    demo_commands = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    demo_commands.add_parser(
        "load",
        parents=[database],
        help="load the demo store into the database",
        description="Create the demo tenant and load its catalog, help articles and orders "
        "(idempotent; serve does this on first run).",
    ).set_defaults(handler=cmd_demo_load)

    corpus = commands.add_parser(
        "corpus",
        help="training and evaluation data",
        description="Generated conversations for the bundled model.",
    )
    corpus_commands = corpus.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    build = corpus_commands.add_parser(
        "build",
        parents=[_logging_options()],
        help="generate the corpus files",
        description="Write train.jsonl, heldout.jsonl, heldout_dialogues.jsonl and "
        "added_words.json. Held-out templates and entity values never occur in training.",
    )
    build.add_argument(
        "--out", default="data/corpus", help="output directory (default data/corpus)"
    )
    build.add_argument(
        "--train", type=int, default=20000, help="training dialogues (default 20000)"
    )
    build.add_argument(
        "--heldout", type=int, default=1500, help="held-out dialogues (default 1500)"
    )
    build.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    build.add_argument(
        "--no-augment",
        action="store_true",
        help="leave training user turns as generated (no casing, punctuation, typo or "
        "filler noise); held-out turns are never augmented",
    )
    build.add_argument(
        "--dev",
        type=int,
        default=0,
        help="also write N dev dialogues from the training templates (another seed) to "
        "dev_dialogues.jsonl, for tuning decoding settings (default 0)",
    )
    build.add_argument(
        "--no-slots",
        action="store_true",
        help="write entities as their real values, not placeholders: the corpus of a model "
        'that copies them itself (train it with "entity_slots": false)',
    )
    build.add_argument(
        "--paste-share",
        type=float,
        default=PASTE_SHARE,
        metavar="P",
        help="share of training dialogues whose first message is buried in a long paste, "
        f"cut as serving cuts it (default {PASTE_SHARE}; 0 = none, the corpus before)",
    )
    build.set_defaults(handler=cmd_corpus_build)

    evaluate = commands.add_parser(
        "eval",
        parents=[_logging_options()],
        help="score a model on the held-out dialogues in every decoding mode",
        description="Replay held-out user turns through the agent loop (tools on the "
        "in-memory demo store) and print, per decoding mode side by side: tool selection, "
        "argument exact match, fact accuracy, tutoring verdicts, tokens/s, forward passes "
        "per token and latency percentiles.",
    )
    evaluate.add_argument("--model-path", metavar="DIR", help="checkpoint (default: bundled)")
    evaluate.add_argument(
        "--heldout",
        default="data/corpus/heldout_dialogues.jsonl",
        help="held-out dialogues (default data/corpus/heldout_dialogues.jsonl)",
    )
    evaluate.add_argument(
        "--modes",
        default="autoregressive,vanilla-diffusion,fast-diffusion,fast-diffusion+revision",
        help="comma-separated decoding modes (also: speculative)",
    )
    evaluate.add_argument("--limit", type=int, default=300, help="held-out turns (default 300)")
    evaluate.add_argument(
        "--concurrency",
        default="1,8",
        help="concurrency levels; accuracy uses the first (default 1,8)",
    )
    evaluate.add_argument(
        "--speed-limit",
        type=int,
        default=64,
        help="turns for the other concurrency levels (default 64)",
    )
    evaluate.add_argument(
        "--dump",
        metavar="FILE",
        help="write each failed turn (first concurrency level) as JSON lines to FILE",
    )
    evaluate.add_argument(
        "--fast-threshold",
        type=float,
        metavar="P",
        help="fast diffusion commits positions at this probability (default: the served one)",
    )
    evaluate.add_argument(
        "--fast-block",
        type=int,
        metavar="N",
        help="fast diffusion's block length in positions (default: the served one)",
    )
    evaluate.add_argument(
        "--revise-below",
        type=float,
        metavar="P",
        help="self-revision re-masks committed tokens whose probability fell below this "
        "(default: the served one)",
    )
    evaluate.add_argument(
        "--bad-input",
        type=int,
        default=20,
        metavar="N",
        help="also score N held-out turns of each bad-input case (prompt injection, unsafe, "
        "out of scope, not English, unknown or another customer's order, a question in a "
        "4,000-character message) per mode; 0 = off (default 20)",
    )
    evaluate.add_argument(
        "--entity-slots",
        choices=("auto", "on", "off"),
        help="entities as placeholders: auto follows the checkpoint's config.json "
        "(default; $ASSISTANT_ENTITY_SLOTS)",
    )
    evaluate.set_defaults(handler=cmd_eval)

    loadtest = commands.add_parser(
        "loadtest",
        parents=[_logging_options()],
        help="simulated clients holding scripted conversations against running gateways",
        description="Open N WebSocket clients on loopback gateways; each holds a scripted "
        "support or tutoring conversation (next message THINK seconds after each reply) "
        "and checks that every message and reply arrives exactly once. Prints time to "
        "first draft and to final (p50/p95/p99), turns/s, errors by code and, with --idle, "
        "the first gateway's memory while it holds that many silent connections.",
    )
    loadtest.add_argument(
        "--url",
        action="append",
        metavar="WS_URL",
        help="gateway WebSocket URL, repeatable (default ws://127.0.0.1:8765/ws)",
    )
    loadtest.add_argument(
        "--key", help="public key (default: the demo tenant's, from <data dir>/demo-keys.json)"
    )
    loadtest.add_argument("--data-dir", help="where demo-keys.json lives (default data)")
    loadtest.add_argument("--clients", type=int, default=50, help="conversations (default 50)")
    loadtest.add_argument("--turns", type=int, default=3, help="user turns each (default 3)")
    loadtest.add_argument(
        "--think", type=float, default=2.0, help="seconds between a reply and the next message"
    )
    loadtest.add_argument(
        "--tutoring-share", type=float, default=0.3, help="share of tutoring clients (0.3)"
    )
    loadtest.add_argument(
        "--duration", type=float, default=600, help="hard stop in seconds (default 600)"
    )
    loadtest.add_argument(
        "--turn-timeout", type=float, default=60, help="seconds before a turn counts as hanging"
    )
    loadtest.add_argument(
        "--idle", type=int, default=0, help="extra silent connections held open (default 0)"
    )
    loadtest.add_argument("--seed", type=int, default=1, help="script seed (default 1)")
    loadtest.add_argument("--label", default="", help="a name for this run in the report")
    loadtest.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    loadtest.set_defaults(handler=cmd_loadtest)
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
