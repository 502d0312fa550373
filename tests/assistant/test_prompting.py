"""From stored history to model messages."""

from __future__ import annotations

from assistant.agent.prompting import TUTOR_SYSTEM, HistoryItem, model_messages


def test_tutoring_prompt_starts_at_the_latest_exercise() -> None:
    """A finished exercise leaves the prompt; the new one is [EXPR_1] again."""
    history = [
        HistoryItem("system", "Exercise: What is 3 + 4?"),
        HistoryItem("user", "7"),
        HistoryItem("assistant", "Correct!"),
        HistoryItem("system", "Exercise: What is 5 * 6?"),
        HistoryItem("user", "30"),
    ]
    messages = model_messages("tutor", history)
    assert messages[0] == {"role": "system", "content": TUTOR_SYSTEM}
    assert [m["role"] for m in messages[1:]] == ["system", "user"]
    assert "3 + 4" not in str(messages)
    assert messages[1]["content"] == model_messages("tutor", history[3:])[1]["content"]


def test_support_prompt_keeps_the_whole_history() -> None:
    """Outside tutoring every stored item reaches the prompt."""
    history = [
        HistoryItem("user", "hi"),
        HistoryItem("assistant", "Hello!"),
        HistoryItem("user", "where is my order?"),
    ]
    assert len(model_messages("widget", history)) == 4
