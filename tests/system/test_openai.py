"""The OpenAI-compatible API end to end: the official ``openai`` client, unchanged but for
``base_url``, against ``assistant serve`` (gateway, worker with the bundled model, embedded
Redis, SQLite), and the agent console that shows what the API's turns did.

The worker decodes with vanilla diffusion (about a second a reply, as in
tests/e2e/test_stop.py), so a stream closed after its first chunk always lands mid-reply.
The refusals (401, 404, 422, 429, 503) are in tests/web/test_openai_api.py.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import Server, serving
from tests.foundation._processes import run_cli
from web import openai_api as api

pytestmark = pytest.mark.slow

ORDER_NUMBER = "HX-982566"  # a held-out demo order, shipped (tests/e2e/test_support.py)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory, ASSISTANT_DECODING_MODE="vanilla-diffusion") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    made = run_cli(
        "keys", "create", "northwind", "--kind", "secret", "--data-dir", str(server.data_dir)
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_")
    return openai.OpenAI(api_key=key, base_url=f"{server.base_url}/v1", timeout=120)


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def _history(server: Server, conversation_id: str) -> dict[str, Any]:
    """The console's view of a conversation: its ``history`` frame."""
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send(json.dumps({"type": "hello", "key": server.operator_key, "channel": "console"}))
        assert json.loads(ws.recv(10))["type"] == "ready"
        ws.send(json.dumps({"type": "open", "conversation_id": conversation_id}))
        while True:
            frame = json.loads(ws.recv(10))
            if frame["type"] == "history":
                return dict(frame)


def _replies(history: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in history["messages"] if m["role"] == "assistant"]


def test_plain_completion(client: openai.OpenAI, server: Server) -> None:
    completion = client.chat.completions.create(
        model=api.MODEL,
        messages=[{"role": "system", "content": "ignored"}, *_user("Hi, what can you do?")],
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extra = completion.model_extra or {}
    assert extra["status"] == "complete"
    # A stored conversation, visible in the console with the same reply.
    history = _history(server, extra["conversation_id"])
    assert [m["text"] for m in _replies(history)] == [choice.message.content]


def test_streamed_completion_appends_committed_text(client: openai.OpenAI, server: Server) -> None:
    stream = client.chat.completions.create(
        model=api.MODEL,
        messages=_user("Hello! Do you ship to Canada?"),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"drafts": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    drafts = [c.model_extra["draft"] for c in chunks if (c.model_extra or {}).get("draft")]
    assert drafts and all("text" in d and "step" in d for d in drafts)
    last = next(c for c in reversed(chunks) if c.choices)
    assert last.choices[0].finish_reason == "stop"
    final = (last.model_extra or {})["final"]
    assert final["status"] == "complete"
    # The deltas add up to the reply, unless it was replaced after they began (then the
    # last chunk says so, and final.text is the reply).
    assert content == final["text"] or final["replaced"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    conversation_id = (chunks[0].model_extra or {})["conversation_id"]
    assert [m["text"] for m in _replies(_history(server, conversation_id))] == [final["text"]]


def test_multi_turn_conversation(client: openai.OpenAI, server: Server) -> None:
    first = client.chat.completions.create(model=api.MODEL, messages=_user("Hi there"))
    conversation_id = (first.model_extra or {})["conversation_id"]
    # Continued by the extension field, then by the header: the same stored conversation.
    second = client.chat.completions.create(
        model=api.MODEL,
        messages=[
            *_user("Hi there"),
            {"role": "assistant", "content": first.choices[0].message.content},
            *_user("What is your returns policy?"),
        ],
        extra_body={"conversation_id": conversation_id},
    )
    third = client.chat.completions.create(
        model=api.MODEL,
        messages=_user("Thanks!"),
        extra_headers={api.CONVERSATION_HEADER: conversation_id},
    )
    assert (second.model_extra or {})["conversation_id"] == conversation_id
    assert (third.model_extra or {})["conversation_id"] == conversation_id
    history = _history(server, conversation_id)
    users = [m["text"] for m in history["messages"] if m["role"] == "user"]
    assert users == ["Hi there", "What is your returns policy?", "Thanks!"]
    assert [m["text"] for m in _replies(history)] == [
        c.choices[0].message.content for c in (first, second, third)
    ]


def _order_email(database: Path) -> str:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute(
            "SELECT email FROM orders WHERE number = ?", (ORDER_NUMBER,)
        ).fetchone()
    finally:
        connection.close()
    assert row, f"demo order {ORDER_NUMBER} is not in the database"
    return str(row[0])


def test_tool_backed_answer(client: openai.OpenAI, server: Server) -> None:
    email = _order_email(server.database)
    completion = client.chat.completions.create(
        model=api.MODEL,
        messages=_user(f"Where is my order {ORDER_NUMBER}? My email is {email}."),
    )
    extra = completion.model_extra or {}
    calls = extra["server_tool_calls"]
    assert [c["name"] for c in calls][:1] == ["lookup_order"], calls
    assert calls[0]["status"] == "ok" and ORDER_NUMBER in json.dumps(calls[0]["arguments"])
    assert ORDER_NUMBER in (completion.choices[0].message.content or "")
    # The console shows the API turn's tool call with its result.
    history = _history(server, extra["conversation_id"])
    names = [c["name"] for c in history["tool_calls"]]
    assert "lookup_order" in names
    assert history["tool_calls"][0]["status"] == "ok"


def test_closed_stream_cancels_the_reply(client: openai.OpenAI, server: Server) -> None:
    stream = client.chat.completions.create(
        model=api.MODEL, messages=_user("Tell me about your winter jackets."), stream=True
    )
    first = next(iter(stream))
    conversation_id = (first.model_extra or {})["conversation_id"]
    stream.close()  # the client goes away after the first chunk: mid-reply
    deadline = time.monotonic() + 60
    while True:
        replies = _replies(_history(server, conversation_id))
        if replies:
            break
        assert time.monotonic() < deadline, "no reply was stored"
        time.sleep(0.2)
    assert [r["status"] for r in replies] == ["cancelled"]
