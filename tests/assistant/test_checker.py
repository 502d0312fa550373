"""The exact answer checker: kinds, answer forms, errors, bounds and robustness (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.tutoring.checker import (
    _INTERNAL_ERROR,
    CHECK_ANSWER_SPEC,
    KINDS,
    MAX_CHARS,
    check_answer,
    classify,
)

TIMES, DIVIDE = "\u00d7", "\u00f7"

RIGHT = [
    # arithmetic
    ("12 * 7", "84"),
    ("(2 + 3) * 4 - 5", "15"),
    ("2.5 + 0.75", "3.25"),
    ("2.5 + 0.75", "13/4"),
    ("-5 + 3", "-2"),
    ("-5 + 3", "\u22122"),
    ("2^3", "8"),
    ("2\u00b3", "8"),
    (f"7 {TIMES} 6", "42"),
    (f"18 {DIVIDE} 3", "6"),
    ("2 x 3", "6"),
    ("2x3", "6"),
    ("(1 + 1)x(2)", "4"),
    ("3 x 2y = 12", "y = 2"),  # with y as the variable, x between numbers is times
    ("12 - 7 - 2", "3"),
    ("-2^2", "-4"),
    ("(-2)^2", "4"),
    ("2^-1", "1/2"),
    ("5 - (-3)", "8"),
    ("2(3 + 4)", "14"),
    ("0.1 + 0.2", "0.3"),
    ("12 * 7", "= 84"),
    ("12 * 7", "84."),
    ("12 * 7", "+84"),
    ("1000 + 1500", "2,500"),
    ("What is 12 * 7?", "84"),
    (f"7 {DIVIDE} 2", "3.5"),
    (f"7 {DIVIDE} 2", "3 1/2"),
    # fractions
    ("3/4 + 1/8", "7/8"),
    ("3/4 + 1/8", "0.875"),
    ("3/4 + 1/8", "87.5%"),
    ("3/4 + 1/8", "14/16"),
    ("3/4 + 1/8", "7 / 8"),
    (f"3/4 {DIVIDE} 1/2", "3/2"),
    (f"3/4 {DIVIDE} 1/2", "1 1/2"),
    (f"2/3 {TIMES} 3/4", "1/2"),
    ("1 1/2 + 3/4", "2 1/4"),
    ("2 - 3/4", "1.25"),
    ("1/3 - 2/3", "-1/3"),
    ("\u00bd + \u00bc", "3/4"),
    # percent
    ("15% of 80", "12"),
    ("25% of 60", "15"),
    ("20%", "0.2"),
    ("20%", "1/5"),
    ("20%", "20%"),
    ("15 percent of 90", "13.5"),
    ("50% of 30 + 5", "20"),
    # equations
    ("2x + 3 = 11", "4"),
    ("2x + 3 = 11", "x = 4"),
    ("2x + 3 = 11", "x=4"),
    ("2x + 3 = 11", "X = 4"),
    ("5 - x = 2", "3"),
    ("3(x - 1) = 12", "5"),
    ("x/4 = 2", "8"),
    ("2x + 1 = x + 5", "x = 4"),
    ("11 = 2x + 3", "4"),
    ("2y - 4 = 10", "y = 7"),
    ("3n = 7", "n = 7/3"),
    ("3n = 7", "2 1/3"),
    ("2x = 7", "3.5"),
    ("Solve 2x + 3 = 11.", "4"),
    # conversions
    ("2.5 km to m", "2500"),
    ("2.5 km to m", "2500 m"),
    ("2.5 km to m", "2500m"),
    ("2.5 km to m", "2500 meters"),
    ("2.5 km to m", "2.5 km"),
    ("2.5 km to m", "250000 cm"),
    ("3 kg in g", "3000 g"),
    ("90 min to h", "1.5"),
    ("90 min to h", "1 1/2 hours"),
    ("90 minutes to hours", "1.5 h"),
    ("1500 ml to l", "1.5 l"),
    ("1500 ml to l", "1.5 litres"),
    ("5 in in cm", "12.7 cm"),
    ("3 ft to in", "36 inches"),
    ("1 mi to ft", "5280 feet"),
    ("2 lb to oz", "32 oz"),
    ("1 lb to kg", "0.45359237"),
    ("1 m to ft", "1250/381"),
    ("Convert 2.5 km to m.", "2500 m"),
    ("How many g are in 3 kg?", "3000"),
]

WRONG = [
    ("12 * 7", "74"),
    ("12 - 7 - 2", "7"),  # right-associative slip
    ("(2 + 3) * 4 - 5", "17"),
    ("3/4 + 1/8", "4/12"),
    ("3/4 + 1/8", "0.87"),
    ("1/3 + 1/3", "0.67"),
    ("1/3", "0.33"),
    ("15% of 80", "12%"),
    ("15% of 80", "1200"),
    ("2x + 3 = 11", "x = 8"),
    ("2x + 3 = 11", "7"),
    ("5 - x = 2", "-3"),
    ("2.5 km to m", "250 m"),
    ("2.5 km to m", "250"),
    ("2.5 km to m", "2500 km"),
    ("90 min to h", "1.3"),
    ("1 m to ft", "3.28"),
]


@pytest.mark.parametrize(("exercise", "answer"), RIGHT)
def test_right_answers(exercise: str, answer: str) -> None:
    """Correct answers in every accepted form are judged correct."""
    result = check_answer(exercise, answer)
    assert result["correct"] is True, result
    assert "error" not in result


@pytest.mark.parametrize(("exercise", "answer"), WRONG)
def test_wrong_answers(exercise: str, answer: str) -> None:
    """Wrong answers are judged incorrect, without an error."""
    result = check_answer(exercise, answer)
    assert result["correct"] is False, result
    assert "error" not in result


@pytest.mark.parametrize(
    ("exercise", "expected", "explanation"),
    [
        ("3/4 + 1/8", "7/8", "3/4 + 1/8 = 6/8 + 1/8 = 7/8."),
        ("15% of 80", "12", f"15% of 80 = 0.15 {TIMES} 80 = 12."),
        ("2x + 3 = 11", "x = 4", "Subtract 3 from both sides: 2x = 8, then divide by 2: x = 4."),
        ("2x - 3 = 7", "x = 5", "Add 3 to both sides: 2x = 10, then divide by 2: x = 5."),
        ("x/4 = 2", "x = 8", "Multiply both sides by 4: x = 8."),
        ("4x = 12", "x = 3", "Divide both sides by 4: x = 3."),
        (
            "3(x - 1) = 12",
            "x = 5",
            "Expand the brackets, then collect the x terms on one side and the numbers on the"
            " other: 3x = 15, so x = 5.",
        ),
        ("2.5 km to m", "2500 m", "1 km = 1000 m, so 2.5 km = 2500 m."),
        ("90 min to h", "1.5 h", "1 h = 60 min, so 90 min = 1.5 h."),
        ("(2 + 3) * 4 - 5", "15", f"(2 + 3) {TIMES} 4 - 5 = 5 {TIMES} 4 - 5 = 20 - 5 = 15."),
        (f"3/4 {DIVIDE} 1/2", "3/2", f"3/4 {DIVIDE} 1/2 = 3/4 {TIMES} 2 = 6/4 = 3/2."),
        ("1/4 + 1/4", "1/2", "1/4 + 1/4 = 2/4 = 1/2."),
        ("20%", "0.2", "20% = 0.2."),
    ],
)
def test_expected_and_explanation(exercise: str, expected: str, explanation: str) -> None:
    """Expected values are canonical and explanations show the specific steps."""
    result = check_answer(exercise, "0")
    assert result["expected"] == expected
    assert result["explanation"] == explanation


@pytest.mark.parametrize(
    ("exercise", "expected"),
    [
        ("12 * 7", "84"),
        ("2.5 + 0.75", "3.25"),
        ("1/2 + 1/4", "3/4"),  # fraction in the exercise: fraction answer
        (f"7 {DIVIDE} 2", "7/2"),  # division in the exercise: fraction answer
        ("0.5 + 0.25", "0.75"),
        ("1 + 1/3", "4/3"),
        ("2x = 7", "x = 3.5"),
        ("x/2 = 7/4", "x = 7/2"),
        ("3n = 7", "n = 7/3"),  # non-terminating: fraction
        ("1 m to ft", "1250/381 ft"),
        ("1/2 h to min", "30 min"),
    ],
)
def test_expected_format(exercise: str, expected: str) -> None:
    """Fractions when the exercise has one (or a division), else exact decimals."""
    assert check_answer(exercise, "0")["expected"] == expected


@pytest.mark.parametrize(
    ("exercise", "answer", "hint"),
    [
        ("3/4 + 1/8", "4/12", "Don't add the denominators"),
        ("15% of 80", "1200", "Remember that 15% means 15/100"),
        ("15% of 80", "12%", "without the % sign"),
        ("2x + 3 = 11", "8", "Nearly: now divide both sides by 2"),
        ("2x + 3 = 11", "7", "Check the sign"),
        ("2.5 km to m", "250 m", "1 km = 1000 m"),
        ("1/3 + 1/3", "0.67", "rounded decimal"),
        ("12 - 20", "8", "Check the sign"),
        ("3/4 + 1/8", "14/16", "It simplifies to 7/8"),
    ],
)
def test_mistake_hints(exercise: str, answer: str, hint: str) -> None:
    """Common mistakes get a hint aimed at that mistake."""
    assert hint in check_answer(exercise, answer)["hint"]


@pytest.mark.parametrize(
    ("exercise", "answer", "code"),
    [
        ("12 * 7", "", "empty_answer"),
        ("12 * 7", "   ", "empty_answer"),
        ("12 * 7", "idk", "empty_answer"),
        ("12 * 7", "?", "empty_answer"),
        ("12 * 7", "eighty-something", "bad_answer"),
        ("12 * 7", "84 m", "bad_answer"),  # units only for conversions
        ("12 * 7", "x = 84", "bad_answer"),  # no variable in the exercise
        ("12 * 7", "8/0", "bad_answer"),
        ("12 * 7", "1 5/4", "bad_answer"),  # mixed number with an improper part
        ("12 * 7", "84 84", "bad_answer"),
        ("2x + 3 = 11", "y = 4", "bad_answer"),
        ("2x + 3 = 11", "40%", "bad_answer"),
        ("2.5 km to m", "2500 kg", "bad_answer"),
        ("2.5 km to m", "2500 parsecs", "bad_answer"),
        ("2.5 km to m", "250000%", "bad_answer"),
        ("12 * 7", "1" * 16, "bad_answer"),
        ("12 * 7", "1" * (MAX_CHARS + 1), "bad_answer"),
        ("", "1", "bad_exercise"),
        ("hello there", "1", "bad_exercise"),
        ("2x + 3", "1", "bad_exercise"),  # a variable but no equation
        ("2x - 3", "1", "bad_exercise"),
        ("2y + x = 3", "1", "bad_exercise"),  # x is not "times" here
        ("x * x = 4", "2", "bad_exercise"),
        ("x^2 = 4", "2", "bad_exercise"),
        ("x/x = 1", "1", "bad_exercise"),
        ("x + 1 = x + 2", "1", "bad_exercise"),  # no solution
        ("2x = x + x", "1", "bad_exercise"),  # every x is a solution
        ("x + y = 2", "1", "bad_exercise"),
        ("1 = 1", "1", "bad_exercise"),
        ("x = 1 = 2", "1", "bad_exercise"),
        ("1/0", "1", "bad_exercise"),
        ("5 / (2 - 2)", "1", "bad_exercise"),
        ("0^-1", "1", "bad_exercise"),
        ("2^0.5", "1", "bad_exercise"),
        ("2 kg to m", "2", "bad_exercise"),
        ("2 apples to pears", "2", "bad_exercise"),
        ("(2 + 3", "5", "bad_exercise"),
        ("2 + 3)", "5", "bad_exercise"),
        ("2 +", "2", "bad_exercise"),
        ("* 2", "2", "bad_exercise"),
        ("__import__('os').system('true')", "0", "bad_exercise"),
    ],
)
def test_error_codes(exercise: str, answer: str, code: str) -> None:
    """Unreadable input gives the right error code and a clear message."""
    result = check_answer(exercise, answer)
    assert result["correct"] is False
    assert result["error"] == code
    assert result["message"].endswith(".") and len(result["message"]) > 10
    assert result["message"] != _INTERNAL_ERROR
    assert isinstance(result["hint"], str) and result["hint"]


def test_empty_answer_still_shows_the_solution() -> None:
    """A give-up keeps expected and explanation so the assistant can show the solution."""
    result = check_answer("2x + 3 = 11", "")
    assert result["error"] == "empty_answer"
    assert result["expected"] == "x = 4"
    assert "divide by 2" in result["explanation"]


def test_bad_exercise_withholds_expected() -> None:
    """Without an understood exercise there is no expected value."""
    assert "expected" not in check_answer("x^2 = 4", "2")


def test_messages_do_not_quote_inputs() -> None:
    """Messages never echo the student's text (the model only sees placeholders)."""
    for exercise, answer in [("2 + 2", "zebra-secret"), ("zebra-secret", "4")]:
        result = check_answer(exercise, answer)
        assert "zebra" not in json.dumps(result)


@pytest.mark.parametrize(
    "exercise",
    [
        "2^11",
        "2^(5 * 5)",
        "2^2^2^2",
        "(999999999999999^10)^10",
        "((((999^10)^10)^10)^10)",
        "1" * 16 + " + 1",
        "1" * (MAX_CHARS + 1),
        "1 + " * 60 + "1",
        "(" * 21 + "1" + ")" * 21,
        "-" * 21 + "1",
        "2^" * 30 + "2",
        "\ufdfa" * 20,  # expands under NFKC
    ],
)
def test_bounded_work(exercise: str) -> None:
    """Huge exponents, long inputs and deep nesting are refused before any big computation."""
    result = check_answer(exercise, "1")
    assert result["error"] == "bad_exercise", result
    assert result["message"] != _INTERNAL_ERROR


def test_limits_are_inclusive() -> None:
    """Exactly 20 levels of brackets, exponent 10 and 15 digits are still fine."""
    assert check_answer("(" * 20 + "1" + ")" * 20, "1")["correct"] is True
    assert check_answer("2^10", "1024")["correct"] is True
    assert check_answer("999999999999999 - 1", "999999999999998")["correct"] is True


def test_long_sums_are_shortened() -> None:
    """Long step chains collapse to 'exercise = result.'."""
    result = check_answer("1 + 2 + 3 + 4 + 5 + 6 + 7", "28")
    assert result["correct"] is True
    assert result["explanation"] == "1 + 2 + 3 + 4 + 5 + 6 + 7 = 28."


def test_non_string_arguments() -> None:
    """A bare JSON number as the answer is read; other types are errors, not crashes."""
    assert check_answer("12 * 7", 84)["correct"] is True  # type: ignore[arg-type]
    assert check_answer("12 * 7", None)["error"] == "bad_answer"  # type: ignore[arg-type]
    assert check_answer(None, "1")["error"] == "bad_exercise"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exercise", "kind"),
    [
        ("12 * 7", "arithmetic"),
        (f"18 {DIVIDE} 3", "arithmetic"),
        ("3/4 + 1/8", "fractions"),
        ("15% of 80", "percent"),
        ("20%", "percent"),
        ("2x + 3 = 11", "equation"),
        ("x/4 = 2", "equation"),
        ("2.5 km to m", "conversion"),
        ("3 kg in g", "conversion"),
        ("What is 3/4 + 1/8?", "fractions"),
    ],
)
def test_classify(exercise: str, kind: str) -> None:
    """classify names the kind, and check_answer reports the same kind."""
    assert classify(exercise) == kind
    assert check_answer(exercise, "0")["kind"] == kind


def test_hints_vary_and_are_deterministic() -> None:
    """Different exercises of a kind get different hints; the same one always the same."""
    exercises = [f"{a} * {b}" for a in range(2, 12) for b in range(2, 12)]
    hints = {check_answer(e, "0")["hint"] for e in exercises}
    assert len(hints) >= 2
    assert check_answer("2x + 3 = 11", "1")["hint"] == check_answer("2x + 3 = 11", "2")["hint"]
    assert check_answer("3/4 + 1/8", "1")["hint"] == (
        "Write both fractions over a common denominator before adding."
    )
    assert check_answer("2.5 km to m", "1")["hint"] in {
        "Multiply by how many m are in one km.",
        "A smaller unit needs a bigger number.",
        "Use 1 km = 1000 m.",
    }


def test_spec_schema() -> None:
    """The tool spec requires two strings, exercise and answer."""
    assert CHECK_ANSWER_SPEC["name"] == "check_answer"
    params = CHECK_ANSWER_SPEC["parameters"]
    assert params["type"] == "object"
    assert sorted(params["required"]) == ["answer", "exercise"]
    assert all(params["properties"][k]["type"] == "string" for k in ("exercise", "answer"))
    json.dumps(CHECK_ANSWER_SPEC)


def _assert_well_formed(result: dict[str, object]) -> None:
    assert isinstance(result["correct"], bool)
    assert result.get("message") != _INTERNAL_ERROR, "reached the catch-all"
    assert set(result) <= {"correct", "expected", "explanation", "hint", "kind", "error", "message"}
    assert result.get("kind", KINDS[0]) in KINDS
    json.dumps(result)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=250), st.text(max_size=250))
def test_never_raises_on_text(exercise: str, answer: str) -> None:
    """Arbitrary text for both arguments gives a well-formed dict."""
    _assert_well_formed(check_answer(exercise, answer))


_PIECES = [*"0123456789+-*/^()%=.,xyn ", "of", " km", " m", " to ", " in ", TIMES, DIVIDE]
_MATHY = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(_MATHY, _MATHY)
def test_never_raises_on_mathy_text(exercise: str, answer: str) -> None:
    """Near-valid maths reaches deep into the parser and still gives a well-formed dict."""
    _assert_well_formed(check_answer(exercise, answer))
