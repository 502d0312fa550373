"""Opening Redis connections, with a clear error when the server cannot be reached.

``ASSISTANT_REDIS_URL`` names either one server (``redis://``, ``rediss://``, ``unix://``,
as redis-py reads them) or a Sentinel-monitored primary::

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=P]

The hosts are the sentinels (26379 when a port is left out), SERVICE the name the sentinels
monitor (``sentinel monitor SERVICE ...``), DB the database number (0), and the user and
password those of the Redis servers; ``sentinel_password`` is the sentinels' own, when they
have one. The client asks the sentinels for the primary's address, and again whenever a
connection to it fails or it answers as a replica, so after a failover commands fail until
the sentinels promote a replica, then reach the new primary through the same retries that
ride out a restart. ``parse_sentinel_url`` is the only place that reads this form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from assistant.core.errors import UserError

# How long a client waits for any reply before it drops the connection. Blocking reads
# (XREAD / XREADGROUP BLOCK) must end well before it: see ``bounded_block_ms``.
SOCKET_TIMEOUT_S: Final = 10.0

SENTINEL_SCHEMES: Final = ("redis+sentinel", "sentinel")
SENTINEL_PORT: Final = 26379
# A sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT_S: Final = 1.0


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL names: the sentinels, the service, how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def _bad(url: str, why: str) -> UserError:
    return UserError(
        f"cannot parse Redis URL {url!r}: {why} "
        "(use redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB])"
    )


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read a ``redis+sentinel://`` URL (see the module docstring). Pure: tested alone."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise _bad(url, f"the scheme is not one of {', '.join(SENTINEL_SCHEMES)}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else SENTINEL_PORT
        except ValueError:
            raise _bad(url, f"{item!r} has no valid port") from None
        if not host or not 0 < port < 65536:
            raise _bad(url, f"{item!r} is not HOST:PORT")
        sentinels.append((host, port))
    if not sentinels:
        raise _bad(url, "it names no sentinel")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise _bad(url, "the path must be /SERVICE or /SERVICE/DB")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise _bad(url, f"the database {path[1]!r} is not a number") from None
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise _bad(url, f"unknown option {sorted(unknown)[0]!r}")
    sentinel_password = query.get("sentinel_password", [None])[-1]
    return SentinelURL(tuple(sentinels), path[0], db, username, password, sentinel_password)


def _client_kwargs(socket_timeout_s: float) -> dict[str, Any]:
    return {
        "decode_responses": False,
        "socket_connect_timeout": 5,
        # Set here rather than left to redis-py, whose default (5 s since 6.x) equalled the
        # gateway's BLOCK and made every idle follower time out and reconnect.
        "socket_timeout": socket_timeout_s,
        "health_check_interval": 15,
        # Without a retry policy redis-py fails the first command after a server restart;
        # with it, clients ride out a restart of a few seconds, or a failover's first
        # seconds (the callers' own loops retry past that).
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 10),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def connect(url: str, *, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> aioredis.Redis:
    if is_sentinel_url(url):
        return _connect_sentinel(parse_sentinel_url(url), socket_timeout_s)
    try:
        return aioredis.Redis.from_url(url, **_client_kwargs(socket_timeout_s))
    except ValueError as exc:
        raise UserError(
            f"cannot parse Redis URL {url!r}: {exc} "
            "(use redis://HOST:PORT/DB or redis+sentinel://HOST:PORT,.../SERVICE/DB)"
        ) from None


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the sentinels' primary that asks them for its address on every connect.

    redis-py's ``SentinelManagedConnection`` asks only when the pool hands out a connection:
    a connection that drops and reconnects inside a command's retries, or the one connection
    of a ``Redis.client()`` (the gateways' event reader), dials the dead primary's address
    again and again, and the reader never finds the promoted replica (redis-py 8.2; redis/redis-py
    issue 3874, open). Looked up here, in the socket connect itself, every path reaches the
    current primary.
    """

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


def _connect_sentinel(target: SentinelURL, socket_timeout_s: float) -> aioredis.Redis:
    """A client of the primary that ``target``'s sentinels name, found again after a failover.

    Every socket connect asks the sentinels for the primary (``PrimaryConnection``), and a
    connection whose server answers as a replica (READONLY, or a blocked read unblocked by a
    demotion) is dropped, so the ordinary retry policy, and the callers' loops past it,
    reach the promoted replica.
    """
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "password": target.sentinel_password,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        connection_class=PrimaryConnection,
        **_client_kwargs(socket_timeout_s),
    )
    return client


def block_limit_ms(socket_timeout_s: float | None) -> int | None:
    """The longest BLOCK a client with this socket timeout may ask for (None: no limit).

    Redis ends a blocked read on its timer (every 100 ms at the default ``hz 10``), so its
    empty reply can come a good while after BLOCK: half the timeout leaves room for that and
    for a busy machine. Pure, so it is tested without a server.
    """
    if socket_timeout_s is None or socket_timeout_s <= 0:
        return None
    return max(1, int(socket_timeout_s * 1000 / 2))


def bounded_block_ms(client: aioredis.Redis, block_ms: int | None) -> int | None:
    """``block_ms`` cut to what ``client``'s socket timeout allows; 0 (forever) is cut too.

    Callers loop on an empty reply, so a shorter BLOCK only costs one more round trip, while
    a BLOCK the socket timeout cuts short raises, drops the connection and is retried.
    """
    if block_ms is None:
        return None
    limit = block_limit_ms(client.connection_pool.connection_kwargs.get("socket_timeout"))
    if limit is None:
        return block_ms
    return limit if block_ms == 0 else min(block_ms, limit)


async def check_redis(url: str) -> None:
    client = connect(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise UserError(
            f"cannot reach Redis at {url}: {exc} "
            "(check ASSISTANT_REDIS_URL, or leave it empty to start an embedded redis-server)"
        ) from None
    finally:
        await client.aclose()
