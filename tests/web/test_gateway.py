"""The gateway over real sockets: HTTP endpoints, bad input, conversations, console, shutdown.

Real Redis, real SQLite, no worker: where a test needs a turn to end, it plays the worker's
part on the bus (releasing the in-flight lock), so nothing here waits on a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import CapturingLogger
from websockets.exceptions import ConnectionClosed

import assistant.bus.fanout
import web.session
from assistant.bus import heartbeat
from assistant.bus.keys import DEFAULT_KEYS
from assistant.bus.ratelimit import Bucket
from assistant.bus.schema import HandoffEvent, OperatorMessageEvent
from assistant.bus.streams import EventLog, InFlight
from assistant.lab.loadtest.client import gateway_rss_bytes
from assistant.store.repository import Repository
from assistant.store.tables import Owner, Role, ToolCallStatus
from tests.metrics_text import families, value
from tests.web.conftest import (
    BOTH_DATABASES,
    Client,
    GatewayFactory,
    Tenant,
    client,
    make_tenant,
    of_type,
    wait_until,
)
from web.gateway import Gateway
from web.protocol import MAX_FRAME_BYTES, READ_LIMIT_BYTES
from web.service import derive_turn_id

KEYS = DEFAULT_KEYS


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 GET, so the path reaches the server exactly as written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def widget(c: Client, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    ready = await c.hello(tenant.public_key, channel="widget", **fields)
    assert ready["type"] == "ready", ready
    return ready


async def expect_error(c: Client, code: str) -> dict[str, Any]:
    frame = await c.until(lambda f: f["type"] == "error")
    assert frame["code"] == code, frame
    return frame


async def close_code(c: Client) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await c.recv()
    return c.ws.close_code


# HTTP --------------------------------------------------------------------------------------


async def test_not_ready_without_a_worker(gateway: Gateway) -> None:
    """/readyz is 503 until a worker's heartbeat lives (its model loaded), then 200;
    /healthz (liveness) is 200 throughout."""
    assert (await http_get(gateway.port, "/healthz"))[::2] == (200, b"ok\n")
    status, _, body = await http_get(gateway.port, "/readyz")
    none = {"ready": False, "redis": "ok", "database": "ok", "workers": "none"}
    assert (status, json.loads(body)) == (503, none)
    await heartbeat.announce(gateway.redis, gateway.keys, "w-1")
    status, _, body = await http_get(gateway.port, "/readyz")
    ok = {"ready": True, "redis": "ok", "database": "ok", "workers": "ok"}
    assert (status, json.loads(body)) == (200, ok)
    await heartbeat.withdraw(gateway.redis, gateway.keys, "w-1")  # its clean stop
    status, _, body = await http_get(gateway.port, "/readyz")
    assert (status, json.loads(body)) == (503, none)


async def test_health_readiness_and_metrics(gateway: Gateway, tenant: Tenant) -> None:
    """/healthz, /readyz (Redis, SQL, a worker) and /metrics with the gateway's own counters."""
    await heartbeat.announce(gateway.redis, gateway.keys, "w-1")  # a worker consumes turns
    assert (await http_get(gateway.port, "/healthz"))[::2] == (200, b"ok\n")
    status, _, body = await http_get(gateway.port, "/readyz")
    ready = {"ready": True, "redis": "ok", "database": "ok", "workers": "ok"}
    assert (status, json.loads(body)) == (200, ready)
    async with client(gateway) as c:
        await widget(c, tenant)
        await c.send(type="nonsense")
        await expect_error(c, "unknown_type")
    status, headers, body = await http_get(gateway.port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    kinds = families(text)  # prometheus_client's parser reads it all
    assert kinds["gateway_connections"] == kinds["gateway_rate_limited_frames"] == "counter"
    assert value(text, "gateway_connections_total") == 1
    assert value(text, "gateway_errors_total", code="unknown_type") == 1
    assert value(text, "gateway_frames_in_total") == 2
    assert value(text, "gateway_rate_limited_frames_total") == 0


async def test_metrics_report_the_process(gateway: Gateway, tenant: Tenant) -> None:
    """/metrics has the process's memory and descriptors, which the load test reads."""
    async with client(gateway) as c:
        await widget(c, tenant)
        _, _, body = await http_get(gateway.port, "/metrics")
    text = body.decode()
    kinds = families(text)
    for name in ("process_resident_memory_bytes", "process_open_fds", "gateway_connections_open"):
        assert kinds[name] == "gauge", name
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0
    assert value(text, "gateway_connections_open") == 1
    rss = await asyncio.to_thread(gateway_rss_bytes, f"ws://127.0.0.1:{gateway.port}/ws")
    assert rss is not None and rss > 0


async def test_static_files_and_pages(gateway: Gateway, tmp_path: Path) -> None:
    """Pages get the demo key and ws path filled in; assets have types; traversal is refused."""
    site = tmp_path / "static"
    (site / "img").mkdir(parents=True)
    page = '<meta name="k" content="{{PUBLIC_KEY}}" data-ws="{{WS_PATH}}">'
    (site / "demo.html").write_text(page)
    (site / "app.js").write_text("console.log(1)")
    (site / "img" / "logo.svg").write_text("<svg/>")
    (tmp_path / "secret.js").write_text("nope")
    gateway.static_dir = site
    gateway.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (gateway.settings.data_dir / "demo-keys.json").write_text(json.dumps({"public_key": 'pk_"<x>'}))
    status, headers, body = await http_get(gateway.port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == b'<meta name="k" content="pk_&quot;&lt;x&gt;" data-ws="/ws">'
    assert headers["Cache-Control"] == "no-cache"
    status, headers, body = await http_get(gateway.port, "/static/app.js")
    assert (status, body) == (200, b"console.log(1)")
    assert headers["Content-Type"].startswith("text/javascript")
    assert "max-age" in headers["Cache-Control"]
    assert (await http_get(gateway.port, "/static/img/logo.svg"))[0] == 200
    for bad in (
        "/static/../secret.js",
        "/static/..%2fsecret.js",
        "/static//etc/passwd",
        "/static/img/../../secret.js",
        "/static/.hidden.js",
        "/static/app.py",
        "/console",  # not written: a missing page is a 404, not a placeholder
    ):
        assert (await http_get(gateway.port, bad))[0] == 404, bad


# bad input ---------------------------------------------------------------------------------


async def test_bad_frames_get_errors_and_the_connection_survives(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """Not JSON, binary, unknown type, missing fields, forbidden frames: an error each."""
    async with client(gateway) as c:
        await c.send(type="cancel")
        await expect_error(c, "unauthenticated")
        ready = await widget(c, tenant)
        await c.ws.send("{not json")
        await expect_error(c, "bad_json")
        await c.ws.send(b"\x00\x01")
        await expect_error(c, "binary_frame")
        await c.send(type="launch_missiles")
        await expect_error(c, "unknown_type")
        await c.send(type="user_message", text="no id")
        await expect_error(c, "bad_frame")
        await c.send(type="user_message", id="m1", text="x" * 4001)
        assert (await expect_error(c, "too_large"))["ref"] == "m1"
        await c.send(type="subscribe")
        await expect_error(c, "forbidden")
        await c.send(type="hello", key=tenant.public_key)
        await expect_error(c, "bad_state")
        await c.send(type="feedback", message_id="nope", rating=1)
        await expect_error(c, "not_found")
        # Still open and working.
        await c.send(type="user_message", id="ok-1", text="still here?")
        echo = await c.until(of_type("user_message"))
        assert echo["client_id"] == "ok-1"
    assert await store.count_messages(ready["conversation_id"]) == 1


async def test_oversized_frame_is_too_large_and_the_connection_survives(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """A frame over 16 KiB gets an error too_large (no ref: it was not parsed), the socket
    stays open and nothing is stored. (Before issue 15 it closed the socket with 1009 and no
    error frame, which a client could not tell from a network fault.)"""
    async with client(gateway) as c:
        ready = await widget(c, tenant)
        big = {"type": "user_message", "id": "big", "text": "x" * MAX_FRAME_BYTES}
        await c.ws.send(json.dumps(big))
        error = await expect_error(c, "too_large")
        assert "ref" not in error and str(MAX_FRAME_BYTES) in error["message"]
        await c.send(type="user_message", id="ok-1", text="still here?")
        echo = await c.until(of_type("user_message"))
        assert echo["client_id"] == "ok-1"
    assert await store.count_messages(ready["conversation_id"]) == 1


async def test_frame_over_the_read_limit_closes_with_1009(gateway: Gateway, tenant: Tenant) -> None:
    """Beyond what the gateway reads of one message (4 x 16 KiB) the socket closes with 1009."""
    assert READ_LIMIT_BYTES > MAX_FRAME_BYTES
    async with client(gateway) as c:
        await widget(c, tenant)
        huge = {"type": "user_message", "id": "m", "text": "x" * READ_LIMIT_BYTES}
        await c.ws.send(json.dumps(huge))
        assert await close_code(c) == 1009


@BOTH_DATABASES
async def test_lone_surrogate_and_nul_are_bad_frame_and_nothing_is_stored(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """A lone surrogate ("\\ud800", valid JSON) used to reach SQL and fail as internal: it is
    refused as bad_frame, the connection stays open, nothing is stored or echoed."""
    async with client(gateway) as c:
        # Before hello too: a bad key text is bad_frame, not auth_failed, and does not close.
        await c.ws.send('{"type": "hello", "key": "pk_\\ud800"}')
        await expect_error(c, "bad_frame")
        ready = await widget(c, tenant)
        for i, escaped in enumerate(("\\ud800", "\\u0000", "\\uffff", "\\udfff\\ud800")):
            await c.ws.send(f'{{"type": "user_message", "id": "bad-{i}", "text": "a{escaped}b"}}')
            error = await expect_error(c, "bad_frame")
            assert error["ref"] == f"bad-{i}" and "'text'" in error["message"], error
        assert await store.count_messages(ready["conversation_id"]) == 0
        await c.send(type="user_message", id="ok-1", text="still here?")
        echo = await c.until(of_type("user_message"))
        assert echo["client_id"] == "ok-1"  # the first echo: none for the refused ones
    assert await store.count_messages(ready["conversation_id"]) == 1


async def test_wrong_key_closes_with_4401(gateway: Gateway, tenant: Tenant) -> None:
    """A wrong key, or an operator key on the widget channel, is auth_failed and closes."""
    for key, channel in (
        ("pk_nothing_here", "widget"),
        (tenant.operator_key, "widget"),
        (tenant.public_key, "console"),
    ):
        async with client(gateway) as c:
            frame = await c.hello(key, channel=channel)
            assert (frame["type"], frame["code"]) == ("error", "auth_failed")
            assert await close_code(c) == 4401


async def test_origin_must_be_allowed(gateway: Gateway, store: Repository) -> None:
    """A tenant with allowed origins refuses widget connections from other pages."""
    shop = await make_tenant(store, "strict", ("https://shop.example",))
    async with client(gateway, origin="https://evil.example") as c:
        assert (await c.hello(shop.public_key))["code"] == "auth_failed"
        assert await close_code(c) == 4401
    async with client(gateway, origin="https://shop.example") as c:
        assert (await c.hello(shop.public_key))["type"] == "ready"


async def test_hello_timeout_closes_with_4408(
    start_gateway: GatewayFactory, tenant: Tenant
) -> None:
    """No hello in time: auth_timeout, close 4408."""
    gw = await start_gateway(hello_timeout_s=0.3)
    async with client(gw) as c:
        await expect_error(c, "auth_timeout")
        assert await close_code(c) == 4408


async def test_conversation_of_another_tenant_and_forged_token(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """Another tenant's conversation is not_found (stays open); a forged token closes 4403."""
    other = await make_tenant(store, "other")
    async with client(gateway) as c:
        theirs = await widget(c, other)
    async with client(gateway) as c:
        frame = await c.hello(
            tenant.public_key,
            conversation_id=theirs["conversation_id"],
            conversation_token=theirs["conversation_token"],
        )
        assert frame["code"] == "not_found"
        mine = await widget(c, tenant)  # the socket stayed open: a new hello works
    async with client(gateway) as c:
        frame = await c.hello(
            tenant.public_key, conversation_id=mine["conversation_id"], conversation_token="0" * 64
        )
        assert frame["code"] == "bad_token"
        assert await close_code(c) == 4403
    async with client(gateway) as c:  # the real token resumes it
        again = await widget(
            c,
            tenant,
            conversation_id=mine["conversation_id"],
            conversation_token=mine["conversation_token"],
        )
        assert again["conversation_id"] == mine["conversation_id"]


async def test_flood_is_rate_limited_and_nothing_stored_is_lost(
    start_gateway: GatewayFactory, tenant: Tenant, store: Repository
) -> None:
    """1,000 messages at once: the excess gets rate_limited, the rest is stored exactly."""
    gw = await start_gateway(ip_bucket=Bucket(rate=20, burst=30))
    async with client(gw) as c:
        ready = await widget(c, tenant)
        conversation_id = ready["conversation_id"]
        await store.set_owner(conversation_id, Owner.HUMAN)  # stored and shown, no turns
        await c.send(type="user_message", id="before", text="kept as it is")
        await c.until(of_type("user_message", client_id="before"))
        before = [(m.id, m.text) for m in await store.history(conversation_id)]
        sent = {f"m{i}": f"message {i} \u00e9\u2713" for i in range(1000)}
        await asyncio.gather(*(c.send(type="user_message", id=k, text=v) for k, v in sent.items()))
        echoed: set[str] = set()
        limited: set[str] = set()
        while len(echoed) + len(limited) < len(sent):
            frame = await c.recv()
            if frame["type"] == "user_message":
                echoed.add(frame["client_id"])
            elif frame.get("code") == "rate_limited":
                assert frame["retry_after"] > 0
                limited.add(frame["ref"])
        assert limited and echoed and not echoed & limited
        _, _, body = await http_get(gw.port, "/metrics")
    # Every refused frame counts, by the limit that refused it.
    assert value(body.decode(), "gateway_rate_limited_frames_total", scope="ip") == len(limited)
    stored = [m for m in await store.history(conversation_id, 2000) if m.role is Role.USER]
    assert [(m.id, m.text) for m in stored[: len(before)]] == before
    assert {m.client_id: m.text for m in stored[len(before) :]} == {k: sent[k] for k in echoed}


async def test_trusted_proxy_forwards_the_client_address(
    start_gateway: GatewayFactory, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    """Behind a trusted proxy each X-Forwarded-For client has its own per-address bucket."""
    loopback = (ipaddress.ip_network("127.0.0.1/32"),)
    gw = await start_gateway(ip_bucket=Bucket(rate=0.01, burst=2), trusted_proxies=loopback)
    first = {"X-Forwarded-For": "6.6.6.6, 203.0.113.5"}
    async with client(gw, headers=first) as a:
        await widget(a, tenant)
        await a.send(type="cancel")  # the bucket's second frame: taken
        await a.send(type="cancel")
        assert (await expect_error(a, "rate_limited"))["retry_after"] > 0
    async with client(gw, headers={"X-Forwarded-For": "203.0.113.6"}) as b:
        await widget(b, tenant)  # another client behind the same proxy is not limited
    assert await redis_client.exists(KEYS.rate_limit("ip", "203.0.113.5"))
    assert await redis_client.exists(KEYS.rate_limit("ip", "203.0.113.6"))
    assert not await redis_client.exists(KEYS.rate_limit("ip", "127.0.0.1"))


# conversations -----------------------------------------------------------------------------


async def turns_in_stream(redis: aioredis.Redis) -> list[str]:
    entries = await redis.xrange(KEYS.turns)
    return [fields[b"turn_id"].decode() for _id, fields in entries]


async def has_turns(redis: aioredis.Redis, count: int = 1) -> bool:
    return len(await turns_in_stream(redis)) >= count


async def holds(redis: aioredis.Redis, conversation_id: str, turn_id: str) -> bool:
    return await InFlight(redis).holder(conversation_id) == turn_id


async def cancel_requested(redis: aioredis.Redis, conversation_id: str) -> bool:
    return await redis.get(KEYS.cancel(conversation_id)) is not None


@BOTH_DATABASES
async def test_repeated_client_id_is_stored_once(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """A user_message resent with the same id: one row, one echo, one turn."""
    async with client(gateway) as c:
        ready = await widget(c, tenant)
        for _ in range(3):
            await c.send(type="user_message", id="same", text="where is my order?")
        await c.send(type="feedback", message_id="marker", rating=1)  # a frame that answers
        await c.until(lambda f: f.get("code") == "not_found")
        await wait_until(lambda: has_turns(redis_client))
    echoes = [f for f in c.seen if f["type"] == "user_message"]
    assert len(echoes) == 1
    assert await store.count_messages(ready["conversation_id"]) == 1
    assert await turns_in_stream(redis_client) == [derive_turn_id(ready["conversation_id"], "same")]


async def test_new_message_cancels_the_reply_in_flight(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    """A message while a reply is in flight asks the worker to stop it, then starts its own."""
    async with client(gateway) as c:
        ready = await widget(c, tenant)
        conversation_id = ready["conversation_id"]
        await c.send(type="user_message", id="first", text="hello")
        first = await c.until(of_type("user_message", client_id="first"))
        await c.send(type="user_message", id="second", text="actually, something else")
        # Play the worker: see the stop request, end the turn (free the lock).
        await wait_until(lambda: cancel_requested(redis_client, conversation_id))
        assert (await redis_client.get(KEYS.cancel(conversation_id))).decode() == first["turn_id"]
        await InFlight(redis_client).release(conversation_id, first["turn_id"])
        second = await c.until(of_type("user_message", client_id="second"))
    # The echo comes first, the submit right after it.
    await wait_until(lambda: has_turns(redis_client, 2))
    assert await turns_in_stream(redis_client) == [first["turn_id"], second["turn_id"]]
    assert await holds(redis_client, conversation_id, second["turn_id"])


async def test_lock_of_a_finished_turn_does_not_make_messages_busy(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """A lock left by a turn whose reply is stored (its worker lost Redis) is freed at once."""
    async with client(gateway) as c:
        ready = await widget(c, tenant)
        conversation_id = ready["conversation_id"]
        await InFlight(redis_client).acquire(conversation_id, "finished-turn")
        await store.store_reply(conversation_id, "finished-turn", "Your order shipped.")
        await c.send(type="user_message", id="next", text="thanks, and returns?")
        echo = await c.until(of_type("user_message", client_id="next"))
        # The echo is appended before the turn is submitted: wait for the lock to move.
        await wait_until(lambda: holds(redis_client, conversation_id, echo["turn_id"]))
    assert await redis_client.get(KEYS.cancel(conversation_id)) is None


async def test_busy_keeps_the_message_and_a_resend_starts_the_turn(
    start_gateway: GatewayFactory, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """A full turn queue answers busy; the message is stored; resent with its id it runs."""
    gw = await start_gateway(max_backlog=1)
    async with client(gw) as a, client(gw) as b:
        await widget(a, tenant)
        await a.send(type="user_message", id="fills", text="first in line")
        await a.until(of_type("user_message"))
        ready = await widget(b, tenant)
        await b.send(type="user_message", id="waits", text="me too")
        busy = await expect_error(b, "busy")
        assert busy["ref"] == "waits" and busy["retry_after"] > 0
        assert await store.count_messages(ready["conversation_id"]) == 1
        await redis_client.delete(KEYS.turns)  # the worker finished the first turn
        await b.send(type="user_message", id="waits", text="me too")
        echo = await b.until(of_type("user_message"))
        assert echo["client_id"] == "waits"
        await wait_until(lambda: has_turns(redis_client))
    assert await store.count_messages(ready["conversation_id"]) == 1
    assert await turns_in_stream(redis_client) == [echo["turn_id"]]


async def test_idle_follower_outlasts_the_socket_timeout(
    start_gateway: GatewayFactory,
    tenant: Tenant,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle widget over three Redis socket timeouts: no retry, no reconnect, next event."""
    logged = CapturingLogger()
    for module in (web.session, assistant.bus.fanout):
        monkeypatch.setattr(module, "log", structlog.wrap_logger(logged, processors=[]))
    # The follower asks to block 5 s on a client that gives up on a read after 1 s.
    gw = await start_gateway(redis_socket_timeout_s=1.0, follow_block_ms=5000)
    async with client(gw) as c:
        cid = (await widget(c, tenant))["conversation_id"]
        before = (await redis_client.info("stats"))["total_connections_received"]
        await asyncio.sleep(3.5)
        after = (await redis_client.info("stats"))["total_connections_received"]
        await EventLog(redis_client).append(cid, HandoffEvent(conversation_id=cid, owner="bot"))
        assert (await c.until(of_type("handoff")))["seq"] == 1
    assert [call.kwargs.get("event") for call in logged.calls if call.method_name != "info"] == []
    assert after == before  # a read cut by the socket timeout reconnects


async def test_many_followed_conversations_share_one_redis_read(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    """150 open widgets (more than redis-py's pool of 100) each get their events."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(gateway)) for _ in range(150)]
        ids = [(await widget(c, tenant))["conversation_id"] for c in clients]
        connected = (await redis_client.info("clients"))["connected_clients"]
        log = EventLog(redis_client)
        for cid in ids:
            await log.append(cid, HandoffEvent(conversation_id=cid, owner="human"))
        for c in clients:
            assert (await c.until(of_type("handoff")))["owner"] == "human"
    assert connected < 20  # not one connection per followed conversation


async def test_feedback_on_own_replies_only(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """A reply of this conversation can be rated; another conversation's is not_found."""
    async with client(gateway) as other:
        theirs = await widget(other, tenant)
    their_reply, _ = await store.store_reply(theirs["conversation_id"], "t-other", "theirs")
    async with client(gateway) as c:
        ready = await widget(c, tenant)
        reply, _ = await store.store_reply(ready["conversation_id"], "t-mine", "Shipped.")
        await c.send(type="feedback", message_id=reply.id, rating=-1, comment="too short")
        assert await c.recv() == {"type": "feedback_saved", "message_id": reply.id, "rating": -1}
        await c.send(type="feedback", message_id=their_reply.id, rating=1)
        await expect_error(c, "not_found")


async def test_tutor_gets_exercises(gateway: Gateway, tenant: Tenant, store: Repository) -> None:
    """next_exercise stores 'Exercise: <prompt>' as a system message and publishes it."""
    async with client(gateway) as c:
        ready = await c.hello(tenant.public_key, channel="tutor")
        await c.send(type="next_exercise", kind="percent")
        exercise = await c.until(of_type("exercise"))
    assert exercise["kind"] == "percent" and "%" in exercise["prompt"]
    [message] = await store.history(ready["conversation_id"])
    assert (message.role, message.text) == (Role.SYSTEM, f"Exercise: {exercise['prompt']}")
    assert message.id == exercise["exercise_id"]


# console -----------------------------------------------------------------------------------


async def console(c: Client, tenant: Tenant) -> dict[str, Any]:
    ready = await c.hello(tenant.operator_key, channel="console")
    assert ready["type"] == "ready" and ready["operator"]["id"] == tenant.operator_id, ready
    return ready


@BOTH_DATABASES
async def test_take_over_operator_message_hand_back(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """The console sees the conversation live, takes it over, replies and hands it back."""
    async with client(gateway) as op, client(gateway) as visitor:
        await console(op, tenant)
        await op.send(type="subscribe")
        assert (await op.recv())["type"] == "conversation_list"
        ready = await widget(visitor, tenant)
        cid = ready["conversation_id"]
        update = await op.until(of_type("conversation_update", id=cid))
        assert update["owner"] == "bot"
        await op.send(type="open", conversation_id=cid)
        history = await op.until(of_type("history"))
        assert (history["conversation_id"], history["messages"]) == (cid, [])
        await op.send(type="operator_message", conversation_id=cid, id="o0", text="too early")
        await expect_error(op, "forbidden")

        await op.send(type="take_over", conversation_id=cid)
        handoff = await visitor.until(of_type("handoff"))
        assert (handoff["owner"], handoff["operator_id"]) == ("human", str(tenant.operator_id))
        await op.until(of_type("handoff"))
        await visitor.send(type="user_message", id="v1", text="is anyone there?")
        echo = await op.until(of_type("user_message", client_id="v1"))
        assert echo["turn_id"] == ""  # a human owns it: no turn
        await op.send(type="operator_message", conversation_id=cid, id="o1", text="Ana here!")
        said = await visitor.until(of_type("operator_message"))
        assert (said["text"], said["operator_name"]) == ("Ana here!", "Op shop")
        await op.send(type="hand_back", conversation_id=cid)
        assert (await visitor.until(of_type("handoff")))["owner"] == "bot"
        update = await op.until(of_type("conversation_update", id=cid, owner="bot"))
        assert update["last_text"] == "Ana here!"
    assert await turns_in_stream(redis_client) == []
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation.owner is Owner.BOT
    texts = [(m.role, m.text) for m in await store.history(cid)]
    assert texts == [(Role.USER, "is anyone there?"), (Role.OPERATOR, "Ana here!")]


async def test_retried_operator_message_is_stored_and_echoed_once(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """An operator_message resent with its id: one row, one event, which carries the id."""
    async with client(gateway) as visitor:
        cid = (await widget(visitor, tenant))["conversation_id"]
    # Stored by an attempt that died before its event: the retry echoes it, once.
    await store.set_owner(cid, Owner.HUMAN, tenant.operator_id)
    await store.add_operator_message(cid, tenant.operator_id, "Lost echo", "o-lost")
    async with client(gateway) as op:
        await console(op, tenant)
        await op.send(type="open", conversation_id=cid)
        await op.until(of_type("history"))
        for frame_id, text in [("o-lost", "Lost echo"), ("o1", "Hello"), ("o1", "Hello")]:
            await op.send(type="operator_message", conversation_id=cid, id=frame_id, text=text)
        await op.send(type="operator_message", conversation_id=cid, id="o-lost", text="Lost echo")
        await op.send(type="open", conversation_id="marker")  # answered after the retries
        await expect_error(op, "not_found")
    events = await EventLog(redis_client).read_from(cid, 0)
    said = [(e.client_id, e.text) for e in events if isinstance(e, OperatorMessageEvent)]
    assert said == [("o-lost", "Lost echo"), ("o1", "Hello")]
    echoes = [f for f in op.seen if f["type"] == "operator_message"]
    assert [(f["client_id"], f["seq"]) for f in echoes] == [("o-lost", 1), ("o1", 2)]
    assert await store.count_messages(cid, Role.OPERATOR) == 2


@BOTH_DATABASES
async def test_console_sees_only_its_tenant(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """An operator key never reads or changes another tenant's conversations."""
    other = await make_tenant(store, "rival")
    async with client(gateway) as visitor:
        theirs = (await widget(visitor, other))["conversation_id"]
    async with client(gateway) as op:
        await console(op, tenant)
        await op.send(type="subscribe")
        listing = await op.recv()
        assert theirs not in {c["id"] for c in listing["conversations"]}
        for frame in (
            {"type": "open", "conversation_id": theirs},
            {"type": "take_over", "conversation_id": theirs},
            {"type": "hand_back", "conversation_id": theirs},
            {"type": "operator_message", "conversation_id": theirs, "id": "x", "text": "hi"},
        ):
            await op.send(**frame)
            await expect_error(op, "not_found")
    conversation = await store.get_conversation(theirs)
    assert conversation is not None and conversation.owner is Owner.BOT
    assert await store.count_messages(theirs) == 0


async def test_history_shows_tool_calls_with_timing(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """open sends the stored messages and every tool call with its arguments, result and ms."""
    async with client(gateway) as visitor:
        cid = (await widget(visitor, tenant))["conversation_id"]
    call, _ = await store.start_tool_call(cid, "t1", 0, "lookup_order", {"order_id": "A-1"})
    await store.finish_tool_call(call.id, ToolCallStatus.OK, result={"status": "shipped"})
    await store.store_reply(cid, "t1", "It shipped.", stats={"steps": 4, "tokens": 3})
    async with client(gateway) as op:
        await console(op, tenant)
        await op.send(type="open", conversation_id=cid)
        history = await op.until(of_type("history"))
    [shown] = history["tool_calls"]
    assert (shown["name"], shown["arguments"], shown["result"], shown["status"]) == (
        "lookup_order",
        {"order_id": "A-1"},
        {"status": "shipped"},
        "ok",
    )
    assert shown["ms"] >= 0
    [reply] = history["messages"]
    assert (reply["text"], reply["stats"]) == ("It shipped.", {"steps": 4, "tokens": 3})


async def test_metrics_include_the_workers(gateway: Gateway, redis_client: aioredis.Redis) -> None:
    """/metrics adds the workers' metrics published in Redis, labelled by worker."""
    from assistant.bus.metrics_relay import publish

    text = "# TYPE worker_turns_total counter\nworker_turns_total 7\n"
    await publish(redis_client, KEYS, "w-1", text, ttl_s=60)
    _, _, body = await http_get(gateway.port, "/metrics")
    assert value(body.decode(), "gateway_connections_total") == 0
    assert 'worker_turns_total{worker="w-1"} 7' in body.decode()
    families(body.decode())  # one exposition, parsable as a whole
    # Prometheus scrapes each gateway's own part, and the workers' part from one of them.
    _, _, own = await http_get(gateway.port, "/metrics/gateway")
    _, _, relayed = await http_get(gateway.port, "/metrics/workers")
    assert "gateway_connections_total" in own.decode() and "worker_" not in own.decode()
    assert (
        relayed.decode()
        == '# TYPE worker_turns_total counter\nworker_turns_total{worker="w-1"} 7\n'
    )


# shutdown ----------------------------------------------------------------------------------


async def test_shutdown_closes_sockets_with_1012(gateway: Gateway, tenant: Tenant) -> None:
    """Closing the gateway closes every socket with 1012 (service restart)."""
    async with client(gateway) as a, client(gateway) as b:
        await widget(a, tenant)
        await b.send(type="cancel")  # not even authenticated yet
        await expect_error(b, "unauthenticated")
        await gateway.close()
        assert await close_code(a) == 1012
        assert await close_code(b) == 1012
