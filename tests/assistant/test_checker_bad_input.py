"""Tutor bad input: the checker answers every such call with an error a student can read.

Only emoji, only punctuation, an exercise it cannot read, a huge exponent: never an
exception, never a verdict, always a short human message and a hint at a form it reads.
(The agent loop's side, an honest reply instead of a verdict, is in test_agent.py.)
"""

from __future__ import annotations

import json

import pytest

from assistant.tutoring.checker import check_answer

EXERCISE = "What is 3/4 + 1/8?"
BAD_ANSWERS = [
    "\U0001f600",
    "\U0001f44d\U0001f44d",
    "\U0001f914",
    "\u2764\ufe0f",
    "!!!",
    "...",
    ",",
    "-",
    "#$%",
    "()",
    "\u2014",
    ";;",
    "*",
    "/",
    "=",
    "%",
    "\u221e",
    "9^99999999",
    "10**100**100",
    "2^(10^100)",
    "1e999999999",
    "7" * 5000,
]
BAD_EXERCISES = [
    "",
    "   ",
    "\U0001f642\U0001f642",
    "!!!",
    "?!",
    "what is love",
    "blorp the zorp",
    "2^99999999",
    "What is 2^(10^100)?",
    "9**9**9**9",
    "10^10^10 + 1",
    "x^99999 = 1",
    "(" * 500 + "1" + ")" * 500,
    "1/0",
    "x" * 5000,
]
MAX_MESSAGE_CHARS = 400


def _assert_readable_error(result: dict[str, object]) -> None:
    assert result["correct"] is False
    assert result["error"] in ("bad_answer", "bad_exercise"), result
    for field in ("message", "hint"):
        text = result[field]
        assert isinstance(text, str) and 0 < len(text) <= MAX_MESSAGE_CHARS, (field, result)
        assert "Traceback" not in text and "sympy" not in text.lower()
    json.dumps(result)  # it goes to the model and to the client as JSON


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_unreadable_answers_are_a_bad_answer_with_a_form_to_use(answer: str) -> None:
    result = check_answer(EXERCISE, answer)
    _assert_readable_error(result)
    assert result["error"] == "bad_answer"
    assert result["expected"] == "7/8"  # the exercise itself was read


@pytest.mark.parametrize("exercise", BAD_EXERCISES)
@pytest.mark.parametrize("answer", ["5", "\U0001f600", "!!!"])
def test_unreadable_exercises_are_a_bad_exercise(exercise: str, answer: str) -> None:
    result = check_answer(exercise, answer)
    _assert_readable_error(result)
    assert result["error"] == "bad_exercise"
    assert "expected" not in result


def test_question_marks_are_a_give_up_that_shows_the_solution() -> None:
    """Documented in the checker: "?" is giving up, not bad input; the solution is shown."""
    result = check_answer(EXERCISE, "?")
    assert (result["error"], result["expected"]) == ("empty_answer", "7/8")
