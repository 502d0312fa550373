"""The agent loop's logic with a scripted generator: tools, slots, malformed output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import pytest

from assistant.agent.claims import (
    HANDOFF_FALLBACK,
    ORDER_FALLBACK,
    ORDER_NOT_FOUND_FALLBACK,
    TICKET_FALLBACK,
    VERDICT_FALLBACK,
)
from assistant.agent.loop import (
    FALLBACK_REPLY,
    AgentLoop,
    DraftUpdate,
    ToolCalled,
    ToolFinished,
    TurnFinished,
)
from assistant.agent.prompting import HistoryItem
from assistant.demo.shop import build_shop
from assistant.lab.corpus.build import added_words
from assistant.tools.base import ToolContext
from assistant.tools.lookup_order import order_view
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


async def _run(tokenizer, outputs: Sequence[str], text: str, slots: bool = True, redraft=None):  # type: ignore[no-untyped-def]
    script = Script(tokenizer, outputs)
    runner = ToolRunner(MemoryShop(build_shop()))
    loop = AgentLoop(
        script,
        tokenizer,
        runner,
        DecodingMode.diffusion(fast()),
        entity_slots=slots,
        redraft=redraft,
    )
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


async def test_unusable_parallel_output_is_redrafted_causally_once(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A garbled tool call from the diffusion mode is asked again of the causal mode (same
    prompt); its usable call goes ahead. A second unusable output is the fallback."""
    causal = DecodingMode.autoregressive(fast())
    good = _call("lookup_order", order_id=ORDER.number, email=ORDER.email)
    garbled = f'{TOOL_CALL_OPEN_TOKEN}{{"name": "create.ticket"}}{TOOL_CALL_CLOSE_TOKEN}'
    events, script = await _run(
        tokenizer, [garbled, good, "Your order has shipped with UPS."], "x", redraft=causal
    )
    assert [e.name for e in events if isinstance(e, ToolCalled)] == ["lookup_order"]
    assert script.prompts[0] == script.prompts[1]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete" and not final.problem
    events, script = await _run(tokenizer, [garbled, "[ORDER_ID_7]"], "x", redraft=causal)
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.problem == "unresolved_slot"
    assert len(script.prompts) == 2


async def test_a_parallel_reply_that_stops_mid_sentence_is_redrafted_causally(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Seen with run 14: fast diffusion ended 2.3% of held-out conversation replies before
    their sentence ended; the causal mode redrafts them. A second unfinished reply is kept
    (the fallback would say less)."""
    causal = DecodingMode.autoregressive(fast())
    events, script = await _run(
        tokenizer, ["Hello! What can I", "Hello! What can I do for you?"], "hi", redraft=causal
    )
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Hello! What can I do for you?"
    assert script.prompts[0] == script.prompts[1] and not final.problem
    events, script = await _run(
        tokenizer, ["Hello! What can I", "Hello! What"], "hi", redraft=causal
    )
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Hello! What"
    assert final.status == "complete" and len(script.prompts) == 2


async def test_a_parallel_reply_with_a_doubled_word_is_redrafted_causally(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Positions committed in one block step cannot see each other, so a parallel reply may
    write a word twice ("the the number"; 2.3% of dev conversation replies with 16-position
    blocks); the causal mode redrafts it. A second doubled reply is kept, counted nowhere as a
    failure: it still answers."""
    causal = DecodingMode.autoregressive(fast())
    doubled = "Could you give me the the order number?"
    events, script = await _run(
        tokenizer, [doubled, "Could you give me the order number?"], "hi", redraft=causal
    )
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Could you give me the order number?"
    assert script.prompts[0] == script.prompts[1] and not final.problem
    events, script = await _run(tokenizer, [doubled, doubled], "hi", redraft=causal)
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == doubled
    assert final.status == "complete" and not final.problem and len(script.prompts) == 2
    # Words people do double are not redrafted.
    events, script = await _run(tokenizer, ["Bye bye!"], "bye", redraft=causal)
    assert len(script.prompts) == 1


async def test_a_parallel_reply_claiming_what_no_tool_did_is_redrafted(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Seen on dev conversations with run 14: fast diffusion announced a ticket it never
    opened. The causal redraft opens it; a second claiming reply is replaced honestly."""
    causal = DecodingMode.autoregressive(fast())
    claim = "Ticket T-60004 is open and someone will follow up soon."
    opened = _call("create_ticket", order_id=ORDER.number, category="damaged")
    message = f"my order {ORDER.number} arrived broken"
    events, script = await _run(
        tokenizer, [claim, opened, "I've opened ticket [TICKET_1]."], message, redraft=causal
    )
    assert [e.name for e in events if isinstance(e, ToolCalled)] == ["create_ticket"]
    assert script.prompts[0] == script.prompts[1]
    final = events[-1]
    assert isinstance(final, TurnFinished) and not final.problem
    events, script = await _run(tokenizer, [claim, claim], message, redraft=causal)
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.problem == "unsupported_claim:ticket"
    assert final.text == TICKET_FALLBACK and len(script.prompts) == 2


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


# replies that cannot contradict the tools ----------------------------------------------------


async def _turn(  # type: ignore[no-untyped-def]
    tokenizer, outputs: Sequence[str], history: Sequence[HistoryItem], channel: str = "widget"
) -> TurnFinished:
    script = Script(tokenizer, outputs)
    runner = ToolRunner(MemoryShop(build_shop()))
    decoding = DecodingMode.diffusion(fast())
    loop = AgentLoop(script, tokenizer, runner, decoding, entity_slots=False)
    events = [e async for e in loop.run(channel, history, ToolContext(tenant_id="t"))]
    final = events[-1]
    assert isinstance(final, TurnFinished)
    return final


async def test_ticket_announced_after_a_rejected_search_is_replaced(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The reported turn: a rejected search_kb, then "I've opened a ticket"."""
    final = await _turn(
        tokenizer,
        [_call("search_kb", topic="tickets"), "I've opened ticket T-12345 for you."],
        [HistoryItem("user", f"my order {ORDER.number} arrived broken")],
    )
    assert final.text == TICKET_FALLBACK and final.status == "complete"
    assert final.problem == "unsupported_claim:ticket"


async def test_ticket_opened_by_create_ticket_goes_out(tokenizer) -> None:  # type: ignore[no-untyped-def]
    final = await _turn(
        tokenizer,
        [_call("create_ticket", category="damaged"), "I've opened a ticket; we'll email you."],
        [HistoryItem("user", "my order arrived broken")],
    )
    assert final.text == "I've opened a ticket; we'll email you." and final.problem is None


async def test_handoff_announced_without_the_tool_is_replaced(tokenizer) -> None:  # type: ignore[no-untyped-def]
    final = await _turn(
        tokenizer,
        ["I'm connecting you with a member of our team now."],
        [HistoryItem("user", "a human please")],
    )
    assert final.text == HANDOFF_FALLBACK and final.problem == "unsupported_claim:handoff"


async def test_order_facts_after_a_lookup_that_found_nothing_are_replaced(tokenizer) -> None:  # type: ignore[no-untyped-def]
    final = await _turn(
        tokenizer,
        [
            _call("lookup_order", order_id=ORDER.number, email="someone.else@example.com"),
            f"Your order {ORDER.number} has shipped with UPS.",
        ],
        [HistoryItem("user", f"where is {ORDER.number}? someone.else@example.com")],
    )
    assert final.text == ORDER_NOT_FOUND_FALLBACK
    assert final.problem == "unsupported_claim:order"


async def test_order_facts_from_an_earlier_lookup_go_out(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A follow-up answered from the lookup of an earlier turn is supported by it."""
    history = [
        HistoryItem("user", f"where is {ORDER.number}? {ORDER.email}"),
        HistoryItem("tool_call", tool="lookup_order", payload={"order_id": ORDER.number}),
        HistoryItem("tool_result", tool="lookup_order", payload=order_view(ORDER)),
        HistoryItem("assistant", f"I checked order {ORDER.number}."),
        HistoryItem("user", "how much did I pay?"),
    ]
    total = order_view(ORDER)["total"]
    final = await _turn(tokenizer, [f"You paid {total}."], history)
    assert final.text == f"You paid {total}." and final.problem is None
    # Without the earlier lookup the same words are a claim.
    final = await _turn(tokenizer, [f"You paid {total}."], history[-1:])
    assert final.text == ORDER_FALLBACK and final.problem == "unsupported_claim:order"


async def test_verdict_against_the_checker_is_replaced_by_its_verdict(tokenizer) -> None:  # type: ignore[no-untyped-def]
    history = [HistoryItem("system", "Exercise: 2 + 2"), HistoryItem("user", "5")]
    final = await _turn(
        tokenizer,
        [_call("check_answer", exercise="2 + 2", answer="5"), "Correct! Well done."],
        history,
        channel="tutor",
    )
    assert final.text.startswith("Not quite: the answer is 4.")
    assert final.problem == "unsupported_claim:verdict" and final.status == "complete"


async def test_verdict_when_the_checker_failed_is_replaced(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The reported turn: "Correct!" while check_answer returned an error."""
    history = [HistoryItem("system", "Exercise: what is love"), HistoryItem("user", "4")]
    final = await _turn(
        tokenizer,
        [_call("check_answer", exercise="what is love", answer="4"), "Correct!"],
        history,
        channel="tutor",
    )
    assert final.text.startswith("I couldn't check that answer.")
    assert final.problem == "unsupported_claim:verdict"
    # A tool that failed outright (bad arguments) gets the generic honest reply.
    final = await _turn(
        tokenizer, [_call("check_answer", exercise="2 + 2"), "Correct!"], history, "tutor"
    )
    assert final.text == VERDICT_FALLBACK and final.problem == "unsupported_claim:verdict"


async def test_verdict_agreeing_with_the_checker_goes_out(tokenizer) -> None:  # type: ignore[no-untyped-def]
    history = [HistoryItem("system", "Exercise: 2 + 2"), HistoryItem("user", "4")]
    final = await _turn(
        tokenizer,
        [_call("check_answer", exercise="2 + 2", answer="4"), "Correct! Well done."],
        history,
        channel="tutor",
    )
    assert final.text == "Correct! Well done." and final.problem is None


async def test_empty_output_goes_out_as_the_fallback_with_a_problem(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """An empty reply goes out as the fallback, no longer silently: its problem counts it."""
    final = await _turn(tokenizer, ["  "], [HistoryItem("user", "hi")])
    assert final.text == FALLBACK_REPLY and final.status == "complete"
    assert final.problem == "empty_output"


# tutor bad input: an error from the checker is an honest reply, never a failed turn ---------

BAD_TUTOR_INPUT = [
    # (exercise, answer): only emoji, only punctuation, an exercise the checker cannot read,
    # a huge exponent in the exercise and in the answer.
    pytest.param("3/4 + 1/8", "\U0001f600\U0001f600", id="emoji-answer"),
    pytest.param("3/4 + 1/8", "!!!", id="punctuation-answer"),
    pytest.param("3/4 + 1/8", "#$%;", id="symbols-answer"),
    pytest.param("\U0001f642\U0001f642", "5", id="emoji-exercise"),
    pytest.param("...", "5", id="punctuation-exercise"),
    pytest.param("what is love", "4", id="unreadable-exercise"),
    pytest.param("2^99999999", "1", id="huge-exponent-exercise"),
    pytest.param("What is 3 + 4?", "9^99999999", id="huge-exponent-answer"),
]


@pytest.mark.parametrize(("exercise", "answer"), BAD_TUTOR_INPUT)
async def test_bad_tutor_input_gets_an_honest_reply_asking_for_another_form(  # type: ignore[no-untyped-def]
    tokenizer, exercise: str, answer: str
) -> None:
    """The model checks unreadable input and still says "Correct!": the turn completes with
    the checker's request for another form instead, and its problem is counted."""
    history = [HistoryItem("system", f"Exercise: {exercise}"), HistoryItem("user", answer)]
    script = Script(
        tokenizer, [_call("check_answer", exercise=exercise, answer=answer), "Correct!"]
    )
    runner = ToolRunner(MemoryShop(build_shop()))
    loop = AgentLoop(script, tokenizer, runner, DecodingMode.diffusion(fast()), entity_slots=False)
    events = [e async for e in loop.run("tutor", history, ToolContext(tenant_id="t"))]
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert finished.outcome.status == "ok"
    assert finished.outcome.arguments == {"exercise": exercise, "answer": answer}
    result = finished.outcome.result
    assert result["correct"] is False and result["error"] in ("bad_answer", "bad_exercise")
    final = events[-1]
    assert isinstance(final, TurnFinished)
    assert final.status == "complete" and final.problem == "unsupported_claim:verdict"
    assert final.text == f"I couldn't check that answer. {result['hint']}"
    assert "e.g." in final.text  # it says which form to write instead
