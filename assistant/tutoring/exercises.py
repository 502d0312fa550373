"""Exercises with small friendly numbers, plus right and wrong student answers for each.

``expression`` is exactly what ``check_answer`` takes. The split of an exercise is a
function of the numbers written in it (``split_of``: a CRC of the digit runs, held out when
it is 0 mod 5), and ``generate`` samples until the split matches. So train and held-out
expression strings are disjoint by construction, and so are their number combinations:
``2 x 3`` and ``2 * 3``, or ``90 min to h`` and ``90 minutes to hours``, share a split.
Answers come from ``check_answer`` itself, never from a second implementation of the maths.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from assistant.tutoring.checker import check_answer

__all__ = [
    "KINDS",
    "SPLITS",
    "Exercise",
    "exercise_stream",
    "generate",
    "next_exercise",
    "right_answers",
    "split_of",
    "wrong_answers",
]

KINDS: Final = ("arithmetic", "fractions", "percent", "equation", "conversion")
SPLITS: Final = ("train", "heldout")
_MAX_TRIES: Final = 500
_TIMES: Final = ("*", "\u00d7", "x")
_DIVIDE: Final = "\u00f7"
_MULTIPLY: Final = "\u00d7"


@dataclass(frozen=True)
class Exercise:
    kind: str
    prompt: str  # what the student reads
    expression: str  # what check_answer takes

    @property
    def system_message(self) -> str:
        """The system message that sets the exercise in a conversation, as the corpus does."""
        return f"Exercise: {self.prompt}"


def split_of(expression: str) -> str:
    """Which split an expression belongs to, from its digit runs alone."""
    # A hash, not a sum: the friendly numbers are often all multiples of 5.
    numbers = ",".join(re.findall(r"[0-9]+", expression))
    return "heldout" if zlib.crc32(numbers.encode()) % 5 == 0 else "train"


def _decimal(value: Fraction) -> str:
    """Exact decimal text (the generator only makes terminating values)."""
    if value.denominator == 1:
        return str(value.numerator)
    places = 0
    while (10**places) % value.denominator:
        places += 1
    digits = str(abs(value.numerator) * (10**places // value.denominator)).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0")
    return "-" + text if value < 0 else text


def _terminates(value: Fraction) -> bool:
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _ask(rng: random.Random, expression: str) -> str:
    return rng.choice((f"What is {expression}?", f"Work out {expression}."))


# --- makers: each returns (expression, prompt) -----------------------------------------


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    times = rng.choice(_TIMES)
    form = rng.randrange(11)
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 9)
    if form == 0:
        expr = f"{rng.randint(2, 99)} + {rng.randint(2, 99)}"
    elif form == 1:
        big = rng.randint(10, 99)
        expr = f"{big} - {rng.randint(2, big)}"
    elif form == 2:
        expr = f"{a} {times} {b}"
    elif form == 3:
        expr = f"{a * b} {_DIVIDE} {b}"
    elif form == 4:
        expr = f"{rng.randint(1, 20)} + {b} {times} {c}"
    elif form == 5:
        expr = f"({a} + {b}) {times} {c}"
    elif form == 6:
        expr = f"{a} {times} {b} - {rng.randint(1, min(20, a * b - 1))}"
    elif form == 7:
        expr = f"{rng.randint(20, 60)} - {rng.randint(1, 9)} - {rng.randint(1, 9)}"
    elif form == 8:
        base = rng.randint(2, 5)
        expr = f"{base}^{rng.randint(2, 6 if base == 2 else 3)}"
    elif form == 9:
        expr = f"-{rng.randint(1, 20)} + {rng.randint(1, 20)}"
    else:
        den = rng.choice((4, 10))
        x, y = Fraction(rng.randint(1, 40), den), Fraction(rng.randint(1, 40), den)
        expr = f"{_decimal(x)} {rng.choice('+-') if x > y else '+'} {_decimal(y)}"
    return expr, _ask(rng, expr)


_DENOMINATORS: Final = (2, 3, 4, 5, 6, 8, 10, 12)


def _proper(rng: random.Random, den: int) -> Fraction:
    """A proper fraction written in lowest terms with denominator ``den``."""
    while True:
        num = rng.randint(1, den - 1)
        if Fraction(num, den).denominator == den:
            return Fraction(num, den)


def _fr(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def _fractions(rng: random.Random) -> tuple[str, str]:
    form = rng.randrange(6)
    b, d = rng.sample(_DENOMINATORS, 2)
    x, y = _proper(rng, b), _proper(rng, d)
    if form == 0:
        expr = f"{_fr(x)} + {_fr(y)}"
    elif form == 1:
        expr = f"{_fr(max(x, y))} - {_fr(min(x, y))}"
    elif form == 2:
        x, y = _proper(rng, b), _proper(rng, b)
        expr = f"{_fr(x)} + {_fr(y)}"
    elif form == 3:
        expr = f"{_fr(x)} {_MULTIPLY} {_fr(y)}"
    elif form == 4:
        expr = f"{_fr(x)} {_DIVIDE} {_fr(y)}"
    else:
        expr = f"{rng.randint(2, 9)} {_MULTIPLY} {_fr(x)}"
    return expr, _ask(rng, expr)


_PERCENTS: Final = (5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80, 90)


def _percent(rng: random.Random) -> tuple[str, str]:
    expr = f"{rng.choice(_PERCENTS)}% of {10 * rng.randint(1, 40)}"
    return expr, f"What is {expr}?"


def _equation(rng: random.Random) -> tuple[str, str]:
    v = rng.choice("xxxyn")
    s = rng.randint(2, 12)  # the solution (except form 5, where it is a * s)
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    form = rng.randrange(8)
    if form == 0:
        expr = f"{a}{v} + {b} = {a * s + b}"
    elif form == 1:
        b = rng.randint(1, min(20, a * s - 1))
        expr = f"{a}{v} - {b} = {a * s - b}"
    elif form == 2:
        expr = f"{v} + {b} = {s + b}"
    elif form == 3:
        expr = f"{s + b} - {v} = {b}"
    elif form == 4:
        b = rng.randint(1, s - 1)
        expr = f"{a}({v} - {b}) = {a * (s - b)}"
    elif form == 5:
        expr = f"{v}/{a} = {s}"
    elif form == 6:
        expr = f"{a}{v} + {b} = {v} + {(a - 1) * s + b}"
    else:
        expr = f"{a}{v} = {a * s}"
    return expr, f"Solve {expr}."


def _steps(step: Fraction, count: int) -> Callable[[random.Random], Fraction]:
    return lambda rng: step * rng.randint(1, count)


# (from, to, amount): amounts chosen so every answer is a short exact decimal.
_CONVERSIONS: Final[tuple[tuple[str, str, Callable[[random.Random], Fraction]], ...]] = (
    ("km", "m", _steps(Fraction(1, 4), 40)),
    ("m", "cm", _steps(Fraction(1, 4), 40)),
    ("cm", "mm", _steps(Fraction(1, 2), 60)),
    ("m", "km", _steps(Fraction(250), 20)),
    ("cm", "m", _steps(Fraction(25), 40)),
    ("mm", "cm", _steps(Fraction(5), 40)),
    ("kg", "g", _steps(Fraction(1, 4), 40)),
    ("g", "kg", _steps(Fraction(250), 20)),
    ("l", "ml", _steps(Fraction(1, 4), 40)),
    ("ml", "l", _steps(Fraction(250), 20)),
    ("h", "min", _steps(Fraction(1, 2), 12)),
    ("min", "h", _steps(Fraction(30), 12)),
    ("min", "s", _steps(Fraction(1, 2), 20)),
    ("s", "min", _steps(Fraction(30), 20)),
    ("ft", "in", _steps(Fraction(1), 12)),
    ("in", "cm", _steps(Fraction(1), 12)),
    ("mi", "ft", _steps(Fraction(1), 3)),
    ("lb", "oz", _steps(Fraction(1), 10)),
    ("oz", "lb", _steps(Fraction(4), 10)),
)
_WORDS: Final[dict[str, tuple[str, str]]] = {
    "km": ("kilometre", "kilometres"),
    "m": ("metre", "metres"),
    "cm": ("centimetre", "centimetres"),
    "mm": ("millimetre", "millimetres"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "l": ("litre", "litres"),
    "ml": ("millilitre", "millilitres"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "ft": ("foot", "feet"),
    "in": ("inch", "inches"),
    "mi": ("mile", "miles"),
    "lb": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
}


def _conversion(rng: random.Random) -> tuple[str, str]:
    src, dst, amount = rng.choice(_CONVERSIONS)
    qty = amount(rng)
    src_name, dst_name = src, dst
    if rng.random() < 0.25:  # sometimes full words: "90 minutes to hours"
        src_name = _WORDS[src][0 if qty == 1 else 1]
        dst_name = _WORDS[dst][1]
    # "5 in in cm" is valid but reads badly, so "in" as a link only after other units.
    link = rng.choice(("to", "to", "in")) if src_name != "in" else "to"
    expr = f"{_decimal(qty)} {src_name} {link} {dst_name}"
    # The prompt states the whole expression, target unit included, so that it reaches the
    # model as one slot (see assistant.entities.slots) and the check copies it, never rebuilds it.
    return expr, f"Express {expr}." if link == "in" else f"Convert {expr}."


_MAKERS: Final[dict[str, Callable[[random.Random], tuple[str, str]]]] = {
    "arithmetic": _arithmetic,
    "fractions": _fractions,
    "percent": _percent,
    "equation": _equation,
    "conversion": _conversion,
}


def generate(kind: str, rng: random.Random, split: str) -> Exercise:
    """One exercise of ``kind`` from ``split`` ("train" or "heldout")."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown exercise kind {kind!r}; expected one of {KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for _ in range(_MAX_TRIES):
        expression, prompt = _MAKERS[kind](rng)
        if split_of(expression) == split:
            return Exercise(kind, prompt, expression)
    raise RuntimeError(f"no {split} {kind} exercise after {_MAX_TRIES} tries")


def next_exercise(kind: str | None = None, rng: random.Random | None = None) -> Exercise:
    """The next exercise of a tutoring conversation: of ``kind``, else of a random kind.

    From the training split: the exercises the bundled model has practised on.
    """
    rng = rng or random.Random()
    return generate(kind or rng.choice(KINDS), rng, "train")


def exercise_stream(
    seed: int, split: str, kinds: Sequence[str] | None = None
) -> Iterator[Exercise]:
    """An endless, reproducible stream of exercises (take what you need with islice)."""
    rng = random.Random(seed)
    chosen = tuple(kinds) if kinds else KINDS
    while True:
        yield generate(rng.choice(chosen), rng, split)


# --- answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Solved:
    value: Fraction
    number: str  # the expected number as check_answer writes it
    variable: str | None
    unit: str | None


def _solve(exercise: Exercise) -> _Solved:
    expected = check_answer(exercise.expression, "0").get("expected")
    if not isinstance(expected, str):
        raise ValueError("check_answer cannot read this exercise")
    if exercise.kind == "equation":
        variable, number = expected.split(" = ")
        return _Solved(Fraction(number), number, variable, None)
    if exercise.kind == "conversion":
        number, unit = expected.rsplit(" ", 1)
        return _Solved(Fraction(number), number, None, unit)
    return _Solved(Fraction(expected), expected, None, None)


def _write(value: Fraction, as_fraction: bool) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    if as_fraction or not _terminates(value):
        return _fr(value)
    return _decimal(value)


def _dress(number: str, solved: _Solved, rng: random.Random) -> str:
    """Add the wrappers a student might write: ``x = 4``, ``2500 m``."""
    if solved.variable is not None and rng.random() < 0.5:
        return f"{solved.variable} = {number}"
    if solved.unit is not None and rng.random() < 0.5:
        return f"{number} {solved.unit}"
    return number


def wrong_answers(exercise: Exercise, rng: random.Random) -> list[str]:
    """Plausible wrong answers: off by one, sign errors, typical slips for the kind."""
    solved = _solve(exercise)
    value, expr = solved.value, exercise.expression
    as_fraction = "/" in solved.number
    slips: list[tuple[Fraction, str | None]] = [(value + 1, None), (value - 1, None)]
    if value:
        slips += [(-value, None), (value * 10, None)]
    if m := re.fullmatch(r"(\d+)/(\d+) ([-+\u00d7\u00f7]) (\d+)/(\d+)", expr):
        a, b, op, c, d = int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5])
        if op == "+":  # adding tops and bottoms
            slips.append((Fraction(a + c, b + d), f"{a + c}/{b + d}"))
        elif op == _DIVIDE:  # multiplying instead of dividing
            slips.append((Fraction(a * c, b * d), f"{a * c}/{b * d}"))
        elif op == _MULTIPLY:  # cross-multiplying
            slips.append((Fraction(a * d, b * c), f"{a * d}/{b * c}"))
    if m := re.fullmatch(r"(\d+) \u00d7 (\d+)/(\d+)", expr):  # n times top and bottom
        n, a, b = int(m[1]), int(m[2]), int(m[3])
        slips.append((Fraction(a, b), f"{n * a}/{n * b}"))
    if not _terminates(value):  # a rounded decimal is not exact
        slips.append((Fraction(round(value * 100), 100), f"{float(value):.2f}"))
    if m := re.fullmatch(r"(\d+)% of (\d+)", expr):  # forgetting to divide by 100
        slips += [(Fraction(int(m[1]) * int(m[2])), None), (value / 10, None)]
    if m := re.fullmatch(r"(\d+)[xyn] ([-+]) (\d+) = (\d+)", expr):
        a, sign, b, c = int(m[1]), 1 if m[2] == "+" else -1, int(m[3]), int(m[4])
        # Forgetting to divide, and moving the constant with the wrong sign.
        slips += [(Fraction(c - sign * b), None), (Fraction(c + sign * b, a), None)]
    if exercise.kind == "conversion" and value:
        qty = Fraction(expr.split(" ", 1)[0])
        # A factor off by ten, and dividing instead of multiplying (q / factor).
        slips += [(value / 10, None), (value / 100, None), (qty * qty / value, None)]
    out: list[str] = []
    for wrong, text in slips:
        if wrong == value:
            continue
        written = text or _dress(_write(wrong, as_fraction), solved, rng)
        if written not in out:
            out.append(written)
    rng.shuffle(out)
    return out


def right_answers(exercise: Exercise, rng: random.Random) -> list[str]:
    """The correct answer written in several valid forms (7/8, 0.875, x = 4, 2500 m)."""
    solved = _solve(exercise)
    value = solved.value
    numbers = [solved.number]
    if value.denominator == 1:
        numbers.append(f"{value.numerator}.0")
    else:
        numbers += [_fr(value), f"{2 * value.numerator}/{2 * value.denominator}"]
        if _terminates(value):
            numbers.append(_decimal(value))
        if abs(value) > 1:
            whole, rest = divmod(abs(value.numerator), value.denominator)
            sign = "-" if value < 0 else ""
            numbers.append(f"{sign}{whole} {rest}/{value.denominator}")
    if exercise.kind == "fractions" and 0 < value < 1 and _terminates(value * 100):
        numbers.append(f"{_decimal(value * 100)}%")
    out: list[str] = []
    if solved.variable is not None:
        for number in numbers:
            out += [f"{solved.variable} = {number}", f"{solved.variable}={number}", number]
    elif solved.unit is not None:
        word = _WORDS.get(solved.unit, (solved.unit, solved.unit))[1]
        for number in numbers:
            out += [number, f"{number} {solved.unit}", f"{number} {word}"]
    else:
        out = [*numbers, f"= {solved.number}"]
    out = list(dict.fromkeys(out))
    rng.shuffle(out)
    return out
