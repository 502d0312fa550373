"""A tutor student who types "next one" gets a new exercise, as the button gives, not a turn.

Real Redis, real SQLite, no worker: the turn stream shows whether a turn was started.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from assistant.bus.keys import DEFAULT_KEYS
from assistant.bus.streams import InFlight
from assistant.store.repository import Repository
from assistant.store.tables import Role
from tests.web.conftest import Client, Tenant, client, of_type, wait_until
from web.gateway import Gateway
from web.service import derive_turn_id

KEYS = DEFAULT_KEYS


async def turns(redis: aioredis.Redis) -> list[str]:
    return [f[b"turn_id"].decode() for _id, f in await redis.xrange(KEYS.turns)]


async def tutor(c: Client, tenant: Tenant) -> str:
    ready = await c.hello(tenant.public_key, channel="tutor")
    assert ready["type"] == "ready", ready
    conversation_id: str = ready["conversation_id"]
    return conversation_id


async def settle(c: Client) -> None:
    """Every frame sent before has been handled: a frame that always answers comes back."""
    await c.send(type="feedback", message_id="marker", rating=1)
    await c.until(lambda f: f.get("code") == "not_found")


async def test_typed_next_one_gives_an_exercise_of_the_same_kind_and_no_turn(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """The message is stored and echoed (no turn id), then an exercise of the current kind."""
    async with client(gateway) as c:
        conversation_id = await tutor(c, tenant)
        await c.send(type="next_exercise", kind="percent")
        first = await c.until(of_type("exercise"))
        await c.send(type="user_message", id="typed-1", text="Next one please!")
        echo = await c.until(of_type("user_message", client_id="typed-1"))
        second = await c.until(of_type("exercise"))
        await settle(c)
    assert echo["turn_id"] == "" and echo["text"] == "Next one please!"
    assert second["kind"] == first["kind"] == "percent"
    assert second["exercise_id"] != first["exercise_id"]
    assert await turns(redis_client) == []
    assert await InFlight(redis_client).holder(conversation_id) is None
    history = await store.history(conversation_id)
    assert [(m.role, m.text) for m in history] == [
        (Role.SYSTEM, f"Exercise: {first['prompt']}"),
        (Role.USER, "Next one please!"),
        (Role.SYSTEM, f"Exercise: {second['prompt']}"),
    ]
    assert history[2].id == second["exercise_id"]


async def test_typed_request_without_an_exercise_gets_any_kind(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    async with client(gateway) as c:
        await tutor(c, tenant)
        await c.send(type="user_message", id="typed-1", text="give me a harder one")
        exercise = await c.until(of_type("exercise"))
    assert exercise["kind"] in ("arithmetic", "fractions", "percent", "equation", "conversion")
    assert await turns(redis_client) == []


async def test_the_same_client_id_twice_makes_one_exercise(
    gateway: Gateway, tenant: Tenant, store: Repository, redis_client: aioredis.Redis
) -> None:
    """A resent "another one": one message, one echo, one exercise, no turn."""
    async with client(gateway) as c:
        conversation_id = await tutor(c, tenant)
        for _ in range(3):
            await c.send(type="user_message", id="same", text="another one")
        await settle(c)
    assert len([f for f in c.seen if f["type"] == "user_message"]) == 1
    assert len([f for f in c.seen if f["type"] == "exercise"]) == 1
    assert await store.count_messages(conversation_id, Role.USER) == 1
    assert await store.count_messages(conversation_id, Role.SYSTEM) == 1
    assert await turns(redis_client) == []


async def test_a_retry_publishes_an_exercise_stored_before_a_crash(
    gateway: Gateway, tenant: Tenant, store: Repository
) -> None:
    """The first attempt stored message and exercise, then died: the retry echoes and
    publishes that exercise instead of making a second one."""
    async with client(gateway) as c:
        conversation_id = await tutor(c, tenant)
        turn_id = derive_turn_id(conversation_id, "crashed")
        await store.add_user_message(conversation_id, "skip", "crashed", turn_id)
        made, _ = await store.add_system_message_once(
            conversation_id, "Exercise: What is 20% of 50?", turn_id
        )
        await c.send(type="user_message", id="crashed", text="skip")
        await c.until(of_type("user_message", client_id="crashed"))
        exercise = await c.until(of_type("exercise"))
        await c.send(type="user_message", id="crashed", text="skip")
        await settle(c)
    assert (exercise["exercise_id"], exercise["prompt"]) == (made.id, "What is 20% of 50?")
    assert exercise["kind"] == "percent"
    assert len([f for f in c.seen if f["type"] == "exercise"]) == 1
    assert await store.count_messages(conversation_id, Role.SYSTEM) == 1


async def test_typed_request_stops_the_reply_in_flight(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    """As any new message does: the reply to the previous answer is cancelled first."""
    async with client(gateway) as c:
        conversation_id = await tutor(c, tenant)
        await c.send(type="user_message", id="answer", text="3/4")
        answer = await c.until(of_type("user_message", client_id="answer"))
        assert answer["turn_id"]
        await c.send(type="user_message", id="next", text="skip this one")

        async def cancel_requested() -> bool:
            return await redis_client.get(KEYS.cancel(conversation_id)) is not None

        await wait_until(cancel_requested)
        await InFlight(redis_client).release(conversation_id, answer["turn_id"])  # the worker
        await c.until(of_type("exercise"))
    assert await turns(redis_client) == [answer["turn_id"]]


async def test_answers_and_near_misses_still_start_turns(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    """ "next, the answer is 5" is an answer: echoed with its turn, submitted, no exercise."""
    async with client(gateway) as c:
        await tutor(c, tenant)
        await c.send(type="user_message", id="a", text="next, the answer is 5")
        echo = await c.until(of_type("user_message", client_id="a"))
        await settle(c)
    assert echo["turn_id"]
    assert await turns(redis_client) == [echo["turn_id"]]
    assert not [f for f in c.seen if f["type"] == "exercise"]


async def test_on_the_widget_next_one_is_an_ordinary_message(
    gateway: Gateway, tenant: Tenant, redis_client: aioredis.Redis
) -> None:
    async with client(gateway) as c:
        ready = await c.hello(tenant.public_key, channel="widget")
        assert ready["type"] == "ready"
        await c.send(type="user_message", id="w", text="next one")
        echo = await c.until(of_type("user_message", client_id="w"))
        await settle(c)
    assert echo["turn_id"] and await turns(redis_client) == [echo["turn_id"]]
    assert not [f for f in c.seen if f["type"] == "exercise"]
