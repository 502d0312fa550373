"""Every decoding mode fits its prompts in the context, with the real bundled model.

The protocol's longest message after a long history, in both channels, through the agent
loop and the engine (which refuses a prompt that leaves less than the mode's reply room):
each request of the turn must fit, and the turn must end with a reply, not an error. The
support case also carries this turn's own tool rounds with long arguments and results (as a
prompt after three tool calls sees them) and system notes, which trimming never drops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Iterator

import pytest
import torch

from assistant.agent.decoding import DecodingMode, decoding_modes, reply_room
from assistant.agent.loop import PROMPT_TOO_LONG, AgentLoop, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.core.config import Settings
from assistant.demo.shop import build_shop
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from assistant.tutoring.exercises import next_exercise
from dlm_runtime.engine import Draft, Final, GenerationRequest
from dlm_runtime.policies import fast
from web.protocol import MAX_TEXT_CHARS
from workers.generator import EngineGenerator, load_generator

SHOP = build_shop()
ORDER = SHOP.orders[0]


@pytest.fixture(scope="module")
def bundled() -> Iterator[tuple[EngineGenerator, object]]:
    """The bundled checkpoint, loaded as the worker loads it, on the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    generator, tokenizer = load_generator(Settings(model_path="", device="cpu"))
    yield generator, tokenizer
    asyncio.run(generator.close())
    torch.set_num_threads(before)


def longest_message(rng: random.Random) -> str:
    words = ["my", "order", ORDER.number, "arrived", "late", "and", "the", "box", "was", "open"]
    text = " ".join(rng.choice(words) for _ in range(MAX_TEXT_CHARS))
    head = f"where is my order {ORDER.number}? {ORDER.email} "
    return head + text[: MAX_TEXT_CHARS - len(head)]


def support_history(rng: random.Random) -> list[HistoryItem]:
    """30 earlier exchanges with tool calls and system notes, then this turn's 3 tool rounds."""
    history: list[HistoryItem] = []
    for i in range(30):
        history.append(HistoryItem("user", f"question {i}: " + "where is my parcel? " * 12))
        history.append(HistoryItem("tool_call", tool="search_kb", payload={"topic": "shipping"}))
        history.append(
            HistoryItem(
                "tool_result", tool="search_kb", payload={"answer": "ships in 2 days " * 20}
            )
        )
        history.append(HistoryItem("assistant", "It ships within two days. " * 6))
        if i % 6 == 0:
            history.append(HistoryItem("system", f"Note {i}: the customer was handed back."))
    message = longest_message(rng)
    assert len(message) == MAX_TEXT_CHARS
    history.append(HistoryItem("user", message))
    for _ in range(3):
        arguments = {"order_id": ORDER.number + " " * 2 + "x" * 300, "email": ORDER.email}
        history.append(HistoryItem("tool_call", tool="lookup_order", payload=arguments))
        history.append(
            HistoryItem(
                "tool_result",
                tool="lookup_order",
                payload={"error": "tool_error", "message": "no such order " * 40},
            )
        )
    return history


def tutor_history(rng: random.Random) -> list[HistoryItem]:
    """Ten exercises with attempts, then the longest answer to the last one."""
    history: list[HistoryItem] = []
    for _ in range(10):
        exercise = next_exercise(rng=rng)
        history.append(HistoryItem("system", exercise.system_message))
        for attempt in range(3):
            history.append(HistoryItem("user", f"is it {attempt + 1}/4? " * 20))
            history.append(
                HistoryItem(
                    "tool_call",
                    tool="check_answer",
                    payload={"exercise": exercise.prompt, "answer": f"{attempt + 1}/4"},
                )
            )
            history.append(
                HistoryItem(
                    "tool_result",
                    tool="check_answer",
                    payload={"correct": False, "expected": "3/8", "hint": "common denominator"},
                )
            )
            history.append(HistoryItem("assistant", "Not quite, try again. " * 8))
    history.append(HistoryItem("user", ("I think it is 3/8 because " * 200)[:MAX_TEXT_CHARS]))
    return history


async def run_turn(
    bundled: tuple[EngineGenerator, object],
    mode: DecodingMode,
    channel: str,
    history: list[HistoryItem],
) -> tuple[TurnFinished, list[int]]:
    """One turn through the agent loop on the real engine; the prompt length of each round."""
    generator, tokenizer = bundled
    context = generator.context
    assert context is not None
    lengths: list[int] = []

    async def submit(request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        lengths.append(len(request.prompt_ids))
        async for event in generator.submit(request):  # the engine refuses what does not fit
            yield event

    loop = AgentLoop(
        submit, tokenizer, ToolRunner(MemoryShop(SHOP)), mode, context=context, max_rounds=3
    )
    events = [event async for event in loop.run(channel, history, ToolContext("t"), "fit", seed=7)]
    final = events[-1]
    assert isinstance(final, TurnFinished)
    return final, lengths


@pytest.mark.parametrize("mode_name", list(decoding_modes()))
@pytest.mark.parametrize("channel", ["widget", "tutor"])
async def test_longest_message_after_a_long_history_fits_in_every_mode(
    bundled: tuple[EngineGenerator, object], mode_name: str, channel: str
) -> None:
    mode = decoding_modes()[mode_name]
    rng = random.Random(f"{mode_name}-{channel}")
    history = support_history(rng) if channel == "widget" else tutor_history(rng)
    final, lengths = await run_turn(bundled, mode, channel, history)
    context = bundled[0].context
    assert context is not None
    assert lengths, "no request reached the engine"
    assert all(length + reply_room(mode) <= context for length in lengths), lengths
    assert final.problem != PROMPT_TOO_LONG
    assert final.status in ("complete", "failed") and final.text


async def test_a_context_too_small_for_the_system_prompt_ends_the_turn_with_the_fallback(
    bundled: tuple[EngineGenerator, object],
) -> None:
    """Nothing left to trim: the turn ends at once with the fallback reply, never raising."""
    context = bundled[0].context
    assert context is not None
    base = decoding_modes()["fast-diffusion"]
    greedy = dataclasses.replace(base, policy=fast(block_size=8, max_new_tokens=context - 8))
    final, lengths = await run_turn(
        bundled, greedy, "widget", [HistoryItem("user", "where is my order?")]
    )
    assert lengths == []  # nothing was submitted that the engine would refuse
    assert final.status == "failed" and final.problem == PROMPT_TOO_LONG
