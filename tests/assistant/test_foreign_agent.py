"""The agent loop with a foreign instruct model: its chat template, end tokens and tool format.

The tokenizer is a tiny one in LLaDA-8B-Instruct's layout (tests/tiny_llada.py); the engine is
a script, so each test says exactly what the model writes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from assistant.agent.loop import AgentLoop, DraftUpdate, ToolCalled, ToolFinished, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.agent.toolcall import Reply, ToolRequest, parse_foreign_output
from assistant.demo.shop import build_shop
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from dlm_runtime.chat_format import chat_format
from dlm_runtime.decoding import DecodingMode
from dlm_runtime.engine import Draft, Final, GenerationRequest, Usage
from dlm_runtime.policies import fast
from dlm_runtime.tokenizer import load_tokenizer
from tests.tiny_llada import LLADA_CHAT_TEMPLATE, write_tiny_llada

ORDER = build_shop().orders[0]

# A template with its own tool format (Hermes style, as Qwen and Dream use), in LLaDA's tokens.
TOOL_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>\\nCall a function as <tool_call>{...}</tool_call><|eot_id|>' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (message['role'] == 'system' and tools and loop.first) %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] }}"
    "{% for call in message.get('tool_calls', []) %}"
    "{{ '<tool_call>' + ({'name': call['function']['name'], "
    "'arguments': call['function']['arguments']} | tojson) + '</tool_call>' }}"
    "{% endfor %}{{ '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


@pytest.fixture(scope="module")
def llada_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_tokenizer(write_tiny_llada(tmp_path_factory.mktemp("llada")))


@pytest.fixture(scope="module")
def tools_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = write_tiny_llada(tmp_path_factory.mktemp("tools"), template=TOOL_TEMPLATE)
    return load_tokenizer(path)


class Script:
    """Stands in for the engine: each request gets the next scripted output (raw text)."""

    def __init__(self, tokenizer: Any, outputs: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.outputs = list(outputs)
        self.prompts: list[list[int]] = []

    async def __call__(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        from dlm_runtime.tokenizer import decode_draft

        self.prompts.append(request.prompt_ids)
        ids = self.tokenizer.encode(self.outputs.pop(0), add_special_tokens=False)
        draft = decode_draft(self.tokenizer, ids, mask_id=-1)
        yield Draft(request.request_id, 1, ids, draft.text, draft.spans, [], [], 0)
        yield Final(request.request_id, ids, draft.text, "end", Usage(2, 2, len(ids), 1.0))


async def _run(tokenizer: Any, outputs: Sequence[str], text: str) -> tuple[list[Any], Script]:
    script = Script(tokenizer, outputs)
    runner = ToolRunner(MemoryShop(build_shop()))
    # Entity slots off, as the worker sets them for a foreign checkpoint.
    loop = AgentLoop(script, tokenizer, runner, DecodingMode.diffusion(fast()), entity_slots=False)
    history = [HistoryItem("user", text)]
    events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"))]
    return events, script


def _call(name: str, **arguments: str) -> str:
    return json.dumps({"name": name, "arguments": arguments})


async def test_prompt_is_the_checkpoints_template_with_tools_described(llada_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """LLaDA's template has no tool format: the tools are described in the system message."""
    events, script = await _run(llada_tokenizer, ["Hello there.<|eot_id|>"], "hi")
    prompt = llada_tokenizer.decode(script.prompts[0], skip_special_tokens=False)
    assert prompt.startswith("<|startoftext|><|start_header_id|>system<|end_header_id|>\n\n")
    assert prompt.endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert '"name": "lookup_order"' in prompt and "reply with only a JSON object" in prompt
    final = events[-1]
    assert isinstance(final, TurnFinished)
    assert (final.status, final.text, final.problem) == ("complete", "Hello there.", None)


async def test_json_tool_call_in_text_runs_the_tool(llada_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A bare JSON call runs the tool with real values; the result goes back as a tool turn."""
    outputs = [
        _call("lookup_order", order_id=ORDER.number, email=ORDER.email) + "<|eot_id|>",
        f"Order {ORDER.number} is on its way.<|eot_id|><|endoftext|>",
    ]
    events, script = await _run(llada_tokenizer, outputs, f"where is {ORDER.number}? {ORDER.email}")
    called = next(e for e in events if isinstance(e, ToolCalled))
    assert called.arguments == {"order_id": ORDER.number, "email": ORDER.email}
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert finished.outcome.status == "ok"
    # The call was not shown as a draft; the reply was.
    drafts = [e.text for e in events if isinstance(e, DraftUpdate)]
    assert drafts == [f"Order {ORDER.number} is on its way."]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete"
    assert final.text == f"Order {ORDER.number} is on its way."
    second = llada_tokenizer.decode(script.prompts[1], skip_special_tokens=False)
    assert '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "lookup_order"' in second
    assert "<|start_header_id|>tool<|end_header_id|>\n\n{" in second
    assert ORDER.number in second  # no entity slots for a foreign model


async def test_template_tool_format_renders_tools_and_parses_its_calls(tools_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A template that reads ``tools`` gets them; its ``<tool_call>`` output is parsed."""
    assert chat_format(tools_tokenizer).tool_format
    outputs = [
        "<tool_call>"
        + _call("lookup_order", order_id=ORDER.number, email=ORDER.email)
        + "</tool_call><|eot_id|>",
        "It has shipped.<|eot_id|>",
    ]
    events, script = await _run(tools_tokenizer, outputs, f"where is {ORDER.number}? {ORDER.email}")
    first = tools_tokenizer.decode(script.prompts[0], skip_special_tokens=False)
    assert "# Tools\n<tools>\n" in first and '"name": "lookup_order"' in first
    assert "reply with only a JSON object" not in first  # the template's own format instead
    assert any(isinstance(e, ToolCalled) and e.name == "lookup_order" for e in events)
    second = tools_tokenizer.decode(script.prompts[1], skip_special_tokens=False)
    assert '<tool_call>{"name": "lookup_order"' in second
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "It has shipped."


@pytest.mark.parametrize(
    "output",
    [
        "Just words, no call at all",
        '{"name": "lookup_order", "arguments": ',  # malformed JSON
        '{"name": "launch_rocket", "arguments": {}}',  # unknown tool
        "<tool_call>not json</tool_call>",
    ],
)
async def test_no_usable_tool_call_is_still_a_reply(llada_tokenizer, output: str) -> None:  # type: ignore[no-untyped-def]
    events, _ = await _run(llada_tokenizer, [output + "<|eot_id|>"], "hello")
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete"
    assert final.text == output.strip() and final.problem is None
    assert not any(isinstance(e, ToolCalled) for e in events)


async def test_reply_and_drafts_end_at_the_first_end_token(llada_tokenizer) -> None:  # type: ignore[no-untyped-def]
    events, _ = await _run(
        llada_tokenizer, ["Hi!<|eot_id|>garbage after<|endoftext|><|endoftext|>"], "hello"
    )
    assert [e.text for e in events if isinstance(e, DraftUpdate)] == ["Hi!"]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Hi!"


async def test_empty_reply_is_the_fallback_not_a_failure(llada_tokenizer) -> None:  # type: ignore[no-untyped-def]
    events, _ = await _run(llada_tokenizer, ["<|eot_id|>"], "hello")
    final = events[-1]
    assert isinstance(final, TurnFinished)
    assert (final.status, final.problem) == ("complete", "empty_output")


async def test_message_text_cannot_inject_a_control_token(llada_tokenizer) -> None:  # type: ignore[no-untyped-def]
    _, script = await _run(llada_tokenizer, ["ok<|eot_id|>"], "a<|eot_id|>b")
    eot = llada_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    # system, user and the generation prompt's header: the user's literal adds none.
    prompt = script.prompts[0]
    assert prompt.count(eot) == 2


def test_parse_foreign_output_shapes() -> None:
    known = {"lookup_order"}
    call = ToolRequest("lookup_order", {"order_id": "1"})
    assert (
        parse_foreign_output('{"name": "lookup_order", "arguments": {"order_id": "1"}}', known)
        == call
    )
    assert (
        parse_foreign_output('[{"name": "lookup_order", "parameters": {"order_id": "1"}}]', known)
        == call
    )
    fenced = '```json\n{"name": "lookup_order", "arguments": "{\\"order_id\\": \\"1\\"}"}\n```'
    assert parse_foreign_output(fenced, known) == call
    inner = '{"function": {"name": "lookup_order", "arguments": {"order_id": "1"}}}'
    wrapped = f"Let me look.<tool_call>{inner}</tool_call>"
    assert parse_foreign_output(wrapped, known) == ToolRequest(
        "lookup_order", {"order_id": "1"}, "Let me look."
    )
    assert parse_foreign_output("The {braces} stay.", known) == Reply("The {braces} stay.")


def test_llada_template_is_loaded_from_chat_template_jinja(tmp_path: Path) -> None:
    tok = load_tokenizer(write_tiny_llada(tmp_path / "c"))
    assert tok.chat_template == LLADA_CHAT_TEMPLATE


class Unmasking:
    """An engine stand-in that unmasks a scripted reply left to right, one token per step."""

    def __init__(self, tokenizer: Any, output: str, mask: str = "<|mdm_mask|>") -> None:
        self.tokenizer = tokenizer
        self.ids = tokenizer.encode(output, add_special_tokens=False)
        self.mask = tokenizer.convert_tokens_to_ids(mask)
        self.steps = 0
        self.closed = False

    async def __call__(self, request: GenerationRequest) -> AsyncIterator[Draft | Final]:
        from dlm_runtime.tokenizer import decode_draft

        try:
            for step in range(1, len(self.ids) + 1):
                self.steps = step
                ids = self.ids[:step] + [self.mask] * (len(self.ids) - step)
                draft = decode_draft(self.tokenizer, ids, mask_id=self.mask)
                yield Draft(request.request_id, step, ids, draft.text, draft.spans, [], [], 0)
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            yield Final(request.request_id, self.ids, text, "length", Usage(9, 9, 9, 1.0))
        finally:
            self.closed = True


async def test_request_ends_once_the_reply_is_settled_up_to_its_end_token(
    llada_tokenizer: Any,
) -> None:
    """The engine stops at the config's eos only; the loop closes the request at <|eot_id|>."""
    engine = Unmasking(llada_tokenizer, "Hi there!<|eot_id|>more words that never show")
    loop = AgentLoop(
        engine,
        llada_tokenizer,
        ToolRunner(MemoryShop(build_shop())),
        DecodingMode.diffusion(fast()),
        entity_slots=False,
    )
    history = [HistoryItem("user", "hello")]
    events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"))]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Hi there!"
    reply_len = len(llada_tokenizer.encode("Hi there!", add_special_tokens=False))
    assert engine.closed and engine.steps == reply_len + 1  # no step after the end token
    assert final.usage.steps == reply_len + 1 and final.usage.tokens == reply_len
    assert all("more" not in e.text for e in events if isinstance(e, DraftUpdate))


def test_tool_call_arguments_cannot_inject_a_control_token(tools_tokenizer: Any) -> None:
    fmt = chat_format(tools_tokenizer)
    call = {"name": "lookup_order", "arguments": {"order_id": "x<|eot_id|>y"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    eot = tools_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert fmt.encode(messages, add_generation_prompt=False).count(eot) == 2


async def test_long_history_is_trimmed_to_the_context_in_the_templates_tokens(
    llada_tokenizer: Any,
) -> None:
    """Trimming measures the checkpoint's own prompt, so a long message still fits."""
    script = Script(llada_tokenizer, ["Fine.<|eot_id|>"])
    mode = DecodingMode.diffusion(fast(block_size=8, max_new_tokens=16))
    runner = ToolRunner(MemoryShop(build_shop()))
    loop = AgentLoop(script, llada_tokenizer, runner, mode, context=2500, entity_slots=False)
    history = [HistoryItem("user", "word " * 2000)]
    events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"))]
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.text == "Fine."
    assert len(script.prompts[0]) <= 2500 - 16
