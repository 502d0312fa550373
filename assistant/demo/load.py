"""Loading the demo store into SQL as the demo tenant (``assistant demo load``, first run).

Besides the store, the demo needs keys in plain text (the pages embed a public key, the
console wants an operator key) while the database keeps only hashes. ``ensure_demo_keys``
makes them once and writes them to ``<data_dir>/demo-keys.json`` (mode 0600); later runs
reuse the file while its keys still authenticate.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.demo.shop import DEMO_TENANT, build_shop
from assistant.store.database import session_factory
from assistant.store.repository import NotFound, Repository
from assistant.store.shop import SqlShop
from assistant.store.tables import KeyKind, Operator

DEMO_KEYS_FILE: Final = "demo-keys.json"
DEMO_OPERATOR_NAME: Final = "Demo Operator"
DEMO_OPERATOR_EMAIL: Final = "operator@demo.example"


async def load_demo(engine: AsyncEngine) -> tuple[str, dict[str, int]]:
    """Create the demo tenant if needed and add its store; return (tenant id, counts added)."""
    store = Repository(engine)
    try:
        tenant = await store.get_tenant(DEMO_TENANT)
    except NotFound:
        tenant = await store.create_tenant(DEMO_TENANT)
    added = await SqlShop(engine, store).load(tenant.id, build_shop())
    return tenant.id, added


@dataclass(frozen=True)
class DemoKeys:
    tenant_id: str
    public_key: str
    operator_key: str
    operator_name: str


def read_demo_keys(data_dir: Path) -> DemoKeys | None:
    try:
        data = json.loads((data_dir / DEMO_KEYS_FILE).read_text())
        return DemoKeys(**{name: str(data[name]) for name in DemoKeys.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


async def _key_valid(store: Repository, plain: str, tenant_id: str, kind: KeyKind) -> bool:
    row = await store.authenticate(plain) if plain else None
    return row is not None and row.tenant_id == tenant_id and row.kind is kind


async def ensure_demo_keys(engine: AsyncEngine, tenant_id: str, data_dir: Path) -> DemoKeys:
    """The demo tenant's public key and demo operator key, made once, kept in data_dir."""
    store = Repository(engine)
    known = read_demo_keys(data_dir)
    public = known.public_key if known and known.tenant_id == tenant_id else ""
    operator_key = known.operator_key if known and known.tenant_id == tenant_id else ""
    changed = False
    if not await _key_valid(store, public, tenant_id, KeyKind.PUBLIC):
        _row, public = await store.create_key(tenant_id, KeyKind.PUBLIC, label="demo pages")
        changed = True
    if not await _key_valid(store, operator_key, tenant_id, KeyKind.OPERATOR):
        async with session_factory(engine)() as session:
            operator = await session.scalar(
                select(Operator).where(
                    Operator.tenant_id == tenant_id, Operator.email == DEMO_OPERATOR_EMAIL
                )
            )
        if operator is None:
            _op, operator_key = await store.create_operator(
                tenant_id, DEMO_OPERATOR_NAME, DEMO_OPERATOR_EMAIL
            )
        else:
            _row, operator_key = await store.create_key(
                tenant_id, KeyKind.OPERATOR, label=DEMO_OPERATOR_EMAIL, operator_id=operator.id
            )
        changed = True
    keys = DemoKeys(tenant_id, public, operator_key, DEMO_OPERATOR_NAME)
    if changed or known != keys:
        _write_private(data_dir / DEMO_KEYS_FILE, json.dumps(asdict(keys), indent=2) + "\n")
    return keys


def demo_public_key(configured: str, data_dir: Path) -> str:
    """The key the pages embed: the setting, else the demo tenant's from demo-keys.json."""
    if configured:
        return configured
    try:
        data = json.loads((data_dir / DEMO_KEYS_FILE).read_text())
    except (OSError, ValueError):
        return ""
    value = data.get("public_key") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
