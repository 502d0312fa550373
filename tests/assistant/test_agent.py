"""The agent loop's logic with a scripted generator: tools, slots, malformed output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest

from assistant.agent.loop import AgentLoop, DraftUpdate, ToolCalled, ToolFinished, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.demo.shop import build_shop
from assistant.lab.corpus.build import added_words
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from dlm_runtime.decoding import DecodingMode
from dlm_runtime.engine import Draft, Final, GenerationRequest, Usage
from dlm_runtime.policies import fast
from dlm_runtime.tokenizer import TOOL_CALL_CLOSE_TOKEN, TOOL_CALL_OPEN_TOKEN, train_tokenizer

ORDER = build_shop().orders[0]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    texts = ["Your order has shipped with UPS.", '{"name": "lookup_order"}', "hello"] * 20
    return train_tokenizer(texts, vocab_size=400, added_words=added_words())


class Script:
    """Stands in for the engine: each request gets the next scripted output."""

    def __init__(self, tokenizer, outputs: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.outputs = list(outputs)
        self.prompts: list[list[int]] = []

    async def __call__(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        self.prompts.append(request.prompt_ids)
        ids = self.tokenizer.encode(self.outputs.pop(0), add_special_tokens=False)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        yield Draft(request.request_id, 0, ids, text, [], list(range(len(ids))), [], 0)
        yield Final(request.request_id, ids, text, "end", Usage(2, 2, len(ids), 1.0))


def _call(name: str, **arguments: str) -> str:
    body = json.dumps({"name": name, "arguments": arguments})
    return f"{TOOL_CALL_OPEN_TOKEN}{body}{TOOL_CALL_CLOSE_TOKEN}"


async def _run(tokenizer, outputs: Sequence[str], text: str, slots: bool = True):  # type: ignore[no-untyped-def]
    script = Script(tokenizer, outputs)
    runner = ToolRunner(MemoryShop(build_shop()))
    loop = AgentLoop(script, tokenizer, runner, DecodingMode.diffusion(fast()), entity_slots=slots)
    events = [
        event
        async for event in loop.run(
            "widget", [HistoryItem("user", text)], ToolContext(tenant_id="t")
        )
    ]
    return events, script


async def test_tool_call_then_reply_with_real_values(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The model's placeholders reach the tool and the user as real values."""
    events, script = await _run(
        tokenizer,
        [
            _call("lookup_order", order_id="[ORDER_ID_1]", email="[EMAIL_1]"),
            "Order [ORDER_ID_1] is [ORDER_ID_1].",
        ],
        f"where is {ORDER.number}? {ORDER.email}",
    )
    called = next(e for e in events if isinstance(e, ToolCalled))
    assert called.arguments == {"order_id": ORDER.number, "email": ORDER.email}
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert finished.outcome.status == "ok" and finished.outcome.result["order_id"] == ORDER.number
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete"
    assert final.text == f"Order {ORDER.number} is {ORDER.number}."
    assert final.usage.rounds == 2
    # The second prompt carries the tool result, with its entities as placeholders.
    second = tokenizer.decode(script.prompts[1], skip_special_tokens=False)
    assert "[TRACKING_1]" in second or "tracking" not in second
    assert ORDER.number not in second


async def test_model_without_slots_reads_and_writes_real_values(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """With entity slots off (a per-model setting), the model sees and writes real values."""
    events, script = await _run(
        tokenizer,
        [
            _call("lookup_order", order_id=ORDER.number, email=ORDER.email),
            f"Order {ORDER.number} is on its way.",
        ],
        f"where is {ORDER.number}? {ORDER.email}",
        slots=False,
    )
    called = next(e for e in events if isinstance(e, ToolCalled))
    assert called.arguments == {"order_id": ORDER.number, "email": ORDER.email}
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == f"Order {ORDER.number} is on its way."
    for prompt in script.prompts:
        text = tokenizer.decode(prompt, skip_special_tokens=False)
        assert ORDER.number in text and "[ORDER_ID_1]" not in text


async def test_message_longer_than_the_context_is_cut_to_fit(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A 4,000-character message reaches the model cut to the context, its end kept."""
    script = Script(tokenizer, ["Hello!"])
    runner = ToolRunner(MemoryShop(build_shop()))
    decoding = DecodingMode.diffusion(fast(max_new_tokens=32))
    loop = AgentLoop(script, tokenizer, runner, decoding, context=300)
    text = "pasted text " * 330 + "where is my order?"
    history = [HistoryItem("user", text)]
    events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"))]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete"
    assert len(script.prompts[0]) <= 300 - 32
    assert "where is my order?" in tokenizer.decode(script.prompts[0])


async def test_tool_call_is_not_shown_as_a_draft(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Drafts of a tool-call round are withheld; the reply's drafts are resolved."""
    events, _ = await _run(
        tokenizer,
        [_call("search_kb", topic="returns"), "Here: [KB_1]"],
        "how do returns work?",
    )
    drafts = [e for e in events if isinstance(e, DraftUpdate)]
    assert [d.round for d in drafts] == [1]
    assert "30 days" in drafts[0].text and "[KB_1]" not in drafts[0].text


async def test_unknown_placeholder_is_never_shown(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A reply naming a slot nobody filled drops it and says so."""
    events, _ = await _run(tokenizer, ["Your email is [EMAIL_3]."], "hi")
    final = events[-1]
    assert isinstance(final, TurnFinished)
    assert "[EMAIL_3]" not in final.text and final.problem == "unresolved_slot"


async def test_malformed_tool_call_gives_a_fallback_reply(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Bad JSON in a tool call ends the turn with a polite reply, not an exception."""
    events, _ = await _run(tokenizer, [f"{TOOL_CALL_OPEN_TOKEN}{{oops{TOOL_CALL_CLOSE_TOKEN}"], "x")
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "failed"
    assert final.problem == "bad_json" and final.text


async def test_unknown_slot_in_arguments_is_a_tool_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Arguments naming an unknown slot are recorded as an error and the model is told."""
    events, script = await _run(
        tokenizer,
        [_call("lookup_order", order_id="[ORDER_ID_4]", email="[EMAIL_1]"), "Sorry."],
        "where is my order? a@b.co",
    )
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert finished.outcome.status == "error" and "ORDER_ID_4" in (finished.outcome.error or "")
    assert "tool_error" in tokenizer.decode(script.prompts[1], skip_special_tokens=False)


async def test_rounds_are_bounded(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A model that only ever calls tools is stopped after max_rounds."""
    events, _ = await _run(tokenizer, [_call("search_kb", topic="returns")] * 4, "returns?")
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.problem == "too_many_rounds"
    assert sum(isinstance(e, ToolCalled) for e in events) == 3
