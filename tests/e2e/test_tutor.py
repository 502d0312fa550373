"""The tutor page in a real browser: an exercise, a wrong and a right answer, the verdicts.

The verdict on the page comes from the ``check_answer`` tool result, which the test also
computes with the same checker, so a verdict that disagrees with the exact check fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from assistant.tutoring.checker import check_answer
from tests.e2e._pages import REPLY_TIMEOUT_MS, open_page, query, screenshot
from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

PROMPT = re.compile(r"^(?:What is|Work out)\s+(?P<expression>.+?)\s*[?.]$")


def _expression(prompt: str) -> str:
    """The arithmetic expression of an exercise prompt ("What is 3 x 4?" -> "3 x 4")."""
    match = PROMPT.match(prompt.strip())
    assert match, f"unexpected arithmetic prompt: {prompt!r}"
    return match.group("expression")


def _first_exercise(page: Any) -> str:
    """Wait for the page's first exercise (arithmetic, from ?kind=); return its expression."""
    page.locator("#exercise[data-exercise-id]").wait_for(timeout=REPLY_TIMEOUT_MS)
    assert page.locator("#exercise").get_attribute("data-kind") == "arithmetic"
    assert page.get_by_label("Topic").input_value() == "arithmetic"
    return _expression(page.locator("#exercise").inner_text())


def _tool_exercises(server: Server, page: Any) -> list[str]:
    """The exercise argument of each check_answer call of the page's conversation, in order."""
    rows = query(
        server.database,
        "SELECT arguments FROM tool_calls WHERE name = 'check_answer' AND conversation_id = ?"
        " ORDER BY started_at",
        page.evaluate("() => window.DlmTutor.conversationId()"),
    )
    return [json.loads(arguments)["exercise"] for (arguments,) in rows]


def _answer(page: Any, text: str) -> tuple[str, str]:
    """Submit an answer; wait for the verdict and the final feedback; return both."""
    page.get_by_label("Your answer").fill(text)
    page.get_by_role("button", name="Check").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#verdict').dataset.verdict;"
        " const f = document.querySelector('#feedback');"
        " return v && v !== 'pending' && f.classList.contains('final'); }",
        timeout=REPLY_TIMEOUT_MS,
    )
    verdict = str(page.locator("#verdict").get_attribute("data-verdict"))
    return verdict, str(page.locator("#feedback").inner_text())


def test_tutor_gives_feedback_on_a_wrong_and_a_right_answer(
    browser: Any, server: Server, artifacts: Path
) -> None:
    """A wrong answer gets the tool's 'not correct', the right one 'correct'."""
    context, page, errors = open_page(browser, server.base_url + "/tutor?kind=arithmetic")
    try:
        expression = _first_exercise(page)
        expected = str(check_answer(expression, "0")["expected"])
        wrong = str(int(expected) + 1) if re.fullmatch(r"-?\d+", expected) else expected + "1"
        assert check_answer(expression, wrong)["correct"] is False
        assert check_answer(expression, expected)["correct"] is True

        verdict, feedback = _answer(page, wrong)
        screenshot(page, artifacts, "tutor-wrong-answer")
        assert verdict == "wrong", (
            f"verdict {verdict!r} for {wrong!r} to {expression!r}: {feedback!r}"
        )
        assert page.locator("#verdict").inner_text().startswith("\u2717")
        assert feedback.strip()

        verdict, feedback = _answer(page, expected)
        screenshot(page, artifacts, "tutor-right-answer")
        assert verdict == "correct", (
            f"verdict {verdict!r} for {expected!r} to {expression!r}: {feedback!r}"
        )
        # Both verdicts judged the exercise on the page, not another one.
        assert _tool_exercises(server, page) == [expression, expression]
        assert page.locator("#attempts li").count() == 2
        assert page.locator("#attempts li.wrong").count() == 1
        assert page.locator("#attempts li.correct").count() == 1
        assert errors.errors == []
    finally:
        context.close()


def test_tutor_checks_the_current_exercise_after_a_skip(browser: Any, server: Server) -> None:
    """Skipping an exercise with Next, the answer is checked against the one shown."""
    context, page, _errors = open_page(browser, server.base_url + "/tutor?kind=arithmetic")
    try:
        _first_exercise(page)
        shown = page.locator("#exercise").get_attribute("data-exercise-id")
        page.get_by_role("button", name="Next exercise").click()
        page.wait_for_function(
            "prev => document.querySelector('#exercise').dataset.exerciseId !== prev",
            arg=shown,
            timeout=REPLY_TIMEOUT_MS,
        )
        expression = _expression(page.locator("#exercise").inner_text())
        before = len(_tool_exercises(server, page))
        expected = str(check_answer(expression, "0")["expected"])
        _answer(page, expected)
        assert _tool_exercises(server, page)[before:] == [expression]
    finally:
        context.close()
