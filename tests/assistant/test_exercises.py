"""The exercise generator: kinds, disjoint splits, and answers verified by the checker."""

from __future__ import annotations

import itertools
import random

import pytest

from assistant.entities.slots import SlotTable
from assistant.tutoring.checker import check_answer, classify
from assistant.tutoring.exercises import (
    KINDS,
    SPLITS,
    Exercise,
    exercise_stream,
    generate,
    next_exercise,
    right_answers,
    split_of,
    wrong_answers,
)


def test_next_exercise_of_a_tutor_is_a_training_exercise() -> None:
    """The kind asked for, else any; always from the training split; set as the corpus does."""
    percent = next_exercise("percent", random.Random(1))
    assert percent.kind == "percent"
    assert split_of(percent.expression) == "train"
    assert percent.system_message == f"Exercise: {percent.prompt}"
    rng = random.Random(2)
    assert {next_exercise(None, rng).kind for _ in range(50)} == set(KINDS)
    with pytest.raises(ValueError, match="unknown exercise kind"):
        next_exercise("poetry")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", SPLITS)
def test_generated_exercises_are_checkable(kind: str, split: str) -> None:
    """Every exercise parses, has the right kind and split, and its prompt shows it."""
    rng = random.Random(f"{kind}/{split}")
    for _ in range(100):
        exercise = generate(kind, rng, split)
        assert exercise.kind == kind
        assert split_of(exercise.expression) == split
        assert classify(exercise.expression) == kind
        result = check_answer(exercise.expression, "0")
        assert "error" not in result, (exercise, result)
        assert result["kind"] == kind
        assert exercise.expression.split(" ", 1)[0] in exercise.prompt
        # The prompt itself is also understood, with the same expected answer.
        assert check_answer(exercise.prompt, "0")["expected"] == result["expected"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", SPLITS)
def test_answers_are_verified_by_the_checker(kind: str, split: str) -> None:
    """Every right answer is judged correct and every wrong one incorrect (no errors)."""
    rng = random.Random(f"answers/{kind}/{split}")
    for _ in range(60):
        exercise = generate(kind, rng, split)
        rights, wrongs = right_answers(exercise, rng), wrong_answers(exercise, rng)
        assert len(rights) >= 2 and wrongs
        assert not set(rights) & set(wrongs)
        for answer in rights:
            result = check_answer(exercise.expression, answer)
            assert result["correct"] is True, (exercise, answer, result)
        for answer in wrongs:
            result = check_answer(exercise.expression, answer)
            assert result["correct"] is False and "error" not in result, (exercise, answer)


def test_splits_are_disjoint() -> None:
    """A few thousand samples of each split share no expression string."""
    train = {e.expression for e in itertools.islice(exercise_stream(1, "train"), 3000)}
    heldout = {e.expression for e in itertools.islice(exercise_stream(2, "heldout"), 3000)}
    assert len(train) > 1000 and len(heldout) > 800
    assert not train & heldout


def test_split_depends_only_on_the_numbers() -> None:
    """Surface variants of the same numbers land in the same split."""
    assert split_of("2 x 3") == split_of("2 * 3") == split_of("2 \u00d7 3")
    assert split_of("90 min to h") == split_of("90 minutes to hours")
    assert {split_of(f"{a} + {b}") for a in range(20) for b in range(20)} == set(SPLITS)


def test_stream_is_reproducible_and_respects_kinds() -> None:
    """The same seed gives the same stream; kinds restricts what is drawn."""
    first = list(itertools.islice(exercise_stream(7, "train"), 50))
    assert first == list(itertools.islice(exercise_stream(7, "train"), 50))
    assert {e.kind for e in first} == set(KINDS)
    only = itertools.islice(exercise_stream(7, "heldout", ["percent"]), 20)
    assert {e.kind for e in only} == {"percent"}


def test_prompts() -> None:
    """Prompts are student-facing sentences around the expression."""
    rng = random.Random(3)
    for kind, start in [("equation", "Solve "), ("percent", "What is ")]:
        exercise = generate(kind, rng, "train")
        assert exercise.prompt.startswith(start)
        assert exercise.expression in exercise.prompt
    conversion = generate("conversion", rng, "train")
    assert conversion.prompt.startswith(("Convert ", "Express "))
    assert SlotTable().delexicalize(conversion.prompt) in ("Convert [EXPR_1].", "Express [EXPR_1].")


@pytest.mark.parametrize(
    ("exercise", "wrong"),
    [
        (Exercise("fractions", "What is 3/4 + 1/8?", "3/4 + 1/8"), "4/12"),
        (Exercise("percent", "What is 15% of 80?", "15% of 80"), "1200"),
        (Exercise("equation", "Solve 2x + 3 = 11.", "2x + 3 = 11"), "8"),
        (Exercise("conversion", "Convert 2.5 km to m.", "2.5 km to m"), "250"),
    ],
)
def test_wrong_answers_include_common_mistakes(exercise: Exercise, wrong: str) -> None:
    """Typical slips appear among the wrong answers (with or without a wrapper)."""
    answers = wrong_answers(exercise, random.Random(0))
    bare = {a.removeprefix("x = ").removesuffix(" m") for a in answers}
    assert wrong in bare


def test_right_answers_use_several_forms() -> None:
    """Right answers include fraction, decimal, equation and unit forms."""
    rng = random.Random(0)
    fraction = right_answers(Exercise("fractions", "", "3/4 + 1/8"), rng)
    assert {"7/8", "0.875", "14/16", "87.5%"} <= set(fraction)
    equation = right_answers(Exercise("equation", "", "2x + 3 = 11"), rng)
    assert {"4", "x = 4", "x=4"} <= set(equation)
    conversion = right_answers(Exercise("conversion", "", "2.5 km to m"), rng)
    assert {"2500", "2500 m", "2500 metres"} <= set(conversion)


def test_bad_arguments() -> None:
    """Unknown kinds and splits are rejected."""
    rng = random.Random(0)
    with pytest.raises(ValueError):
        generate("calculus", rng, "train")
    with pytest.raises(ValueError):
        generate("arithmetic", rng, "test")
