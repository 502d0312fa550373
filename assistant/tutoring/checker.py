"""Exact checking of a student's answer to a tutoring exercise (the ``check_answer`` tool).

The model sees exercises and answers only as placeholders, so this tool reads the real
strings itself: our own tokenizer and recursive-descent parser build a tree, and sympy does
the maths on it (exact Rational arithmetic, linear solving, unit factors from
``sympy.physics.units``). Student text never reaches ``sympify``/``parse_expr`` or any
other evaluator: sympy only receives Rationals and one Symbol. Sizes are checked before a
power is computed. Every entry point returns a JSON-ready dict; nothing raises.

Choices:

* Answers compare exactly as rationals: ``0.875`` equals ``7/8``, ``0.33`` is not ``1/3``,
  and an unreduced ``14/16`` counts as ``7/8`` (the hint then suggests simplifying).
* A percent answer (``87.5%``) is its number divided by 100. It is accepted for
  arithmetic, fraction and percent exercises and is ``bad_answer`` for equations and
  conversions. So ``12%`` is wrong for ``15% of 80`` (it is 0.12); the hint says so.
* A unit in an answer is the unit of its number and is converted to the asked unit
  before comparing: for ``2.5 km to m`` both ``2500 m`` and ``2.5 km`` are right. Units
  are only read for conversions; anywhere else a unit is ``bad_answer``.
* Wrappers stripped from answers: a leading ``=``, a leading ``x =`` (equations only;
  another letter than the equation's variable is ``bad_answer``), a final full stop.
* An empty answer or a give-up ("idk", "?") is ``empty_answer`` *with* ``expected`` and
  ``explanation``, so the assistant can show the solution.
* ``expected`` is a reduced fraction when the exercise has ``/`` or a division sign,
  else a terminating decimal, else a fraction. Conversions use the unit's symbol
  (``1.5 h`` for ``90 min to hours``).
* ``a/b`` written without spaces is a fraction literal binding tighter than any operator
  (school notation: ``3/4 \u00f7 1/2`` is 3/2). ``x`` means times only between a number
  and a following number or bracket (``2 x 3``), and never in an equation in x.
* An exercise may be given as its prompt: a leading "What is", "Solve", "Convert" ... and
  a final ``?`` or ``.`` are ignored, and "How many g are in 3 kg?" means ``3 kg to g``.
* Operators may be words ("times", "multiplied by", "divided by", "plus", "minus", "take
  away", "to the power of", "squared", "equals", "per cent"), and so may a half, a third
  and a quarter; "add 15 and 27", "subtract 3 from 10", "find x: ..." are read too.
* An exercise may state its answer: "7 x 8 = 56?", "is 1.2 m equal to 120 cm?". Without
  a variable, the left side is the exercise and the right side is the answer when the
  answer argument is empty; "1.2 m = ? cm" asks for cm. Answers may be a short sentence
  ("the answer is 56", "x is 4").
* ``classify`` is syntactic and never fails; ``check_answer`` validates. Results also
  carry ``kind``. Messages never quote the inputs (the model must not see them).
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Final, TypeAlias

import sympy
from sympy.physics import units as _units

__all__ = [
    "CHECK_ANSWER_SPEC",
    "KINDS",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "check_answer",
    "classify",
]

KINDS: Final = ("arithmetic", "fractions", "percent", "equation", "conversion")
MAX_CHARS: Final = 200
MAX_EXPONENT: Final = 10
MAX_DEPTH: Final = 20
MAX_DIGITS: Final = 15
# Powers are the only way to blow up sizes; this caps every intermediate value.
_MAX_BITS: Final = 1024
# Longer step-by-step explanations are shortened to "exercise = result."
_MAX_SHOWN_STEPS: Final = 5
_INTERNAL_ERROR: Final = "The exercise could not be checked."

CHECK_ANSWER_SPEC: Final[dict[str, Any]] = {
    "name": "check_answer",
    "description": (
        "Check a student's answer to a maths exercise exactly (arithmetic, fractions, "
        "percentages, linear equations, unit conversions). Returns whether it is correct, "
        "the expected answer, a one-sentence explanation and a hint."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "exercise": {
                "type": "string",
                "description": "the exercise, e.g. 3/4 + 1/8, 15% of 80, 2x + 3 = 11, 2.5 km to m",
            },
            "answer": {"type": "string", "description": "the student's answer as written"},
        },
        "required": ["exercise", "answer"],
        "additionalProperties": False,
    },
}


class _Reject(Exception):
    """Internal: the exercise or answer can't be used; becomes an error dict."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _bad_exercise(message: str) -> _Reject:
    return _Reject("bad_exercise", message)


_UNREADABLE = (
    "I can only read arithmetic (12 * 7), fractions (3/4 + 1/8), percentages (15% of 80), "
    "linear equations (2x + 3 = 11) and unit conversions (2.5 km to m)."
)

# --- text normalisation ---------------------------------------------------------------

_SUPER_DIGITS = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
_SUPER_RE = re.compile(f"[{_SUPER_DIGITS}]+")
_SUPER_TABLE = str.maketrans(_SUPER_DIGITS, "0123456789")
_CHAR_MAP = str.maketrans(
    {
        "\u00d7": "*",
        "\u22c5": "*",
        "\u00b7": "*",
        "\u2219": "*",
        "\u2217": "*",
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2044": "/",
        "\u2215": "/",
        "\u2192": " to ",
        "\u2019": "'",
    }
)
_PROMPT_PREFIX = re.compile(
    r"^(?:what is|what's|whats|how much is|calculate|compute|work out|evaluate|simplify|find"
    r"|solve(?: for [a-z])?|convert|express)\b\s*:?\s*"
)
# "find x: 5x = 35", "what is x if 2x + 3 = 11"
_VARIABLE_PREFIX = re.compile(
    r"^(?:what is|what's|whats|find|work out) [xyn](?:\s+(?:if|when|given)\b|\s*:)\s*"
)
# Operators and small fractions written as words, in the order they are replaced.
_WORD_OPERATORS: Final = tuple(
    (re.compile(pattern), symbol)
    for pattern, symbol in (
        (r"\bto the power of\b", "^"),
        (r"\bsquared\b", "^2"),
        (r"\bcubed\b", "^3"),
        (r"\bmultiplied by\b|\btimes\b", "*"),
        (r"\bdivided by\b", "\u00f7"),
        (r"\bplus\b", "+"),
        (r"\bminus\b|\btake away\b", "-"),
        (r"\b(?:is )?equal to\b|\bequals\b", "="),
        (r"\bper cent\b", "percent"),
        (r"(?<=[0-9]) over (?=[0-9])", "/"),  # "3 over 4" is the fraction 3/4
        (r"\b(?:a |one )?half of\b", "1/2 of"),
        (r"\b(?:a|one) half\b", "1/2"),
        (r"\b(?:a|one) third\b", "1/3"),
        (r"\b(?:a|one) quarter\b", "1/4"),
        (r"\bthree quarters\b", "3/4"),
    )
)
# "add 15 and 27", "subtract 3 from 10", "multiply 6 by 7", "divide 45 by 9"
_VERB_FORMS: Final = (
    (re.compile(r"^add (.+) and (.+)$"), r"\1 + \2"),
    (re.compile(r"^subtract (.+) from (.+)$"), r"\2 - \1"),
    (re.compile(r"^multiply (.+) by (.+)$"), r"\1 * \2"),
    (re.compile(r"^divide (.+) by (.+)$"), "\\1 \u00f7 \\2"),
)


_VULGAR_AFTER_DIGIT = re.compile("(?<=[0-9])(?=[\u00bc-\u00be\u2150-\u215e])")
# Thousands grouped with a space or an apostrophe ("1 000", "1'000"): never the whole part
# of a mixed number ("1 100/3"), which a fraction bar follows.
_THOUSANDS = re.compile("(?<![0-9.,/])[0-9]{1,3}(?:[ '\u2019][0-9]{3})+(?![0-9/]|\\s*/)")


def _normalize(text: str) -> str:
    # Superscripts first: NFKC would turn x\u00b2 into x2.
    text = _SUPER_RE.sub(lambda m: "^" + m.group().translate(_SUPER_TABLE), text)
    # And a mixed number: NFKC would turn 1\u00bd into 11/2.
    text = _VULGAR_AFTER_DIGIT.sub(" ", text)
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_MAP).lower()
    text = _THOUSANDS.sub(lambda m: re.sub("[ '\u2019]", "", m.group()), text)
    return " ".join(text.replace("**", "^").split())


_HOW_MANY = re.compile(r"^how many ([a-z]+) (?:(?:are|is) )?(?:there )?(?:in )?(.+)$")


_SMALL_NUMBERS: Final = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS: Final = (
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
)
_NUMBER_WORD_VALUES: Final[dict[str, int]] = {
    **{word: value for value, word in enumerate(_SMALL_NUMBERS)},
    **{word: 10 * (value + 2) for value, word in enumerate(_TENS)},
}
_NUMBER_WORD = r"(?:" + "|".join([*_SMALL_NUMBERS, *_TENS, "hundred", "thousand"]) + r")"
# A run of number words: "fifty-six", "one hundred and five", "two thousand five hundred";
# "and" joins only after hundred or thousand, so "add fifteen and twenty" stays two numbers.
_NUMBER_RUN = re.compile(
    rf"\b{_NUMBER_WORD}(?:(?:[- ]|(?<=hundred) and |(?<=thousand) and ){_NUMBER_WORD})*\b"
)


def _words_value(words: list[str]) -> int | None:
    """The number a run of number words names, or None if it isn't one well-formed number."""
    total, group, last = 0, 0, ""
    for word in words:
        value = _NUMBER_WORD_VALUES.get(word)
        if word == "hundred" and last in ("unit", "teen") and 0 < group < 10:
            group, last = group * 100, "hundred"
        elif word == "thousand" and last in ("unit", "teen", "tens", "hundred") and not total:
            total, group, last = group * 1000, 0, "thousand"
        elif value is None or (value == 0 and len(words) > 1):
            return None
        elif value < 10 and last in ("", "tens", "hundred", "thousand"):
            group, last = group + value, "unit"
        elif value < 20 and value >= 10 and last in ("", "hundred", "thousand"):
            group, last = group + value, "teen"
        elif value >= 20 and last in ("", "hundred", "thousand"):
            group, last = group + value, "tens"
        else:
            return None
    return total + group


def _number_words(text: str) -> str:
    """Numbers written as words become digits; a run that isn't one number stays as it is."""

    def digits(m: re.Match[str]) -> str:
        value = _words_value(re.split(r"[- ]+", m.group().replace(" and ", " ")))
        return m.group() if value is None else str(value)

    return _NUMBER_RUN.sub(digits, text)


_HOW_MANY_AFTER = re.compile(r"^(.+?) (?:is|are|equals|makes) how many ([a-z]+)$")


def _prepare(exercise: str) -> str:
    text = _normalize(exercise)
    text = _VARIABLE_PREFIX.sub("", text, count=1)
    text = _PROMPT_PREFIX.sub("", text, count=1).rstrip(" ?.!:=")  # "7 * 8 = ?"
    for pattern, symbol in _WORD_OPERATORS:
        text = pattern.sub(symbol, text)
    text = _number_words(text)
    for pattern, template in _VERB_FORMS:
        text = pattern.sub(template, text, count=1)
    if m := _HOW_MANY.match(text):  # "how many g are in 3 kg" is "3 kg to g"
        text = f"{m[2]} to {m[1]}"
    elif m := _HOW_MANY_AFTER.match(text):  # "3 kg is how many g"
        text = f"{m[1]} to {m[2]}"
    return text


# --- numbers ---------------------------------------------------------------------------


def _terminating(value: Fraction) -> bool:
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _decimal(value: Fraction) -> str:
    """Exact decimal text of a terminating fraction."""
    den, places = value.denominator, 0
    while (10**places) % den != 0:
        places += 1
    scaled = abs(value.numerator) * (10**places // den)
    digits = str(scaled).rjust(places + 1, "0")
    whole, frac = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def _fmt(value: Fraction, prefer_fraction: bool = False) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    if prefer_fraction or not _terminating(value):
        return f"{value.numerator}/{value.denominator}"
    return _decimal(value)


def _check_size(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_BITS:
        raise _bad_exercise("The numbers in this exercise get too large to check.")
    return value


def _fraction(value: Any) -> Fraction:
    """A sympy number as a Fraction (the rest of the module formats Fractions)."""
    if not value.is_Rational:
        raise _bad_exercise(_INTERNAL_ERROR)
    return _check_size(Fraction(int(value.p), int(value.q)))


@dataclass(frozen=True)
class _Number:
    value: Fraction
    style: str  # "integer", "decimal", "fraction" or "mixed"
    unreduced: bool = False


_MIXED_RE = re.compile(r"^([-+]?)\s*([0-9]+)\s+([0-9]+)\s*/\s*([0-9]+)$")
_FRAC_RE = re.compile(r"^([-+]?)\s*([0-9]+)\s*/\s*([0-9]+)$")
_DEC_RE = re.compile(r"^([-+]?)\s*([0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.([0-9]*))?$")


def _digits_ok(code: str, *parts: str) -> None:
    if sum(ch.isdigit() for part in parts for ch in part) > MAX_DIGITS:
        raise _Reject(code, f"Numbers longer than {MAX_DIGITS} digits are not supported.")


def _parse_number(text: str, code: str) -> _Number | None:
    """A single written number: 12, -0.875, 7/8, 1 1/2, 2,500 (None if it isn't one)."""
    if m := _MIXED_RE.match(text):
        _digits_ok(code, m[2])
        _digits_ok(code, m[3], m[4])
        whole, num, den = int(m[2]), int(m[3]), int(m[4])
        if den == 0 or num >= den:
            return None
        value = whole + Fraction(num, den)
        return _Number(-value if m[1] == "-" else value, "mixed", math.gcd(num, den) != 1)
    if m := _FRAC_RE.match(text):
        _digits_ok(code, m[2])
        _digits_ok(code, m[3])
        num, den = int(m[2]), int(m[3])
        if den == 0:
            raise _Reject(code, "A fraction with denominator 0 has no value.")
        value = Fraction(num, den)
        unreduced = value.denominator != den
        return _Number(-value if m[1] == "-" else value, "fraction", unreduced)
    if (m := _DEC_RE.match(text)) and (m[2] or m[3]):
        ints, frac = m[2].replace(",", ""), m[3] or ""
        _digits_ok(code, ints, frac)
        value = Fraction(int(ints or "0")) + Fraction(int(frac or "0"), 10 ** len(frac))
        style = "decimal" if m[3] else "integer"
        return _Number(-value if m[1] == "-" else value, style)
    return None


# --- units -----------------------------------------------------------------------------

# Each unit as a sympy quantity (exact SI definitions: 1 in = 0.0254 m, 1 lb = 0.45359237
# kg) times a multiplier; the factor to the kind's base unit is sympy's exact conversion.
_BASES: Final[dict[str, Any]] = {
    "length": _units.meter,
    "mass": _units.kilogram,
    "volume": _units.liter,
    "time": _units.second,
}
_QUANTITIES: Final[dict[str, tuple[str, Any, int]]] = {
    "mm": ("length", _units.millimeter, 1),
    "cm": ("length", _units.centimeter, 1),
    "m": ("length", _units.meter, 1),
    "km": ("length", _units.kilometer, 1),
    "in": ("length", _units.inch, 1),
    "ft": ("length", _units.foot, 1),
    "yd": ("length", _units.yard, 1),
    "mi": ("length", _units.mile, 1),
    "mg": ("mass", _units.milligram, 1),
    "g": ("mass", _units.gram, 1),
    "kg": ("mass", _units.kilogram, 1),
    "oz": ("mass", _units.pound, 16),  # sympy has no ounce: 1/16 lb
    "lb": ("mass", _units.pound, 1),
    "ml": ("volume", _units.milliliter, 1),
    "cl": ("volume", _units.centiliter, 1),
    "dl": ("volume", _units.deciliter, 1),
    "l": ("volume", _units.liter, 1),
    "s": ("time", _units.second, 1),
    "min": ("time", _units.minute, 1),
    "h": ("time", _units.hour, 1),
    "day": ("time", _units.day, 1),
}


def _to_base(kind: str, quantity: Any, per: int) -> Fraction:
    base = _BASES[kind]
    return _fraction(_units.convert_to(quantity, base) / base / per)


_UNITS: Final[dict[str, tuple[str, Fraction]]] = {
    symbol: (kind, _to_base(kind, quantity, per))
    for symbol, (kind, quantity, per) in _QUANTITIES.items()
}
_UNIT_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "mm": ("millimeter", "millimetre"),
    "cm": ("centimeter", "centimetre"),
    "m": ("meter", "metre"),
    "km": ("kilometer", "kilometre"),
    "in": ("inch", "inches"),
    "ft": ("foot", "feet"),
    "yd": ("yard",),
    "mi": ("mile",),
    "mg": ("milligram", "milligramme"),
    "g": ("gram", "gramme"),
    "kg": ("kilogram", "kilogramme", "kilo"),
    "oz": ("ounce",),
    "lb": ("pound", "lbs"),
    "ml": ("milliliter", "millilitre"),
    "cl": ("centiliter", "centilitre"),
    "dl": ("deciliter", "decilitre"),
    "l": ("liter", "litre", "ltr"),
    "s": ("second", "sec"),
    "min": ("minute",),
    "h": ("hour", "hr"),
    "day": ("day",),
}
_UNIT_WORDS: Final[dict[str, str]] = {
    word: symbol
    for symbol, names in _UNIT_NAMES.items()
    for name in names
    for word in (name, name + "s")
}


def _unit_symbol(word: str) -> str | None:
    if word in _UNITS:
        return word
    if word.endswith("s") and len(word) > 2 and word[:-1] in _UNITS:  # kgs, cms, mins
        return word[:-1]
    return _UNIT_WORDS.get(word)


_CONVERT_RE = re.compile(
    r"^(?P<qty>[-+]?\s*\.?[0-9][0-9.,/ ]*?)\s*(?P<src>[a-z]+)\s+(?:to|in|into|as)\s+"
    r"(?P<dst>[a-z]+)$"
)


def _factor_sentence(src: str, dst: str) -> str:
    """'1 km = 1000 m', stated in whichever direction has a terminating factor >= 1."""
    f = _UNITS[src][1] / _UNITS[dst][1]
    for big, small, k in ((src, dst, f), (dst, src, 1 / f)):
        if k >= 1 and _terminating(k):
            return f"1 {big} = {_fmt(k)} {small}"
    for big, small, k in ((src, dst, f), (dst, src, 1 / f)):
        if _terminating(k):
            return f"1 {big} = {_fmt(k)} {small}"
    return f"1 {src} = {_fmt(f)} {dst}"


# --- tokens and syntax tree ------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, frac, op, lp, rp, pct, of, var
    text: str
    value: Fraction = Fraction(0)
    frac: tuple[int, int] = (0, 1)
    symbol: str = ""


@dataclass(frozen=True)
class _Num:
    value: Fraction
    text: str
    # Numerator and denominator as shown (6/8 stays 6/8); None for decimals.
    frac: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Neg:
    operand: _Node


@dataclass(frozen=True)
class _Pct:
    operand: _Node


@dataclass(frozen=True)
class _Bin:
    op: str  # + - * / ^
    left: _Node
    right: _Node
    symbol: str  # how it was written: "\u00d7", "/", "\u00f7", "of", "" (implicit) ...


_Node: TypeAlias = _Num | _Var | _Neg | _Pct | _Bin

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<frac>[0-9]+/[0-9]+(?![0-9.]))"
    r"|(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"|(?P<word>[a-z]+)"
    r"|(?P<sym>[-+*/^()\[\]{}%=\u00f7])"
)
_VARIABLES: Final = ("x", "y", "n")


def _tokenize(text: str, variable: str | None) -> list[_Tok]:
    """Tokens of one side; ``x`` is a variable only if it is the equation's variable."""
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise _bad_exercise("The exercise contains a symbol I can't read. " + _UNREADABLE)
        kind, chunk = m.lastgroup, m.group()
        pos = m.end()
        if kind == "frac":
            num, den = chunk.split("/")
            if tokens and tokens[-1].text == "^":
                # 2^3/4 is (2^3)/4: rescan from the slash as an operator.
                kind, chunk = "num", num
                pos = m.start() + len(num)
            else:
                _digits_ok("bad_exercise", num)
                _digits_ok("bad_exercise", den)
                if int(den) == 0:
                    raise _bad_exercise("The exercise divides by zero.")
                tokens.append(
                    _Tok("frac", chunk, Fraction(int(num), int(den)), (int(num), int(den)))
                )
                continue
        if kind == "num":
            number = _parse_number(chunk, "bad_exercise")
            if number is None:
                raise _bad_exercise("The exercise contains a number I can't read.")
            tokens.append(_Tok("num", chunk, number.value))
        elif kind == "word":
            if chunk == "x" and variable != "x" and not _times_x(tokens, text[pos:]):
                raise _bad_exercise(
                    "The equation has more than one variable."
                    if variable
                    else "The exercise has a variable but no equals sign to solve."
                )
            tokens.append(_word_token(chunk, variable))
        elif kind == "sym":
            tokens.append(_symbol_token(chunk))
    return tokens


def _times_x(before: list[_Tok], after: str) -> bool:
    """Whether an ``x`` sits between numbers (2 x 3, (1 + 1)x(2)): then it means times."""
    ends_operand = bool(before) and before[-1].kind in ("num", "frac", "rp", "pct")
    return ends_operand and after.lstrip()[:1] in tuple("0123456789.(")


def _word_token(word: str, variable: str | None) -> _Tok:
    if word == variable:
        return _Tok("var", word)
    if word == "x":
        return _Tok("op", "*", symbol="\u00d7")
    if word == "of":
        return _Tok("of", word)
    if word in ("percent", "pct"):
        return _Tok("pct", "%")
    if word in _VARIABLES:
        raise _bad_exercise("The exercise has a variable but no equals sign to solve.")
    raise _bad_exercise("The exercise contains a word I don't understand. " + _UNREADABLE)


def _symbol_token(ch: str) -> _Tok:
    if ch in "([{":
        return _Tok("lp", "(")
    if ch in ")]}":
        return _Tok("rp", ")")
    if ch == "%":
        return _Tok("pct", "%")
    if ch == "=":
        return _Tok("eq", "=")
    if ch == "\u00f7":
        return _Tok("op", "/", symbol="\u00f7")
    return _Tok("op", ch, symbol="\u00d7" if ch == "*" else ch)


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary ((*|/|of) unary | implicit)*;
    unary := (+|-) unary | power; power := postfix (^ unary)?; postfix := primary %*."""

    def __init__(self, tokens: list[_Tok]) -> None:
        self._toks = tokens
        self._i = 0

    def parse(self) -> _Node:
        if not self._toks:
            raise _bad_exercise("The exercise is missing a side or is empty.")
        node = self._expr(0)
        if self._i != len(self._toks):
            raise _bad_exercise("The exercise has something extra I can't read. " + _UNREADABLE)
        return node

    def _peek(self) -> _Tok | None:
        return self._toks[self._i] if self._i < len(self._toks) else None

    def _is(self, kind: str, *texts: str) -> bool:
        tok = self._peek()
        return tok is not None and tok.kind == kind and (not texts or tok.text in texts)

    def _next(self) -> _Tok:
        tok = self._peek()
        if tok is None:
            raise _bad_exercise("The exercise stops in the middle of a calculation.")
        self._i += 1
        return tok

    @staticmethod
    def _deeper(depth: int) -> int:
        if depth + 1 > MAX_DEPTH:
            raise _bad_exercise(f"The exercise is nested more than {MAX_DEPTH} levels deep.")
        return depth + 1

    def _expr(self, depth: int) -> _Node:
        node = self._term(depth)
        while self._is("op", "+", "-"):
            op = self._next().text
            node = _Bin(op, node, self._term(depth), op)
        return node

    def _term(self, depth: int) -> _Node:
        node = self._unary(depth)
        while True:
            if self._is("op", "*", "/"):
                tok = self._next()
                node = _Bin(tok.text, node, self._unary(depth), tok.symbol)
            elif self._is("of"):
                self._next()
                node = _Bin("*", node, self._unary(depth), "of")
            elif self._is("var") or self._is("lp"):
                node = _Bin("*", node, self._power(depth), "")
            else:
                return node

    def _unary(self, depth: int) -> _Node:
        if self._is("op", "+", "-"):
            sign = self._next().text
            operand = self._unary(self._deeper(depth))
            return _Neg(operand) if sign == "-" else operand
        return self._power(depth)

    def _power(self, depth: int) -> _Node:
        base = self._postfix(depth)
        if self._is("op", "^"):
            self._next()
            return _Bin("^", base, self._unary(self._deeper(depth)), "^")
        return base

    def _postfix(self, depth: int) -> _Node:
        node = self._primary(depth)
        while self._is("pct"):
            self._next()
            node = _Pct(node)
        return node

    def _primary(self, depth: int) -> _Node:
        tok = self._next()
        if tok.kind == "num":
            after = self._peek()
            if after is not None and after.kind == "frac" and tok.text.isdigit():
                # A mixed number such as 1 1/2.
                self._next()
                num, den = after.frac
                if num >= den:
                    raise _bad_exercise("A mixed number needs a fraction part below 1.")
                value = tok.value + Fraction(num, den)
                shown = (int(tok.text) * den + num, den)
                return _Num(value, f"{tok.text} {after.text}", shown)
            whole = (int(tok.value), 1) if tok.text.isdigit() else None
            return _Num(tok.value, tok.text, whole)
        if tok.kind == "frac":
            return _Num(tok.value, tok.text, tok.frac)
        if tok.kind == "var":
            return _Var(tok.text)
        if tok.kind == "lp":
            inner = self._expr(self._deeper(depth))
            if self._next().kind != "rp":
                raise _bad_exercise("The brackets in the exercise don't match.")
            return inner
        if tok.kind == "rp":
            raise _bad_exercise("The brackets in the exercise don't match.")
        raise _bad_exercise("The exercise has an operator in the wrong place.")


# --- evaluation (sympy) ------------------------------------------------------------------
# The tree is built by the parser above from our own tokens; sympy only ever receives
# Rationals and one Symbol, never text, so nothing a student types reaches an evaluator.


def _bounded(expr: Any) -> Any:
    """Every coefficient of a (linear) value stays within ``_MAX_BITS``."""
    for number in expr.atoms(sympy.Rational):
        _fraction(number)
    return expr


def _sym(node: _Node) -> Any:
    """The exact sympy value of a side: Rational arithmetic, linear in its one variable."""
    if isinstance(node, _Num):
        return sympy.Rational(node.value.numerator, node.value.denominator)
    if isinstance(node, _Var):
        return sympy.Symbol(node.name)
    if isinstance(node, _Neg):
        return -_sym(node.operand)
    if isinstance(node, _Pct):
        return _bounded(_sym(node.operand) / 100)
    left, right = _sym(node.left), _sym(node.right)
    if node.op == "^":
        return _sym_power(left, right)
    if node.op == "*" and left.free_symbols and right.free_symbols:
        raise _bad_exercise("The equation multiplies the variable by itself; not linear.")
    if node.op == "/":
        if right.free_symbols:
            raise _bad_exercise("The equation divides by the variable; not linear.")
        if right == 0:
            raise _bad_exercise("The exercise divides by zero.")
    return _bounded(_combine(node.op, left, right))


def _combine(op: str, left: Any, right: Any) -> Any:
    if op == "+":
        return sympy.expand(left + right)
    if op == "-":
        return sympy.expand(left - right)
    if op == "*":
        return sympy.expand(left * right)
    return sympy.expand(left / right)


def _sym_power(base: Any, exponent: Any) -> Any:
    """A power, sized before sympy computes it: powers are how sizes blow up."""
    if exponent.free_symbols:
        raise _bad_exercise("The variable can't be in an exponent.")
    if not exponent.is_Integer:
        raise _bad_exercise("Only whole-number exponents are supported.")
    if abs(int(exponent)) > MAX_EXPONENT:
        raise _bad_exercise(f"Exponents above {MAX_EXPONENT} are too big to check.")
    if base.free_symbols:
        if exponent != 1:
            raise _bad_exercise("The equation raises the variable to a power; not linear.")
        return base
    if base == 0 and exponent < 0:
        raise _bad_exercise("The exercise divides by zero.")
    size = max(int(base.p).bit_length(), int(base.q).bit_length())
    if size * abs(int(exponent)) > _MAX_BITS:
        raise _bad_exercise("The numbers in this exercise get too large to check.")
    return sympy.Pow(base, exponent)


def _linear(expr: Any, var: str) -> tuple[Fraction, Fraction]:
    """``expr`` as ``a*var + b``, read off sympy's polynomial in ``var``."""
    if not expr.free_symbols:
        return Fraction(0), _fraction(expr)
    poly = sympy.Poly(expr, sympy.Symbol(var))
    a, b = poly.coeff_monomial(sympy.Symbol(var)), poly.coeff_monomial(1)
    return _fraction(a), _fraction(b)


def _apply(op: str, left: Fraction, right: Fraction) -> Fraction:
    """One operation on two numbers (a step of a worked explanation)."""
    a = sympy.Rational(left.numerator, left.denominator)
    b = sympy.Rational(right.numerator, right.denominator)
    return _fraction(sympy.Pow(a, b) if op == "^" else _combine(op, a, b))


# --- rendering and worked steps ----------------------------------------------------------

_P_ADD, _P_MUL, _P_NEG, _P_FRAC, _P_POW, _P_PCT, _P_ATOM = 10, 20, 30, 35, 40, 50, 60


def _prec(node: _Node) -> int:
    if isinstance(node, _Num):
        if node.text.startswith("-"):
            return _P_NEG
        return _P_FRAC if ("/" in node.text or " " in node.text) else _P_ATOM
    if isinstance(node, _Var):
        return _P_ATOM
    if isinstance(node, _Neg):
        return _P_NEG
    if isinstance(node, _Pct):
        return _P_PCT
    return {"+": _P_ADD, "-": _P_ADD, "*": _P_MUL, "/": _P_MUL}.get(node.op, _P_POW)


def _wrap(text: str, needed: bool) -> str:
    return f"({text})" if needed else text


def _render(node: _Node) -> str:
    if isinstance(node, _Num):
        return node.text
    if isinstance(node, _Var):
        return node.name
    if isinstance(node, _Neg):
        return "-" + _wrap(_render(node.operand), _prec(node.operand) <= _P_NEG)
    if isinstance(node, _Pct):
        return _wrap(_render(node.operand), _prec(node.operand) < _P_ATOM) + "%"
    lp, rp = _prec(node.left), _prec(node.right)
    if node.op == "^":
        left = _wrap(_render(node.left), lp <= _P_POW)
        return f"{left}^{_wrap(_render(node.right), rp < _P_POW)}"
    level = _P_ADD if node.op in ("+", "-") else _P_MUL
    left = _wrap(_render(node.left), lp < level)
    right_wrapped = rp <= level or rp == _P_NEG
    right = _wrap(_render(node.right), right_wrapped)
    if node.op in ("+", "-"):
        return f"{left} {node.op} {right}"
    if node.op == "/":
        return f"{left} {node.symbol or '/'} {right}"
    if node.symbol == "of" and isinstance(node.left, _Pct):
        return f"{left} of {right}"
    if node.symbol == "" and (right_wrapped or isinstance(node.right, _Var)):
        return f"{left}{right}"
    return f"{left} \u00d7 {right}"


def _num(value: Fraction, prefer_fraction: bool) -> _Num:
    shown = (value.numerator, value.denominator)
    return _Num(value, _fmt(value, prefer_fraction), shown if prefer_fraction else None)


def _frac_num(num: int, den: int) -> _Num:
    if den < 0:
        num, den = -num, -den
    return _Num(Fraction(num, den), f"{num}/{den}" if den != 1 else str(num), (num, den))


def _step(node: _Node, pf: bool) -> _Node | None:
    """One evaluation step (leftmost innermost operation), or None when done."""
    if isinstance(node, (_Num, _Var)):
        return None
    if isinstance(node, (_Neg, _Pct)):
        inner = _step(node.operand, pf)
        if inner is not None:
            return replace(node, operand=inner)
        value = _leaf(node.operand)
        return _num(-value if isinstance(node, _Neg) else value / 100, pf)
    if (inner := _step(node.left, pf)) is not None:
        return replace(node, left=inner)
    if (inner := _step(node.right, pf)) is not None:
        return replace(node, right=inner)
    left, right = _leaf(node.left), _leaf(node.right)
    if pf and (shown := _fraction_step(node)) is not None:
        return shown
    return _num(_apply(node.op, left, right), pf)


def _fraction_step(node: _Bin) -> _Node | None:
    """School steps shown for fractions: common denominator, then add; multiply across."""
    left, right = node.left, node.right
    if not (isinstance(left, _Num) and isinstance(right, _Num) and left.frac and right.frac):
        return None
    (ln, ld), (rn, rd) = left.frac, right.frac
    if max(ld, rd) == 1:
        return None
    if node.op in ("+", "-") and ld != rd:
        den = math.lcm(ld, rd)
        return replace(
            node, left=_frac_num(ln * (den // ld), den), right=_frac_num(rn * (den // rd), den)
        )
    if node.op in ("+", "-"):
        return _frac_num(ln + rn if node.op == "+" else ln - rn, ld)
    if node.op == "*":
        return _frac_num(ln * rn, ld * rd)
    return None  # division is first rewritten by _divide_by_reciprocal


def _leaf(node: _Node) -> Fraction:
    if not isinstance(node, _Num):
        raise _bad_exercise(_INTERNAL_ERROR)
    return node.value


def _divide_by_reciprocal(node: _Node) -> _Node:
    """Rewrite a \u00f7 b/c as a \u00d7 c/b once both sides are numbers (shown as a step)."""
    if isinstance(node, (_Neg, _Pct)):
        return replace(node, operand=_divide_by_reciprocal(node.operand))
    if not isinstance(node, _Bin):
        return node
    left, right = _divide_by_reciprocal(node.left), _divide_by_reciprocal(node.right)
    if (
        node.op == "/"
        and isinstance(left, _Num)
        and isinstance(right, _Num)
        and left.frac
        and right.frac
        and right.frac[0] != 0
        and max(left.frac[1], right.frac[1]) > 1
    ):
        return _Bin("*", left, _frac_num(right.frac[1], right.frac[0]), "\u00d7")
    return replace(node, left=left, right=right)


def _worked_steps(tree: _Node, value: Fraction, pf: bool) -> str:
    parts = [_render(tree)]
    node = tree
    for _ in range(2 * _MAX_SHOWN_STEPS):
        flipped = _divide_by_reciprocal(node) if pf else node
        if flipped != node:
            node = flipped
        else:
            nxt = _step(node, pf)
            if nxt is None:
                break
            node = nxt
        text = _render(node)
        if text != parts[-1]:
            parts.append(text)
    final = _fmt(value, pf)
    if parts[-1] != final:
        parts.append(final)
    if len(parts) == 1:
        return f"{final} is already a single number."
    if len(parts) > _MAX_SHOWN_STEPS:
        parts = [parts[0], parts[-1]]
    return " = ".join(parts) + "."


# --- solutions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Solution:
    kind: str
    value: Fraction
    expected: str
    explanation: str
    hint: str
    prefer_fraction: bool = False
    variable: str | None = None
    unit: str | None = None
    # Wrong values that betray a known mistake, with the hint that addresses it.
    mistakes: tuple[tuple[Fraction, str], ...] = ()
    # "What percent of 80 is 12?": a plain-number answer is a percentage (15 means 15%).
    percent_answer: bool = False


def _pick(options: list[str], key: str) -> str:
    """Deterministic choice so the same exercise always gets the same hint."""
    return options[zlib.crc32(key.encode()) % len(options)]


def _classify_text(text: str) -> str:
    if _CONVERT_RE.match(text) or _COMPOUND_RE.match(text):
        return "conversion"
    if _reverse_percent(text) is not None:
        return "percent"
    if "=" in text:
        return "equation"
    if "%" in text or re.search(r"\bper ?cent\b|\bpct\b", text):
        return "percent"
    if re.search(r"[0-9]/[0-9]", text):
        return "fractions"
    return "arithmetic"


def _features(node: _Node, found: set[str]) -> set[str]:
    if isinstance(node, _Num):
        if "." in node.text:
            found.add("decimal")
    elif isinstance(node, _Neg):
        found.add("neg")
        _features(node.operand, found)
    elif isinstance(node, _Pct):
        found.add("pct")
        _features(node.operand, found)
    elif isinstance(node, _Bin):
        found.add(node.op)
        _features(node.left, found)
        _features(node.right, found)
    return found


def _arithmetic_hints(feats: set[str]) -> list[str]:
    hints: list[str] = []
    if "parens" in feats:
        hints.append("Work out the part in brackets first.")
    if feats & {"+", "-"} and feats & {"*", "/"}:
        hints.append("Do multiplication and division before addition and subtraction.")
    if "^" in feats:
        hints.append("A power is repeated multiplication: 2^3 means 2 \u00d7 2 \u00d7 2.")
    if "neg" in feats and feats & {"+", "-"}:
        hints.append("Adding a negative number is the same as subtracting it.")
    if "decimal" in feats:
        hints.append("Line up the decimal points, or count decimal places when multiplying.")
    if hints:
        return hints
    if "*" in feats:
        hints += [
            "Split one number into tens and ones and multiply each part.",
            "Start from a times-table fact you know and adjust it.",
        ]
    if "/" in feats:
        hints += [
            "Ask which number times the divisor gives the number you are dividing.",
            "Division undoes multiplication: use a times-table fact backwards.",
        ]
    if "+" in feats:
        hints += ["Add the tens and the ones separately.", "Round one number, add, then adjust."]
    if "-" in feats:
        hints += [
            "Work from left to right.",
            "Count up from the smaller number to the bigger one.",
        ]
    return hints or ["Work from left to right."]


def _fraction_hints(feats: set[str], tree: _Node) -> list[str]:
    hints: list[str] = []
    same_den = (
        isinstance(tree, _Bin)
        and isinstance(tree.left, _Num)
        and isinstance(tree.right, _Num)
        and tree.left.frac is not None
        and tree.right.frac is not None
        and tree.left.frac[1] == tree.right.frac[1]
    )
    for op, verb in (("+", "adding"), ("-", "subtracting")):
        if op in feats and same_den:
            hints.append("The denominators already match: combine just the numerators.")
        elif op in feats:
            hints += [
                f"Write both fractions over a common denominator before {verb}.",
                "Find the least common multiple of the denominators first.",
            ]
    if "*" in feats:
        hints += [
            "Multiply the numerators together and the denominators together.",
            "Cancel common factors before multiplying to keep the numbers small.",
        ]
    if "/" in feats:
        hints.append("To divide by a fraction, multiply by its reciprocal (flip it).")
    hints.append("Simplify at the end by dividing top and bottom by their greatest common factor.")
    return hints


def _percent_hints(tree: _Node) -> list[str]:
    hints = [
        "Turn the percentage into a decimal and multiply.",
        "Percent means out of 100: divide by 100, then multiply.",
        "Find 10% first by dividing by 10, then scale up.",
    ]
    if isinstance(tree, _Bin) and isinstance(tree.left, _Pct):
        inner = tree.left.operand
        shortcut = {50: "a half", 25: "a quarter", 75: "three quarters", 10: "a tenth"}
        if isinstance(inner, _Num) and inner.value.denominator == 1:
            name = shortcut.get(int(inner.value))
            if name is not None:
                hints.append(f"{_fmt(inner.value)}% is {name}.")
    return hints


def _expression_mistakes(tree: _Node, value: Fraction) -> list[tuple[Fraction, str]]:
    out: list[tuple[Fraction, str]] = []
    if not isinstance(tree, _Bin):
        return out
    left, right = tree.left, tree.right
    if isinstance(left, _Pct) and isinstance(left.operand, _Num) and isinstance(right, _Num):
        p = left.operand.value
        out.append((p * right.value, f"Remember that {_fmt(p)}% means {_fmt(p)}/100."))
        out += [
            (value * 10, f"Check the decimal point: {_fmt(p)}% = {_fmt(p / 100)}."),
            (value / 10, f"Check the decimal point: {_fmt(p)}% = {_fmt(p / 100)}."),
        ]
    if isinstance(left, _Num) and isinstance(right, _Num) and left.frac and right.frac:
        (ln, ld), (rn, rd) = left.frac, right.frac
        if tree.op == "+":
            out.append(
                (
                    Fraction(ln + rn, ld + rd),
                    "Don't add the denominators: use a common denominator, then add the"
                    " numerators.",
                )
            )
        if tree.op == "-" and ld != rd:
            out.append(
                (
                    Fraction(ln - rn, ld - rd),
                    "Don't subtract the denominators: use a common denominator first.",
                )
            )
        if tree.op == "/" and rn:
            out.append(
                (
                    Fraction(ln * rn, ld * rd),
                    "To divide by a fraction, multiply by its reciprocal: flip the second one.",
                )
            )
        if tree.op == "*" and rn:
            out.append(
                (
                    Fraction(ln * rd, ld * rn),
                    "To multiply fractions, multiply straight across: top by top, bottom by"
                    " bottom.",
                )
            )
    return out


def _solve_expression(text: str, kind: str, pf: bool) -> _Solution:
    tokens = _tokenize(text, None)
    if any(tok.kind == "eq" for tok in tokens):
        raise _bad_exercise(_UNREADABLE)
    tree = _Parser(tokens).parse()
    value = _fraction(_sym(tree))
    feats = _features(tree, set())
    if any(tok.kind == "lp" for tok in tokens):
        feats.add("parens")
    if kind == "percent":
        hints = _percent_hints(tree)
    elif kind == "fractions":
        hints = _fraction_hints(feats, tree)
    else:
        hints = _arithmetic_hints(feats)
    return _Solution(
        kind=kind,
        value=value,
        expected=_fmt(value, pf),
        explanation=_worked_steps(tree, value, pf),
        hint=_pick(hints, text),
        prefer_fraction=pf,
        mistakes=tuple(_expression_mistakes(tree, value)),
    )


def _term_text(coef: Fraction, var: str, pf: bool) -> str:
    if coef == 1:
        return var
    if coef == -1:
        return "-" + var
    shown = _fmt(coef, pf)
    return f"({shown}){var}" if coef.denominator != 1 else f"{shown}{var}"


def _var_coef(node: _Node) -> tuple[Fraction, bool] | None:
    """Coefficient of a bare variable term (x, -x, 2x, x/4), and whether it was a division."""
    if isinstance(node, _Var):
        return Fraction(1), False
    if isinstance(node, _Neg) and isinstance(node.operand, _Var):
        return Fraction(-1), False
    if isinstance(node, _Bin) and node.op == "*":
        if isinstance(node.left, _Num) and isinstance(node.right, _Var):
            return node.left.value, False
        if isinstance(node.left, _Var) and isinstance(node.right, _Num):
            return node.right.value, False
    if (
        isinstance(node, _Bin)
        and node.op == "/"
        and isinstance(node.left, _Var)
        and isinstance(node.right, _Num)
        and node.right.value != 0
    ):
        return 1 / node.right.value, True
    return None


def _simple_side(node: _Node) -> tuple[Fraction, Fraction, bool] | None:
    """(a, b, division) when a side is literally a*x + b (or b + a*x, b - a*x)."""
    if found := _var_coef(node):
        return found[0], Fraction(0), found[1]
    if isinstance(node, _Bin) and node.op in ("+", "-"):
        sign = 1 if node.op == "+" else -1
        if (found := _var_coef(node.left)) and isinstance(node.right, _Num):
            return found[0], sign * node.right.value, found[1]
        if (found := _var_coef(node.right)) and isinstance(node.left, _Num):
            return sign * found[0], node.left.value, found[1]
    return None


def _const_side(node: _Node) -> Fraction | None:
    if isinstance(node, _Num):
        return node.value
    if isinstance(node, _Neg) and isinstance(node.operand, _Num):
        return -node.operand.value
    return None


def _equation_variable(text: str) -> str:
    found = {w for w in re.findall(r"[a-z]+", text) if w in _VARIABLES}
    if "y" in found and "n" in found:
        raise _bad_exercise("The equation has more than one variable.")
    for var in ("y", "n", "x"):  # with y or n as the variable, x means times
        if var in found:
            return var
    raise _bad_exercise("The equation has no variable (x, y or n) to solve for.")


def _solve_equation(text: str, pf: bool) -> _Solution:
    var = _equation_variable(text)
    tokens = _tokenize(text, var)
    cuts = [i for i, tok in enumerate(tokens) if tok.kind == "eq"]
    if len(cuts) != 1:
        raise _bad_exercise("An equation needs exactly one equals sign.")
    left = _Parser(tokens[: cuts[0]]).parse()
    right = _Parser(tokens[cuts[0] + 1 :]).parse()
    lhs, rhs = _sym(left), _sym(right)
    (la, lb), (ra, rb) = _linear(lhs, var), _linear(rhs, var)
    coef, const = la - ra, rb - lb
    if coef == 0:
        if const == 0:
            raise _bad_exercise("Every number solves this equation, so there is nothing to check.")
        raise _bad_exercise("This equation has no solution.")
    (root,) = sympy.solve(lhs - rhs, sympy.Symbol(var))
    value = _fraction(root)
    sol = f"{var} = {_fmt(value, pf)}"
    # The simple two-step story only when a side is literally a*x + b and the other a number.
    simple, c = _simple_side(left), _const_side(right)
    if simple is None or c is None:
        simple, c = _simple_side(right), _const_side(left)
    mistakes: list[tuple[Fraction, str]] = []
    hints = ["Check your answer by putting it back into the equation."]
    if simple is not None and c is not None:
        a, b, division = simple
        explanation = _simple_equation_story(var, a, b, c, division, value, pf)
        hints += _simple_equation_hints(var, a, b, division, pf)
        if b:
            act = f"subtract {_fmt(b, pf)}" if b > 0 else f"add {_fmt(-b, pf)}"
            mistakes.append(((c + b) / a, f"Check the sign: {act} on both sides."))
        if a != 1 and not division:
            mistakes.append((c - b, f"Nearly: now divide both sides by {_fmt(a, pf)}."))
        if division:
            mistakes.append(((c - b) * a, f"Multiply both sides by {_fmt(1 / a, pf)}."))
    else:
        has_parens = any(tok.kind == "lp" for tok in tokens)
        start = "Expand the brackets, then collect" if has_parens else "Collect"
        shown = "" if coef == 1 else f"{_term_text(coef, var, pf)} = {_fmt(const, pf)}, so "
        explanation = (
            f"{start} the {var} terms on one side and the numbers on the other: {shown}{sol}."
        )
        if la and ra:
            hints.append(f"Move all the {var} terms to one side first.")
        if has_parens:
            hints.append("Expand the brackets first, or divide both sides by the number outside.")
        hints.append("Do the same thing to both sides to keep the equation balanced.")
    return _Solution(
        kind="equation",
        value=value,
        expected=sol,
        explanation=explanation,
        hint=_pick(hints, text),
        prefer_fraction=pf,
        variable=var,
        mistakes=tuple(mistakes),
    )


def _simple_equation_story(
    var: str, a: Fraction, b: Fraction, c: Fraction, division: bool, value: Fraction, pf: bool
) -> str:
    steps: list[str] = []
    whole_divisor = division and (1 / a).denominator == 1
    lhs = f"{var}/{_fmt(1 / a, pf)}" if whole_divisor else _term_text(a, var, pf)
    if b > 0:
        steps.append(f"subtract {_fmt(b, pf)} from both sides: {lhs} = {_fmt(c - b, pf)}")
    elif b < 0:
        steps.append(f"add {_fmt(-b, pf)} to both sides: {lhs} = {_fmt(c - b, pf)}")
    both = "" if steps else "both sides "
    if whole_divisor:
        steps.append(f"multiply {both}by {_fmt(1 / a, pf)}: {var} = {_fmt(value, pf)}")
    elif a != 1:
        steps.append(f"divide {both}by {_fmt(a, pf)}: {var} = {_fmt(value, pf)}")
    if not steps:
        return f"The equation already says {var} = {_fmt(value, pf)}."
    text = ", then ".join(steps)
    return text[0].upper() + text[1:] + "."


def _simple_equation_hints(
    var: str, a: Fraction, b: Fraction, division: bool, pf: bool
) -> list[str]:
    hints: list[str] = []
    if b and a != 1:
        undo = "addition" if b > 0 else "subtraction"
        second = "division" if division else "multiplication"
        hints += [
            f"Undo the {undo} first, then the {second}.",
            f"Get the {var} term on its own first.",
        ]
    if b and a == 1:
        act = f"Subtract {_fmt(b, pf)} from" if b > 0 else f"Add {_fmt(-b, pf)} to"
        hints.append(f"{act} both sides.")
    if a == -1:
        hints.append(f"Add {var} to both sides so the {var} term is positive.")
    if division and (1 / a).denominator == 1:
        hints.append(f"Multiply both sides by {_fmt(1 / a, pf)} to undo the division.")
    elif not b and a != 1:
        hints.append(f"Divide both sides by the number in front of {var}.")
    return hints


_COMPOUND_RE = re.compile(
    r"^(?P<a>[0-9][0-9.,]*) (?P<u1>[a-z]+),? (?:and )?(?P<b>[0-9][0-9.,]*) (?P<u2>[a-z]+)"
    r" (?:to|in|into|as) (?P<dst>[a-z]+)$"
)


def _known_unit(word: str) -> str:
    symbol = _unit_symbol(word)
    if symbol is None:
        raise _bad_exercise("The exercise uses a unit I don't know (length, mass, volume, time).")
    return symbol


def _solve_compound(m: re.Match[str], text: str) -> _Solution:
    """'2 hours and 30 minutes to minutes': each part converted, then added."""
    dst = _known_unit(m["dst"])
    parts: list[tuple[str, str, Fraction]] = []
    for amount, word in ((m["a"], m["u1"]), (m["b"], m["u2"])):
        unit = _known_unit(word)
        if _UNITS[unit][0] != _UNITS[dst][0]:
            raise _bad_exercise(
                f"A {_UNITS[unit][0]} can't be converted to a {_UNITS[dst][0]} unit."
            )
        number = _parse_number(amount, "bad_exercise")
        if number is None:
            raise _bad_exercise("The amount to convert is not a number I can read.")
        parts.append((amount, unit, _check_size(number.value * _UNITS[unit][1] / _UNITS[dst][1])))
    value = _check_size(parts[0][2] + parts[1][2])
    result = f"{_fmt(value)} {dst}"
    shown = " and ".join(f"{amount} {unit} = {_fmt(v)} {dst}" for amount, unit, v in parts)
    hints = [f"Convert each part to {dst}, then add them.", f"Write both parts in {dst} first."]
    return _Solution(
        kind="conversion",
        value=value,
        expected=result,
        explanation=f"{shown}, so together {result}.",
        hint=_pick(hints, text),
        unit=dst,
        mistakes=((parts[0][2], "Don't forget the second part: add both."),),
    )


def _solve_conversion(text: str) -> _Solution:
    if compound := _COMPOUND_RE.match(text):
        return _solve_compound(compound, text)
    m = _CONVERT_RE.match(text)
    if m is None:
        raise _bad_exercise(_UNREADABLE)
    src, dst = _unit_symbol(m["src"]), _unit_symbol(m["dst"])
    if src is None or dst is None:
        raise _bad_exercise("The exercise uses a unit I don't know (length, mass, volume, time).")
    if _UNITS[src][0] != _UNITS[dst][0]:
        raise _bad_exercise(f"A {_UNITS[src][0]} can't be converted to a {_UNITS[dst][0]} unit.")
    qty_text = " ".join(m["qty"].split())
    number = _parse_number(qty_text, "bad_exercise")
    if number is None:
        raise _bad_exercise("The amount to convert is not a number I can read.")
    pf = "/" in qty_text
    factor = _UNITS[src][1] / _UNITS[dst][1]
    value = _check_size(number.value * factor)
    result = f"{_fmt(value, pf)} {dst}"
    about = ""
    if not pf and not _terminating(value):
        about = f" (about {float(value):.4g} {dst})"
    if src == dst:
        explanation = f"The units are the same, so {qty_text} {src} = {result}."
    else:
        explanation = f"{_factor_sentence(src, dst)}, so {qty_text} {src} = {result}{about}."
    if factor > 1:
        hints = [
            f"Multiply by how many {dst} are in one {src}.",
            "A smaller unit needs a bigger number.",
            f"Use {_factor_sentence(src, dst)}.",
        ]
    elif factor < 1:
        hints = [
            f"Divide by how many {src} are in one {dst}.",
            "A bigger unit needs a smaller number.",
            f"Use {_factor_sentence(src, dst)}.",
        ]
    else:
        hints = ["The units are the same, so the number doesn't change."]
    mistakes: list[tuple[Fraction, str]] = []
    if factor != 1:
        direction = "multiply" if factor > 1 else "divide"
        mistakes.append((number.value / factor, f"Check the direction: here you {direction}."))
        for power in (10, 100, 1000):
            for wrong in (value * power, value / power):
                mistakes.append((wrong, f"Check the factor: {_factor_sentence(src, dst)}."))
    return _Solution(
        kind="conversion",
        value=value,
        expected=result,
        explanation=explanation,
        hint=_pick(hints, text),
        prefer_fraction=pf,
        unit=dst,
        mistakes=tuple(mistakes),
    )


_IS_STATED = re.compile(r"^(?:is|does) (.+=.+)$")
_UNIT_AMOUNT = re.compile(r"^(?P<qty>[-+]?\s*\.?[0-9][0-9.,/ ]*?)\s*(?P<unit>[a-z]+)$")
_BLANK = re.compile(r"^(?:\?+|_+|\.\.\.|how many|what)\s*(?P<unit>[a-z]+)$")


def _no_variable(text: str) -> bool:
    """Whether ``text`` reads as an expression without a variable (and is not one number)."""
    try:
        tokens = _tokenize(text, None)
    except _Reject:
        return False
    return len(tokens) > 1 and not any(tok.kind == "eq" for tok in tokens)


def _split_stated(text: str) -> tuple[str, str | None]:
    """An exercise stated with its answer ("7 * 8 = 56", "is 1.2 m = 120 cm") as
    (exercise, stated answer); "1.2 m = ? cm" asks for cm. Anything else is left alone."""
    if m := _IS_STATED.match(text):
        text = m[1]
    if text.count("=") != 1:
        return text, None
    left, right = (side.strip() for side in text.split("="))
    amount = _UNIT_AMOUNT.match(left)
    if amount and _unit_symbol(amount["unit"]) is not None:
        if (blank := _BLANK.match(right)) and _unit_symbol(blank["unit"]) is not None:
            return f"{left} to {blank['unit']}", None
        answer = _UNIT_AMOUNT.match(right)
        if answer and _unit_symbol(answer["unit"]) is not None:
            return f"{left} to {answer['unit']}", right
        return text, None
    if _CONVERT_RE.match(left) and _parse_number(right, "bad_answer"):  # "2 kg in g = 2000"
        return left, right
    if _no_variable(left) and (_no_variable(right) or _parse_number(right, "bad_answer")):
        return left, right
    return text, None


def _read_exercise(exercise: str) -> tuple[str, str | None]:
    """The prepared exercise text and the answer stated in it, if any."""
    if len(exercise) > MAX_CHARS:
        raise _bad_exercise(f"The exercise is too long to check (over {MAX_CHARS} characters).")
    text = _prepare(exercise)
    if len(text) > MAX_CHARS:
        raise _bad_exercise(f"The exercise is too long to check (over {MAX_CHARS} characters).")
    text, stated = _split_stated(text)
    if not text:
        raise _bad_exercise("The exercise is empty.")
    return text, stated


_PCT_WORD = r"(?:percent|percentage|%)"
_REVERSE_PERCENT: Final = (
    (re.compile(rf"^(?:what|which) {_PCT_WORD} of (?P<whole>.+) is (?P<part>.+)$")),
    (re.compile(rf"^(?P<part>.+) is what {_PCT_WORD} of (?P<whole>.+)$")),
    (re.compile(rf"^(?P<part>.+) as an? {_PCT_WORD} of (?P<whole>.+)$")),
)


def _reverse_percent(text: str) -> tuple[str, str] | None:
    """(part, whole) of "what percent of 80 is 12", "12 is what percent of 80"."""
    for pattern in _REVERSE_PERCENT:
        if m := pattern.match(text):
            return m["part"].strip(), m["whole"].strip()
    return None


def _solve_reverse_percent(part_text: str, whole_text: str, text: str) -> _Solution:
    part = _Parser(_tokenize(part_text, None)).parse()
    whole = _Parser(_tokenize(whole_text, None)).parse()
    tree = _Bin("/", part, whole, "\u00f7")
    value = _fraction(_sym(tree))
    shown = f"{_fmt(value * 100)}%"
    explanation = f"{_render(tree)} = {_fmt(value)} = {shown}."
    hints = [
        "Divide the part by the whole, then multiply by 100.",
        "Write it as a fraction of the whole, then turn the fraction into a percentage.",
    ]
    mistakes = [(value / 100, "Multiply by 100 to turn the decimal into a percentage.")]
    if value:
        flipped = "Divide the part by the whole, not the whole by the part."
        mistakes.append((1 / value, flipped))
    return _Solution(
        kind="percent",
        value=value,
        expected=shown,
        explanation=explanation,
        hint=_pick(hints, text),
        mistakes=tuple(mistakes),
        percent_answer=True,
    )


def _solve(text: str) -> _Solution:
    if (reverse := _reverse_percent(text)) is not None:
        return _solve_reverse_percent(*reverse, text)
    kind = _classify_text(text)
    if kind == "conversion":
        return _solve_conversion(text)
    pf = "/" in text or "\u00f7" in text
    if kind == "equation":
        return _solve_equation(text, pf)
    return _solve_expression(text, kind, pf)


# --- answers ---------------------------------------------------------------------------

_GIVE_UPS: Final = frozenset(
    {
        "?",
        "??",
        "???",
        "idk",
        "i don't know",
        "i dont know",
        "don't know",
        "dont know",
        "dunno",
        "no idea",
        "not sure",
        "skip",
        "pass",
        "give up",
        "i give up",
    }
)


# "the answer is 56", "I think it's 56", "answer: 56"
_ANSWER_LEAD = re.compile(
    r"^(?:(?:i think|i got|i get|my answer is|the answer is|answer is|answer|it is|it's|its)"
    r"\s*:?\s+)+"
)


@dataclass(frozen=True)
class _Answer:
    value: Fraction
    number: _Number
    percent: bool


def _read_answer(raw: str, sol: _Solution) -> _Answer:
    if len(raw) > MAX_CHARS:
        message = f"The answer is too long to check (over {MAX_CHARS} characters)."
        raise _Reject("bad_answer", message)
    text = _normalize(raw)
    if not text or text.rstrip(".!") in _GIVE_UPS:
        raise _Reject("empty_answer", "No answer was given.")
    text = re.sub(r"(?<=[0-9a-z%])\.$", "", text)
    text = _number_words(_ANSWER_LEAD.sub("", text))
    text = re.sub(r"^([a-z]) is\s+", r"\1 = ", text)  # "x is 4"
    if m := re.match(r"^([a-z])\s*=\s*(.*)$", text):
        if sol.variable is None:
            raise _Reject("bad_answer", "This exercise has no variable: answer with the number.")
        if m[1] != sol.variable:
            raise _Reject(
                "bad_answer",
                f"The equation is in {sol.variable}, but the answer names another letter.",
            )
        text = m[2]
    elif text.startswith("="):
        text = text[1:].strip()
    unit: str | None = None
    percent = False
    if (m := re.match(r"^(.*?)\s*(per cent|percent|[a-z]+)$", text)) and m[1]:
        if m[2] in ("per cent", "percent"):
            percent, text = True, m[1]
        else:
            unit = _unit_symbol(m[2])
            if unit is None:
                raise _Reject("bad_answer", "The answer has words I can't read as a number.")
            if sol.unit is None:
                raise _Reject("bad_answer", "This exercise takes no unit: answer with the number.")
            if _UNITS[unit][0] != _UNITS[sol.unit][0]:
                raise _Reject(
                    "bad_answer", "The answer's unit measures something else than the question's."
                )
            text = m[1]
    if text.endswith("%"):
        percent, text = True, text[:-1].strip()
    if percent and (unit is not None or sol.kind in ("equation", "conversion")):
        raise _Reject("bad_answer", "A percentage doesn't fit this exercise: answer with a number.")
    number = _parse_number(text, "bad_answer")
    if number is None:
        raise _Reject(
            "bad_answer", "The answer is not a number I can read (write it like 12, 0.875 or 7/8)."
        )
    value = number.value / 100 if percent or sol.percent_answer else number.value
    if unit is not None and sol.unit is not None:
        value = value * _UNITS[unit][1] / _UNITS[sol.unit][1]
    return _Answer(value, number, percent)


def _wrong_answer_hint(answer: _Answer, sol: _Solution) -> str:
    for wrong, hint in sol.mistakes:
        if wrong != sol.value and answer.value == wrong:
            return hint
    if sol.value and answer.value == -sol.value:
        return "Check the sign of your answer."
    if answer.percent and answer.value * 100 == sol.value:
        return "Give the plain number, without the % sign."
    close = abs(answer.value - sol.value) <= Fraction(1, 100) * max(Fraction(1), abs(sol.value))
    if answer.number.style == "decimal" and not _terminating(sol.value) and close:
        return "Close, but a rounded decimal isn't exact: give the answer as a fraction."
    return sol.hint


_ANSWER_FORMS: Final[dict[str, str]] = {
    "equation": "Answer with a single number, e.g. 4 or x = 4.",
    "conversion": "Answer with a single number, optionally with a unit, e.g. 2500 or 2500 m.",
}


def _error(code: str, message: str, sol: _Solution | None) -> dict[str, Any]:
    out: dict[str, Any] = {"correct": False, "error": code, "message": message}
    if sol is None:
        out["hint"] = (
            "Give the exercise as plain maths, e.g. 3/4 + 1/8, 15% of 80, 2x + 3 = 11 or 2.5 km"
            " to m."
        )
        return out
    out.update(expected=sol.expected, explanation=sol.explanation, kind=sol.kind)
    if code == "empty_answer":
        out["hint"] = sol.hint
    else:
        out["hint"] = _ANSWER_FORMS.get(
            sol.kind, "Answer with a single number, e.g. 12, 0.875, 7/8 or 1 1/2."
        )
    return out


def _as_text(value: object) -> str | None:
    # Tool arguments arrive from JSON; tolerate a bare number for the answer.
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _check(exercise: object, answer: object) -> dict[str, Any]:
    text = _as_text(exercise)
    if text is None:
        return _error("bad_exercise", "The exercise must be text.", None)
    try:
        text, stated = _read_exercise(text)
        sol = _solve(text)
    except _Reject as exc:
        return _error("bad_exercise", exc.message, None)
    reply = _as_text(answer)
    if stated is not None and (reply is None or not reply.strip()):
        reply = stated
    if reply is None:
        return _error("bad_answer", "The answer must be text.", sol)
    try:
        given = _read_answer(reply, sol)
    except _Reject as exc:
        return _error(exc.code, exc.message, sol)
    correct = given.value == sol.value
    if correct:
        hint = f"It simplifies to {sol.expected}." if given.number.unreduced else sol.hint
    else:
        hint = _wrong_answer_hint(given, sol)
    return {
        "correct": correct,
        "expected": sol.expected,
        "explanation": sol.explanation,
        "hint": hint,
        "kind": sol.kind,
    }


def check_answer(exercise: str, answer: str) -> dict[str, Any]:
    """Judge ``answer`` to ``exercise`` exactly; always a JSON-ready dict, never raises."""
    try:
        return _check(exercise, answer)
    except Exception:  # the tool must answer every call; tests assert this is never reached
        return _error("bad_exercise", _INTERNAL_ERROR, None)


def classify(exercise: str) -> str:
    """The exercise's kind, guessed from its syntax (one of ``KINDS``; never fails)."""
    try:
        text = (
            _split_stated(_prepare(exercise[: 4 * MAX_CHARS]))[0]
            if isinstance(exercise, str)
            else ""
        )
        return _classify_text(text)
    except Exception:  # classification is a best guess; it must not break a turn
        return "arithmetic"
