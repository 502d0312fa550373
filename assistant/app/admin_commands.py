"""Administration commands: database migrations, tenants, API keys, operators, the demo store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from assistant.app.options import database_options, run_async, with_store
from assistant.core.config import Settings
from assistant.store.tables import KeyKind


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


def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.create_tenant(args.name, args.origin or [])
        print(f"created tenant {tenant.name} (id {tenant.id})")
        return 0

    return run_async(with_store(settings, action))


def cmd_tenants_list(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        for tenant in await store.list_tenants():
            origins = ", ".join(tenant.allowed_origins) or "-"
            print(f"{tenant.name}\t{tenant.id}\torigins: {origins}")
        return 0

    return run_async(with_store(settings, action))


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

    return run_async(with_store(settings, action))


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        tenant = await store.get_tenant(args.tenant)
        for row in await store.list_keys(tenant.id):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            print(f"{row.prefix}\t{row.kind}\t{state}\t{row.label}")
        return 0

    return run_async(with_store(settings, action))


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: Any) -> int:
        row = await store.revoke_key(args.prefix)
        print(f"revoked key {row.prefix}")
        return 0

    return run_async(with_store(settings, action))


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

    return run_async(with_store(settings, action))


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

    return run_async(with_store(settings, action))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add db, tenants, keys, operators and demo to the command line."""
    database = database_options()
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
