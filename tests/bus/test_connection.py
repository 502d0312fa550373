"""The Redis URL forms: one server, or a Sentinel-monitored primary (parsed without a server)."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from assistant.bus.connection import (
    PrimaryConnection,
    SentinelURL,
    bounded_block_ms,
    connect,
    is_sentinel_url,
    parse_sentinel_url,
)
from assistant.core.errors import UserError


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "redis+sentinel://s1.internal:26379,s2.internal:26380,s3.internal/mymaster/2"
    assert parse_sentinel_url(url) == SentinelURL(
        sentinels=(("s1.internal", 26379), ("s2.internal", 26380), ("s3.internal", 26379)),
        service="mymaster",
        db=2,
    )


def test_credentials_go_to_the_servers_and_the_sentinel_password_to_the_sentinels() -> None:
    found = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@[::1]:5000,10.0.0.2/bus?sentinel_password=s3cret"
    )
    assert found.sentinels == (("::1", 5000), ("10.0.0.2", 26379))
    assert (found.service, found.db) == ("bus", 0)
    assert (found.username, found.password) == ("app", "p@ss")
    assert found.sentinel_password == "s3cret"
    password_only = parse_sentinel_url("sentinel://:pw@h:1/bus")
    assert (password_only.username, password_only.password) == (None, "pw")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///mymaster",  # no sentinel
        "redis+sentinel://h:1",  # no service
        "redis+sentinel://h:1/mymaster/0/extra",
        "redis+sentinel://h:1/mymaster/zero",
        "redis+sentinel://h:port/mymaster",
        "redis+sentinel://h:70000/mymaster",
        "redis+sentinel://h:1/mymaster?ssl=true",  # not an option this form knows
        "redis://h:1/0",
    ],
)
def test_a_bad_sentinel_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(UserError, match="cannot parse Redis URL"):
        parse_sentinel_url(url)


def test_only_the_sentinel_schemes_go_through_sentinel() -> None:
    assert is_sentinel_url("redis+sentinel://h/m") and is_sentinel_url("SENTINEL://h/m")
    assert not is_sentinel_url("redis://h:6379/0") and not is_sentinel_url("unix:///tmp/r.sock")


async def test_a_sentinel_client_follows_the_primary_with_the_usual_timeouts() -> None:
    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/3", socket_timeout_s=8)
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.is_master
        assert pool.service_name == "mymaster"
        assert pool.connection_class is PrimaryConnection
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["socket_timeout"] == 8
        assert bounded_block_ms(client, 0) == 4000  # blocking reads end before the timeout
    finally:
        await client.aclose()


def test_a_bad_single_server_url_names_both_forms() -> None:
    with pytest.raises(UserError, match="redis\\+sentinel://"):
        connect("redis://h:notaport/0")


async def test_a_single_server_client_keeps_its_timeouts_and_retries() -> None:
    client = connect("redis://127.0.0.1:1/4", socket_timeout_s=6)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["socket_timeout"]) == (4, 6)
        assert kwargs["socket_connect_timeout"] == 5
        assert kwargs["retry"].get_retries() == 10
        assert bounded_block_ms(client, 10_000) == 3000
    finally:
        await client.aclose()
