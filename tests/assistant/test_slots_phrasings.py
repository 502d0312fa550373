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
from tests.assistant.test_checker_phrasings import FOUND_WHILE_FIXING, PHRASINGS, Verdict

NUMBER_WORD = "a number written as a word (ten, half, a third) is left out of the slot"

# (exercise, answer) -> why the slot step cuts it today. Remove an entry when it passes.
_NOT_YET: dict[tuple[str, str], str] = {
    ("ten percent of 50", "five"): NUMBER_WORD,
}

_CASES: list[tuple[str, str, Verdict, str]] = [
    (exercise, answer, verdict, kind)
    for kind, cases in PHRASINGS.items()
    for exercise, answer, verdict in cases
] + list(FOUND_WHILE_FIXING)


def _params(stated: bool) -> list[Any]:
    out: list[Any] = []
    for exercise, answer, verdict, kind in _CASES:
        if (answer == "") != stated:
            continue
        reason = _NOT_YET.get((exercise, answer))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(exercise, answer, verdict, kind, marks=marks))
    return out


def _verdict(result: dict[str, Any]) -> Verdict:
    if "error" in result:
        return str(result["error"])
    return bool(result["correct"])


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
    assert _verdict(result) == verdict, (copied_exercise, copied_answer, result)
    if verdict is True or verdict is False:
        assert result["kind"] == kind


@pytest.mark.parametrize(("exercise", "answer", "verdict", "kind"), _params(stated=True))
def test_exercise_stated_with_its_answer(
    exercise: str, answer: str, verdict: Verdict, kind: str
) -> None:
    copied = _copied(SlotTable(), exercise)
    result = check_answer(copied, answer)
    assert _verdict(result) == verdict, (copied, result)
    if verdict is True or verdict is False:
        assert result["kind"] == kind


def test_not_yet_entries_are_phrasings() -> None:
    assert set(_NOT_YET) <= {(e, a) for e, a, _, _ in _CASES}
