"""The tutoring phrasings through the slot step, as a student types them (issue 13).

Before the model sees a message, the exercise and the answer in it become ``[EXPR_n]``
placeholders; the model copies them into ``check_answer(exercise=..., answer=...)`` and the
agent loop resolves them back. A phrasing the checker reads (``test_checker_phrasings``) is
of no use if the slot step has already cut it: a conversion that loses its target unit, an
exercise split into two slots, an answer left out of its slot.

Two forms per phrasing: the exercise as its own message and then the answer as the next
one; or, for a phrasing that states its answer ("7 x 8 = 56?"), the one message. Every
message must round trip (resolving its placeholders gives back exactly what the student
typed), and the arguments the model would naturally copy (the single EXPR slot of a
message, its slots that only whitespace or a bracket separates, or the message itself where nothing
was replaced) must give the checker's verdict.
Phrasings the slot step cuts today are listed in ``_NOT_YET`` and run as strict xfails.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from assistant.entities.slots import PLACEHOLDER, SlotKind, SlotTable
from assistant.tutoring.checker import check_answer
from tests.assistant.test_checker_phrasings import (
    FOUND_WHILE_FIXING,
    PHRASINGS,
    Verdict,
    verdict_of,
)

# (exercise, answer) -> why the slot step cuts it today. Remove an entry when it passes.
_NOT_YET: dict[tuple[str, str], str] = {}

_CASES: list[tuple[str, str, Verdict, str]] = [
    (exercise, answer, verdict, kind)
    for kind, cases in PHRASINGS.items()
    for exercise, answer, verdict in cases
] + list(FOUND_WHILE_FIXING)

# Thousands grouped with a space or an apostrophe, which both the slot step and the checker
# read (a mixed number's whole part is never taken for a group: "1 100/3").
GROUPED_THOUSANDS: list[tuple[str, str, Verdict, str]] = [
    ("1 000 + 500", "1 500", True, "arithmetic"),
    ("1 000 + 500", "1500", True, "arithmetic"),
    ("1'000 \u00d7 12", "12'000", True, "arithmetic"),
    ("1\u2019000 \u00d7 12", "12 000", True, "arithmetic"),
    ("2 500 + 1 250", "3 750", True, "arithmetic"),
    ("1 000 m to km", "1", True, "conversion"),
    ("2.5 km to m", "2 500", True, "conversion"),
    ("2.5 km to m", "2 500 m", True, "conversion"),
    ("2.5 km to m", "25 000", False, "conversion"),
    ("50% of 3 000", "1 500", True, "percent"),
    ("1 000 + 500 = 1 500", "", True, "arithmetic"),
    ("1 1/2 + 2/3", "2 1/6", True, "fractions"),
]
_CASES += GROUPED_THOUSANDS


def _params(stated: bool) -> list[Any]:
    out: list[Any] = []
    for exercise, answer, verdict, kind in _CASES:
        if (answer == "") != stated:
            continue
        reason = _NOT_YET.get((exercise, answer))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(exercise, answer, verdict, kind, marks=marks))
    return out


def _copied(table: SlotTable, typed: str) -> str:
    """What the model copies from a message into a tool argument, resolved.

    The message's EXPR slot; or its slots that only whitespace or an opening bracket
    separates, copied with what is between (the corpus teaches ``answer="[EXPR_2] [EXPR_3]"``
    for a mixed number ``1 1/2`` and ``exercise="[EXPR_1]([EXPR_2]"`` for ``2(x + 1) = 10``,
    so the model was trained on those splits); or the message itself where nothing was
    replaced (a number written in words). Slots with anything else between them are a cut
    exercise: the model has no one argument to copy.
    """
    delexicalized = table.delexicalize(typed)
    assert table.resolve(delexicalized).text == typed, "the message does not round trip"
    found = list(PLACEHOLDER.finditer(delexicalized))
    if not found:
        return typed
    for match in found:
        assert match.group("kind") == SlotKind.EXPR.value, delexicalized
    for before, after in itertools.pairwise(found):
        between = delexicalized[before.end() : after.start()]
        assert between.strip() in ("", "("), f"cut into several slots: {delexicalized!r}"
    copied = delexicalized[found[0].start() : found[-1].end()]
    return table.resolve_arguments(copied)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("exercise", "answer", "verdict", "kind"), _params(stated=False))
def test_exercise_then_answer(exercise: str, answer: str, verdict: Verdict, kind: str) -> None:
    table = SlotTable()
    copied_exercise = _copied(table, exercise)
    copied_answer = _copied(table, answer)
    result = check_answer(copied_exercise, copied_answer)
    assert verdict_of(result) == verdict, (copied_exercise, copied_answer, result)
    if verdict is True or verdict is False:
        assert result["kind"] == kind


@pytest.mark.parametrize(("exercise", "answer", "verdict", "kind"), _params(stated=True))
def test_exercise_stated_with_its_answer(
    exercise: str, answer: str, verdict: Verdict, kind: str
) -> None:
    copied = _copied(SlotTable(), exercise)
    result = check_answer(copied, answer)
    assert verdict_of(result) == verdict, (copied, result)
    if verdict is True or verdict is False:
        assert result["kind"] == kind


def test_not_yet_entries_are_phrasings() -> None:
    assert set(_NOT_YET) <= {(e, a) for e, a, _, _ in _CASES}


@pytest.mark.parametrize(
    ("exercise", "answer", "verdict"),
    [
        ("1 000 + 1", "1001", True),
        ("1'000 + 1", "1 001", True),
        ("12 * 7", "84 000", False),  # a number, and not 84 (it was unreadable before)
        ("1 100/3 + 1", "1", "bad_exercise"),  # a mixed number, not 1100/3
        ("1 1/2 + 2/3", "13/6", True),
        ("1 000 / 4", "250", "bad_exercise"),  # a bar after a group could be a mixed number
    ],
)
def test_the_checker_reads_grouped_thousands(exercise: str, answer: str, verdict: Verdict) -> None:
    assert verdict_of(check_answer(exercise, answer)) == verdict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("it has been 3 days", "it has been [EXPR_1] days"),
        ("I waited 2 days in May", "I waited [EXPR_1] days in May"),
        ("add 2 shirts please", "add [EXPR_1] shirts please"),
        ("I'd say 1 1/2", "I'd say [EXPR_1] [EXPR_2]"),  # as the corpus teaches
        ("Solve 2(x + 1) = 10", "Solve [EXPR_1]([EXPR_2]"),  # as the corpus teaches
    ],
)
def test_words_outside_exercises_stay_text(text: str, expected: str) -> None:
    """Days are a unit only in a conversion; a verb needs its second number to take it."""
    table = SlotTable()
    assert table.delexicalize(text) == expected
    assert table.resolve(expected).text == text
