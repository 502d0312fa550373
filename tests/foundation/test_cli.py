"""The ``assistant`` command line, run as a real subprocess."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from assistant.store.migrate import alembic_config
from tests.foundation._processes import run_cli

HELP_PATHS = [
    [],
    ["serve"],
    ["gateway"],
    ["worker"],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "current"],
    ["tenants"],
    ["tenants", "create"],
    ["tenants", "list"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["operators"],
    ["operators", "create"],
    ["demo"],
    ["demo", "load"],
    ["corpus"],
    ["corpus", "build"],
    ["eval"],
    ["loadtest"],
]


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "assistant")
def test_every_command_has_help(path: list[str]) -> None:
    """--help works on every command and says what it does."""
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: assistant")
    assert len(result.stdout.splitlines()) > 3


def _assert_one_line_error(result: object, *fragments: str) -> None:
    returncode, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert returncode == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_tenant_and_key_lifecycle(tmp_path: Path) -> None:
    """Create a tenant, a key (printed once), an operator; list and revoke the key."""
    env = {"ASSISTANT_DATA_DIR": str(tmp_path)}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    created = run_cli("tenants", "create", "shop", "--origin", "https://shop.example", env=env)
    assert created.returncode == 0 and "created tenant shop" in created.stdout
    key = run_cli("keys", "create", "shop", env=env)
    plain = key.stdout.strip()
    assert key.returncode == 0 and plain.startswith("pk_") and "not shown again" in key.stderr
    prefix = "_".join(plain.split("_")[:2])
    listed = run_cli("keys", "list", "shop", env=env)
    assert prefix in listed.stdout and plain not in listed.stdout and "active" in listed.stdout
    operator = run_cli(
        "operators", "create", "shop", "--name", "Ann", "--email", "ann@shop.example", env=env
    )
    assert operator.returncode == 0 and operator.stdout.strip().startswith("ok_")
    assert run_cli("keys", "revoke", prefix, env=env).returncode == 0
    assert "revoked" in run_cli("keys", "list", "shop", env=env).stdout
    _assert_one_line_error(run_cli("tenants", "create", "shop", env=env), "already exists")
    _assert_one_line_error(run_cli("keys", "create", "nobody", env=env), "no tenant")
    _assert_one_line_error(run_cli("keys", "revoke", "pk_nothing", env=env), "no key")


def test_downgrade_and_current(tmp_path: Path) -> None:
    """db current follows upgrade and downgrade."""
    env = {"ASSISTANT_DATA_DIR": str(tmp_path)}
    assert "empty" in run_cli("db", "current", env=env).stdout
    run_cli("db", "upgrade", env=env)
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert run_cli("db", "current", env=env).stdout.strip() == head
    assert run_cli("db", "downgrade", "base", env=env).returncode == 0
    assert "empty" in run_cli("db", "current", env=env).stdout


def test_commands_before_migration_say_what_to_do(tmp_path: Path) -> None:
    """Using an unmigrated database says to run db upgrade."""
    env = {"ASSISTANT_DATA_DIR": str(tmp_path)}
    _assert_one_line_error(run_cli("tenants", "list", env=env), "assistant db upgrade")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nonsense", "cannot parse database URL"),
        ("mysql://root@127.0.0.1/test", "unsupported database"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot connect to database"),
    ],
)
def test_bad_database_url(tmp_path: Path, url: str, fragment: str) -> None:
    """A wrong database URL is one clear line and exit 2."""
    _assert_one_line_error(run_cli("db", "upgrade", "--database-url", url), fragment)


def test_serve_with_unreachable_redis(tmp_path: Path) -> None:
    """An unreachable Redis URL is one clear line."""
    result = run_cli(
        "serve", "--data-dir", str(tmp_path), "--port", "0", "--redis-url", "redis://127.0.0.1:1/0"
    )
    _assert_one_line_error(result, "cannot reach Redis", "ASSISTANT_REDIS_URL")


def test_serve_with_missing_model_path(tmp_path: Path) -> None:
    """A missing model directory is one clear line."""
    result = run_cli("serve", "--data-dir", str(tmp_path), "--model-path", str(tmp_path / "no"))
    _assert_one_line_error(result, "model path", "is not a directory")


def test_serve_with_port_in_use(tmp_path: Path) -> None:
    """A port in use is one clear line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("serve", "--data-dir", str(tmp_path), "--port", str(port))
    _assert_one_line_error(result, f"port {port}", "already in use")


def test_gateway_without_redis_url(tmp_path: Path) -> None:
    """A lone gateway without a Redis URL says how to fix it."""
    result = run_cli("gateway", "--data-dir", str(tmp_path), env={"ASSISTANT_REDIS_URL": ""})
    _assert_one_line_error(result, "Redis URL")


def test_worker_refuses_an_unknown_decoding_mode(tmp_path: Path) -> None:
    """A misspelt ASSISTANT_DECODING_MODE is one clear error, before any connection."""
    env = {"ASSISTANT_DATA_DIR": str(tmp_path), "ASSISTANT_DECODING_MODE": "fastest"}
    _assert_one_line_error(run_cli("worker", env=env), "unknown decoding mode 'fastest'")
