"""A typed request for a new exercise, told apart from answers and questions (pure)."""

from __future__ import annotations

import random

import pytest

from assistant.tutoring.exercises import KINDS, next_exercise
from assistant.tutoring.requests import MAX_WORDS, asks_for_next_exercise, exercise_kind

# Messages whose only intent is a new exercise: the gateway starts one, as the button does.
REQUESTS = [
    "next one",
    "Next",
    "next!",
    "next please",
    "Next one please 🙏",
    "another",
    "another one",
    "Another one, please.",
    "give me another",
    "gimme another one",
    "Can I have another one?",
    "could I get a new question?",
    "give me a harder one",
    "a harder one please",
    "something harder",
    "harder please",
    "an easier one",
    "new exercise please",
    "New exercise",
    "a new problem",
    "next question",
    "next question please",
    "the next exercise",
    "skip",
    "skip this one",
    "Can I skip this question?",
    "skip it and give me another",
    "let's move on",
    "move on to the next one",
    "ok, next one",
    "Okay next!",
    "got it, next please",
    "thanks! another one?",
    "cool, another question",
    "one more",
    "one more exercise please",
    "I'm ready for the next one",
    "i want another one",
    "I'd like a different question",
    "let's do another",
    "can we try another one?",
    "how about another one",
    "hit me with another",
    "on to the next one!",
    "NEXT ONE",
    "next one pls 👍",
    "make it harder",
    "another harder one",
    "a new one",
    "make the next one harder",
    "something different",
    "skip ahead",
]

# Answers, questions about the current exercise, negations, other requests: a model turn.
NEAR_MISSES = [
    "next, the answer is 5",
    "is the next step 3/4?",
    "next step please",
    "what's the next step?",
    "what is next",
    "another hint",
    "one more hint please",
    "give me a hint",
    "give me the answer",
    "another way please",
    "explain it another way",
    "can you show another example",
    "skip the explanation",
    "skip to the answer",
    "I don't want to skip",
    "not another one",
    "no more exercises",
    "I don't want a new exercise",
    "one more question",
    "I have another question",
    "can I ask another question?",
    "the next one is 12",
    "another answer: 7/8",
    "x = 5, next",
    "12",
    "3/4 next one",
    "harder than I thought",
    "this one is harder",
    "that was hard",
    "next time",
    "see you next week",
    "is there another answer?",
    "new answer is twelve",
    "what is the next number in the pattern",
    "one more time please",
    "again",
    "next one is twelve",
    "another one is five",
    "why is it harder",
    "next to the 5",
    "try another way",
    "and another thing",
    "another day maybe",
    "can we move on to fractions",
    "new",
    "ok",
    "thanks",
    "",
    "   ",
    "🙂",
    "?!",
    "next " * 20,
    "give me another one " + "please " * 20,
]


@pytest.mark.parametrize("text", REQUESTS)
def test_requests_for_a_new_exercise_count(text: str) -> None:
    assert asks_for_next_exercise(text), text


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_do_not_count(text: str) -> None:
    assert not asks_for_next_exercise(text), text


def test_the_lists_are_large_and_disjoint() -> None:
    assert len(set(REQUESTS)) >= 30 and len(set(NEAR_MISSES)) >= 30
    assert not set(REQUESTS) & set(NEAR_MISSES)


def test_any_digit_is_an_answer_not_a_request() -> None:
    """Whatever the words, a digit anywhere (ASCII or not) keeps the message for the checker."""
    for request in REQUESTS:
        for digits in ("5", "\u0665", "\u00bd"):
            assert not asks_for_next_exercise(f"{request} {digits}"), (request, digits)


def test_long_messages_are_never_requests() -> None:
    assert not asks_for_next_exercise(" ".join(["another"] * (MAX_WORDS + 1)))
    assert not asks_for_next_exercise("next one " + "x" * 200)


def test_exercise_kind_is_read_back_from_the_system_message() -> None:
    """Every generated kind comes back; a message that sets no exercise has no kind."""
    rng = random.Random(7)
    for kind in KINDS:
        for _ in range(20):
            assert exercise_kind(next_exercise(kind, rng).system_message) == kind
    assert exercise_kind("You are a friendly maths tutor.") is None
    assert exercise_kind("") is None
