"""Conversation tokens, origins, the deployment secret, static files and the demo keys."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assistant.demo.load import (
    DEMO_KEYS_FILE,
    demo_public_key,
    ensure_demo_keys,
    load_demo,
    read_demo_keys,
)
from assistant.store.database import create_engine
from assistant.store.repository import Repository
from assistant.store.tables import KeyKind
from assistant.tools.registry import TOOLS, tool_labels
from web import auth, static


def test_tokens_bind_tenant_and_conversation() -> None:
    """A token opens its own conversation only, under its own secret only."""
    token = auth.conversation_token(b"s", "ten", "conv")
    assert auth.token_matches(b"s", "ten", "conv", token)
    assert not auth.token_matches(b"s", "ten", "other", token)
    assert not auth.token_matches(b"s", "other", "conv", token)
    assert not auth.token_matches(b"t", "ten", "conv", token)
    assert not auth.token_matches(b"s", "ten", "conv", None)


def test_origins() -> None:
    """An empty list allows all; otherwise exact origins, case and trailing slash aside."""
    assert auth.origin_allowed([], None)
    assert auth.origin_allowed(["https://Shop.example/"], "https://shop.example")
    assert not auth.origin_allowed(["https://shop.example"], "https://shop.example.evil")
    assert not auth.origin_allowed(["https://shop.example"], None)


def test_secret_is_made_once_and_private(tmp_path: Path) -> None:
    """Without a setting the secret is generated once, mode 0600, and then reused."""
    first = auth.load_secret("", tmp_path)
    assert len(first) == 64 and auth.load_secret("", tmp_path) == first
    assert stat.S_IMODE((tmp_path / auth.SECRET_FILE).stat().st_mode) == 0o600
    assert auth.load_secret("configured", tmp_path) == b"configured"


def test_static_resolve_refuses_everything_outside(tmp_path: Path) -> None:
    """Only listed suffixes, plain names, inside the directory."""
    (tmp_path / "a.js").write_text("1")
    (tmp_path / "notes.txt").write_text("1")
    assert static.resolve(tmp_path, "a.js") == (tmp_path / "a.js").resolve()
    for bad in ("../a.js", "notes.txt", ".a.js", "a.js/", "", "/a.js", "a..js/../a.js"):
        assert static.resolve(tmp_path, bad) is None, bad


def test_widget_gets_every_registered_tools_label() -> None:
    """The widget's labels come from the tool registry, one per tool, and stay valid JS."""
    served = static.load("/static/widget.js", "pk_x", tool_labels=tool_labels())
    assert served is not None
    body = served.body.decode()
    assert "{{TOOL_LABELS}}" not in body
    start = body.index("var TOOL_LABELS = ") + len("var TOOL_LABELS = ")
    labels = json.loads(body[start : body.index(";", start)])
    assert labels == {name: tool.label for name, tool in TOOLS.items()}
    assert all(labels.values())


def test_demo_public_key_prefers_the_setting(tmp_path: Path) -> None:
    """The setting wins; else demo-keys.json; else empty."""
    assert demo_public_key("", tmp_path) == ""
    (tmp_path / DEMO_KEYS_FILE).write_text(json.dumps({"public_key": "pk_file"}))
    assert demo_public_key("", tmp_path) == "pk_file"
    assert demo_public_key("pk_env", tmp_path) == "pk_env"


@pytest.fixture
async def any_store(db_url: str) -> AsyncIterator[Repository]:
    """A store on each SQL backend (PostgreSQL skipped where unreachable)."""
    store = Repository(create_engine(db_url))
    yield store
    await store.close()


async def test_demo_keys_are_made_once(any_store: Repository, tmp_path: Path) -> None:
    """Demo loading makes a public key and an operator key once, in a 0600 file."""
    store = any_store
    tenant_id, _added = await load_demo(store.engine)
    keys = await ensure_demo_keys(store.engine, tenant_id, tmp_path)
    path = tmp_path / DEMO_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_demo_keys(tmp_path) == keys
    public = await store.authenticate(keys.public_key)
    operator = await store.authenticate(keys.operator_key)
    assert public is not None and public.kind is KeyKind.PUBLIC and public.tenant_id == tenant_id
    assert operator is not None and operator.kind is KeyKind.OPERATOR
    assert await ensure_demo_keys(store.engine, tenant_id, tmp_path) == keys
    assert len(await store.list_keys(tenant_id)) == 2
    # A revoked key is replaced; the operator stays the same person.
    await store.revoke_key(public.prefix)
    renewed = await ensure_demo_keys(store.engine, tenant_id, tmp_path)
    assert renewed.public_key != keys.public_key and renewed.operator_key == keys.operator_key
    path.unlink()  # a lost file: new keys for the same demo operator
    again = await ensure_demo_keys(store.engine, tenant_id, tmp_path)
    again_row = await store.authenticate(again.operator_key)
    assert again_row is not None and again_row.operator_id == operator.operator_id


def test_demo_load_command_writes_the_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`assistant demo load` makes the demo keys file and prints the operator key."""
    from assistant.app.cli import main

    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    data = tmp_path / "data"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["db", "upgrade", "--database-url", url]) == 0
        assert main(["demo", "load", "--database-url", url, "--data-dir", str(data)]) == 0
        keys = read_demo_keys(data)
        assert keys is not None and keys.operator_key in capsys.readouterr().out
        assert main(["demo", "load", "--database-url", url, "--data-dir", str(data)]) == 0
        assert read_demo_keys(data) == keys
    finally:  # main() points logging at this test's captured stderr: undo that
        root.handlers[:] = handlers
        root.setLevel(level)
