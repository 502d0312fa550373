"""The OpenAI-compatible API without a model: its shapes, and its refusals through the
official ``openai`` client against an in-process gateway (real Redis and SQLite).

The answers themselves (plain, streamed, multi-turn, tools, cancel) are in
tests/system/test_openai.py, against a real worker and the bundled model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from assistant.bus import heartbeat
from assistant.bus.keys import Keys
from assistant.bus.ratelimit import Bucket
from assistant.store.repository import Repository
from assistant.store.tables import KeyKind
from tests.web.conftest import GatewayFactory, Tenant
from web import openai_api as api
from web.gateway import Gateway

# shapes ------------------------------------------------------------------------------------


def _body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "model": api.MODEL,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return json.dumps({**base, **fields}).encode()


def test_request_reads_the_last_user_message_and_the_extensions() -> None:
    chat = api.parse_chat_request(
        _body(
            messages=[
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "where is "},
                        {"type": "text", "text": "my order?"},
                    ],
                },
            ],
            stream=True,
            stream_options={"include_usage": True},
            drafts=True,
            conversation_id="abc-123",
        )
    )
    assert chat.text == "where is my order?"
    assert (chat.stream, chat.include_usage, chat.drafts) == (True, True, True)
    assert chat.conversation_id == "abc-123"
    # The header names the conversation as well; both must agree.
    assert api.parse_chat_request(_body(), "abc").conversation_id == "abc"
    with pytest.raises(api.ApiError) as differ:
        api.parse_chat_request(_body(conversation_id="a"), "b")
    assert differ.value.status == 422


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x" * 4001}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "a\u0000b"}]}, "messages[0].content"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"stream": "yes"}, "stream"),
        ({"model": None}, "model"),
    ],
)
def test_bad_requests_are_422_with_the_param(fields: dict[str, object], param: str) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_chat_request(_body(**fields))
    assert refused.value.status == 422
    assert refused.value.param == param
    assert set(refused.value.body()["error"]) == {"message", "type", "param", "code"}


def test_committed_text_appends_only_what_two_drafts_agree_on() -> None:
    m = api.MASK
    text = api.CommittedText()
    first = f"Your order {m * 6} shipped{m * 3}"
    assert text.draft(first, 0) == ""  # one draft agrees with nothing yet
    # Up to a whitespace both drafts have before the first mask: "shipped" is held back.
    assert text.draft(first, 0) == "Your order"
    assert text.draft(f"Your order HX-1 is shipped {m * 3}", 0) == ""
    assert text.draft(f"Your order HX-1 is shipped {m * 3}", 0) == " HX-1 is shipped"
    assert text.final("Your order HX-1 is shipped today.") == " today."
    assert not text.replaced
    # A reply replaced after its start was sent: nothing more is appended.
    other = api.CommittedText()
    other.draft("I have refunded it ", 0)
    assert other.draft("I have refunded it ", 0) == "I have refunded it"
    assert other.final("I can't see a refund on that order.") == ""
    assert other.replaced
    # A new round (after a tool call) starts its agreement afresh; a cancel appends nothing.
    rounds = api.CommittedText()
    rounds.draft("Let me check ", 0)
    assert rounds.draft("It shipped ", 1) == ""
    assert rounds.final("", "cancelled") == "" and not rounds.replaced


# refusals through the openai client --------------------------------------------------------


@pytest.fixture
async def secret_key(store: Repository, tenant: Tenant) -> str:
    _row, plain = await store.create_key(tenant.id, KeyKind.SECRET)
    return plain


def _client(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url=f"http://127.0.0.1:{gateway.port}/v1", max_retries=0, timeout=20
    )


@pytest.fixture
async def worker_heartbeat(redis_client: aioredis.Redis) -> AsyncIterator[None]:
    """A worker's readiness key, as a worker writes it (no worker consumes here)."""
    await heartbeat.announce(redis_client, Keys(), "test-worker", ttl_s=60)
    yield
    await heartbeat.withdraw(redis_client, Keys(), "test-worker")


async def test_models_and_refusals_in_openai_shape(
    gateway: Gateway, secret_key: str, tenant: Tenant, worker_heartbeat: None
) -> None:
    client = _client(gateway, secret_key)
    models = await client.models.list()
    assert [m.id for m in models.data] == [api.MODEL]
    assert (await client.models.retrieve(api.MODEL)).id == api.MODEL

    # A wrong key, and keys of the wrong kind (public, operator): 401.
    for key in ("sk_wrong", tenant.public_key, tenant.operator_key):
        with pytest.raises(openai.AuthenticationError) as denied:
            await _client(gateway, key).models.list()
        assert denied.value.status_code == 401
        assert denied.value.code == "invalid_api_key"

    message: list[Any] = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.NotFoundError) as no_model:
        await client.chat.completions.create(model="gpt-4o", messages=message)
    assert no_model.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as no_conversation:
        await client.chat.completions.create(
            model=api.MODEL, messages=message, extra_body={"conversation_id": "nope"}
        )
    assert no_conversation.value.code == "conversation_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        await client.chat.completions.create(
            model=api.MODEL, messages=[{"role": "user", "content": "x" * 4001}]
        )
    assert bad.value.body["param"] == "messages[0].content"  # type: ignore[index]

    # The WebSocket on the same port is untouched by the API's connections.
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
        await ws.send(json.dumps({"type": "hello", "key": tenant.public_key}))
        assert json.loads(await ws.recv())["type"] == "ready"


async def test_no_ready_worker_is_503(gateway: Gateway, secret_key: str) -> None:
    with pytest.raises(openai.InternalServerError) as refused:
        await _client(gateway, secret_key).chat.completions.create(
            model=api.MODEL, messages=[{"role": "user", "content": "hello"}]
        )
    assert refused.value.status_code == 503
    assert refused.value.code == "no_worker"
    assert refused.value.response.headers["retry-after"]


async def test_rate_limit_is_429_with_retry_after(
    start_gateway: GatewayFactory, secret_key: str
) -> None:
    gateway = await start_gateway(key_bucket=Bucket(rate=0.5, burst=3))
    client = _client(gateway, secret_key)
    for _ in range(3):
        await client.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        await client.models.list()
    assert limited.value.status_code == 429
    assert float(limited.value.response.headers["retry-after"]) >= 1
    assert gateway.metrics.rate_limited == {"key": 1}  # in /metrics, by the limit's scope


async def test_a_kept_alive_api_connection_still_reaches_the_other_routes(
    gateway: Gateway, secret_key: str
) -> None:
    """A load balancer reuses upstream connections: after a /v1/ request, the same
    connection's /healthz and pages are answered as websockets answers them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)

    async def get(path: str, headers: str = "") -> tuple[int, bytes]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)

    try:
        status, body = await get("/v1/models", f"Authorization: Bearer {secret_key}\r\n")
        assert status == 200 and json.loads(body)["data"][0]["id"] == api.MODEL
        assert await get("/healthz") == (200, b"ok\n")
        status, body = await get("/v1/models/other", f"Authorization: Bearer {secret_key}\r\n")
        assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
    finally:
        writer.close()
