"""Settings from environment variables and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.core.config import Settings, parse_networks, parse_rate
from assistant.core.errors import UserError


def test_defaults_use_embedded_services() -> None:
    """With nothing set, Redis is embedded and the database is a SQLite file in data/."""
    settings = Settings.load(env={})
    assert settings.redis_url == ""
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.effective_database_url.endswith("/data/assistant.db")


def test_environment_is_read_with_prefix() -> None:
    """ASSISTANT_* variables set the fields, with types."""
    env = {
        "ASSISTANT_REDIS_URL": "redis://example:6379/1",
        "ASSISTANT_PORT": "9000",
        "ASSISTANT_DATA_DIR": "/srv/assistant",
        "ASSISTANT_LOG_FORMAT": "json",
        "REDIS_URL": "ignored",
    }
    settings = Settings.load(env=env)
    assert settings.redis_url == "redis://example:6379/1"
    assert settings.port == 9000
    assert settings.data_dir == Path("/srv/assistant")
    assert settings.log_format == "json"


def test_flags_override_environment() -> None:
    """A flag wins over the environment; None means 'not given'."""
    settings = Settings.load(env={"ASSISTANT_PORT": "9000"}, port=9100, host=None)
    assert settings.port == 9100 and settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ASSISTANT_PORT": "eighty"}, "whole number"),
        ({"ASSISTANT_PORT": "70000"}, "out of range"),
        ({"ASSISTANT_LOG_FORMAT": "xml"}, "unknown log format"),
        ({"ASSISTANT_LOG_LEVEL": "loud"}, "unknown log level"),
        ({"ASSISTANT_CLAIM_IDLE_S": "0"}, "claim idle time 0 s is out of range"),
        ({"ASSISTANT_RATE_IP": "20"}, "rate_ip must be RATE/BURST"),
        ({"ASSISTANT_RATE_IP": "0/60"}, "rate_ip must be RATE/BURST"),
        ({"ASSISTANT_RATE_KEY": "200/0.5"}, "rate_key must be RATE/BURST"),
        ({"ASSISTANT_RATE_KEY": "fast/600"}, "ASSISTANT_RATE_KEY"),
        ({"ASSISTANT_TRUSTED_PROXIES": "10.0.0.0/8,lb.internal"}, "'lb.internal' is neither"),
        ({"ASSISTANT_ENTITY_SLOTS": "maybe"}, "entity slots must be one of auto, on, off"),
        ({"ASSISTANT_REDIS_REPLICA_ACKS": "one"}, "redis_replica_acks must be auto or a whole"),
        ({"ASSISTANT_REDIS_REPLICA_ACKS": "-1"}, "ASSISTANT_REDIS_REPLICA_ACKS"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    """A bad value names the problem."""
    with pytest.raises(UserError, match=message):
        Settings.load(env=env)


def test_round_trip_through_child_environment() -> None:
    """to_env reproduces the settings in a child process."""
    settings = Settings.load(env={}, port=1234, redis_url="redis://h:1/0")
    assert Settings.load(env=settings.to_env()) == settings


def test_rate_limits_and_proxies() -> None:
    """Rates default to 20/60 and 200/600; proxies are addresses or networks, comma-separated."""
    defaults = Settings.load(env={})
    assert (parse_rate(defaults.rate_ip), parse_rate(defaults.rate_key)) == (
        (20.0, 60.0),
        (200.0, 600.0),
    )
    assert parse_networks(defaults.trusted_proxies) == ()
    env = {"ASSISTANT_RATE_IP": "2.5/10", "ASSISTANT_TRUSTED_PROXIES": " 10.0.0.0/8, ::1 ,"}
    settings = Settings.load(env=env)
    assert parse_rate(settings.rate_ip) == (2.5, 10.0)
    assert [str(n) for n in parse_networks(settings.trusted_proxies)] == ["10.0.0.0/8", "::1/128"]
