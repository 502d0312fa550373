"""Entities through slots (delexicalisation), pure code.

A small model copies long random strings badly, so before it sees a message the entities in
it (order ids, emails, tracking numbers, amounts, dates, math expressions) are replaced by
typed placeholders such as ``[ORDER_ID_1]``; tool arguments and replies written by the model
use the placeholders, and :class:`SlotTable` maps them back to the real values. The same value
always gets the same placeholder within a conversation, so the table can be rebuilt from the
history at every turn. A placeholder the table does not know is never shown to a user.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class SlotKind(enum.StrEnum):
    ORDER_ID = "ORDER_ID"
    EMAIL = "EMAIL"
    TRACKING = "TRACKING"
    AMOUNT = "AMOUNT"
    DATE = "DATE"
    EXPR = "EXPR"
    # Kinds that only tool results fill (no extractor pattern):
    PRODUCT = "PRODUCT"
    KB = "KB"
    HINT = "HINT"
    TICKET = "TICKET"
    # A carrier name from an order lookup: a closed set (UPS, USPS, ...) whose similar names
    # a small model swapped when it had to copy them from the tool result.
    CARRIER = "CARRIER"


# Kinds no pattern extracts: only tool results fill them.
_UNEXTRACTED = frozenset({"PRODUCT", "KB", "HINT", "TICKET", "CARRIER"})
# Kinds whose short values must stand as whole words to be replaced in free text ("UPS"
# must not match inside a tracking number or "USPS").
_WHOLE_WORD = frozenset({"CARRIER"})

PLACEHOLDER = re.compile(r"\[(?P<kind>[A-Z][A-Z_]*?)_(?P<index>\d+)\]")
# What a placeholder looks like while its tokens are still being drafted: an opening bracket
# and upper-case letters, possibly cut anywhere.
_PARTIAL_PLACEHOLDER = re.compile(r"\[[A-Z_]*\d*\]?$|\[[A-Z_]*\d*(?=\s|$)")

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_UNIT_SYMBOLS = (
    "km m cm mm mi yd ft in kg g mg lb lbs oz l ml cl dl h hr hrs min s sec "
    # Plural and spelled-out abbreviations students type ("3 kgs", "2 ltrs to ml", "5 mins").
    "kgs cms kms mms mins secs ltr ltrs ms"
)
_UNIT_NAMES = (
    "kilometer kilometre meter metre centimeter centimetre millimeter millimetre mile yard "
    "foot feet inch inches kilogram gram milligram pound ounce liter litre milliliter "
    "millilitre centiliter centilitre deciliter decilitre hour minute second"
)
# Every unit word the extractor reads as part of an expression (lower case).
UNIT_WORDS = frozenset(
    {*_UNIT_SYMBOLS.split(), *_UNIT_NAMES.split(), *(n + "s" for n in _UNIT_NAMES.split())}
)
_UNITS = "|".join(sorted(UNIT_WORDS, key=lambda unit: (-len(unit), unit)))
# Vulgar fractions (½, ¾, ⅞...), alone or after a whole number (1½).
_VULGAR = "\u00bc-\u00be\u2150-\u215e"
# A fraction bar may be the fraction slash (3\u20444).
# Thousands may be grouped with a space or an apostrophe ("1 000", "1'000"), as the checker
# reads them; never the whole part of a mixed number ("1 100/3"), which the corpus splits.
_GROUPED = r"\d{1,3}(?:[ '\u2019]\d{3})+(?![\d/]|\s*/)(?:\.\d+)?"
_NUMBER = rf"(?:{_GROUPED}|\d+(?:[.,]\d+)*(?:[/\u2044]\d+)?[{_VULGAR}]?|[{_VULGAR}])"
# An unknown (``2x``, ``n``), never the first letter of a word ("1: nothing", "the 2nd").
_VARIABLE = r"[xyn](?![a-z])"
# A quantity may hold several units ("2 hours and 30 minutes", "1 m 20 cm").
_UNIT_TAIL = rf"\s*(?:{_UNITS})\b(?:(?:\s+and)?\s+{_NUMBER}\s*(?:{_UNITS})\b)*"
_PERCENT = r"\s*%|\s+(?:percent|per\s+cent|pct)\b"
_POWER = r"[\u00b2\u00b3]|\s+(?:squared|cubed)\b"
# "2 x + 3" is 2x when an operator follows; "12 x 7" stays a multiplication.
_TERM = (
    rf"(?:\(\s*)?[-\u2212]?(?:{_NUMBER}(?:{_VARIABLE}|\s{_VARIABLE}(?=\s*[-+=\u2212]))?"
    rf"|{_VARIABLE})(?:{_POWER})?(?:{_PERCENT}|{_UNIT_TAIL})?(?:\s*\))?"
)
# Operators as signs (the unicode minus and middle dot too) or as words. A bracket straight
# after a term ("2(x + 1)") stays a cut: the corpus trains the model to copy
# ``[EXPR_1]([EXPR_2]`` for it.
_OP = (
    r"(?:\s*(?:[-+*/\u00d7\u00f7^=:\u2212\u00b7]"
    r"|\b(?:to\s+the\s+power\s+of|multiplied\s+by|divided\s+by|equal\s+to|take\s+away"
    r"|of|to|in|x|times|plus|minus|over|equals)\b)\s*)"
)
# A conversion's target unit belongs to its expression ("2.5 km to m" is one slot): left as
# text, the model had to copy the unit from the exercise and wrote the wrong one. The same
# for a conversion asked as a question: "how many cm in 1.2 m", "1.2 m = ? cm", "3 kg is
# how many grams".
_TARGET_UNIT = (
    rf"(?:\s+(?:to|in)\s+(?:{_UNITS})\b(?!\s*\d)"
    rf"|\s+is\s+how\s+many\s+(?:{_UNITS})\b|\s*=\s*\?\s*(?:{_UNITS})\b)?"
)
_HOW_MANY = rf"how\s+many\s+(?:{_UNITS})\s+(?:(?:are\s+(?:there\s+)?)?in|is)\s+"
# A part named in words: "half of 3/4", "a third of 90", "ten percent of 50".
_UNITS_WORDS = "one|two|three|four|five|six|seven|eight|nine"
_SMALL = (
    "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|"
    + _UNITS_WORDS
)
_TENS = rf"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[\s-](?:{_UNITS_WORDS}))?"
_PART_OF = (
    r"(?:(?:a\s+)?(?:half|third|quarter|fifth|tenth)"
    rf"|(?:{_TENS}|{_SMALL}|(?:a|one)\s+hundred)\s+(?:percent|per\s+cent))\s+of\s+"
)
# A conversion stated with its answer ("2 kg in grams = 2000") is one slot, like "7 x 8 = 56".
_CHAIN = (
    rf"(?:{_HOW_MANY}|{_PART_OF})?{_TERM}(?:{_OP}{_TERM})*{_TARGET_UNIT}"
    rf"(?:\s*=\s*{_TERM})?"
)
# Days are a unit only in a conversion ("4 days to hours"): "it's been 3 days" keeps its
# word out of the slot, as support messages always had it.
_DAYS = rf"{_NUMBER}\s*days?\s+(?:to|in)\s+(?:{_UNITS})\b(?!\s*\d)"
# An exercise told with a verb ("add 15 and 27", "divide 45 by 9") or a percentage asked for.
_VERB = rf"(?:add|subtract|multiply|divide)\s+{_TERM}\s+(?:and|from|by|to)\s+{_TERM}"
_WHAT_PERCENT = (
    rf"what\s+percent(?:age)?\s+of\s+{_TERM}\s+is\s+{_TERM}"
    rf"|{_TERM}\s+(?:is\s+what\s+percent(?:age)?|as\s+a\s+percentage)\s+of\s+{_TERM}"
)

# Each kind has its own pattern, matched against the whole message; ``_entity_spans`` then
# settles the overlaps (see there). The kinds other than expressions, most specific first:
# at the same strength, the earlier one in this order wins an overlap.
_RANKED = (SlotKind.EMAIL, SlotKind.TRACKING, SlotKind.ORDER_ID, SlotKind.AMOUNT, SlotKind.DATE)
_PATTERNS: dict[SlotKind, re.Pattern[str]] = {
    SlotKind.EMAIL: re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b", re.I),
    SlotKind.TRACKING: re.compile(r"\b(?:1Z[0-9A-Z]{16}|\d{12,22}|[A-Z]{2}\d{9}[A-Z]{2})\b", re.I),
    SlotKind.ORDER_ID: re.compile(r"\b[A-Za-z]{2}-?\d{6}\b", re.I),
    SlotKind.AMOUNT: re.compile(
        r"[$€£]\s?\d[\d,]*(?:\.\d{1,2})?"
        r"|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:USD|EUR|GBP|dollars?|euros?)\b",
        re.I,
    ),
    SlotKind.DATE: re.compile(
        rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b"
        rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b",
        re.I,
    ),
}
# Expressions are read last, only in the text no other entity claimed.
_EXPRESSION = re.compile(rf"(?<![\w.])(?:{_VERB}|{_WHAT_PERCENT}|{_DAYS}|{_CHAIN})", re.I)
_LEAD_IN = re.compile(r"[xyn]\s*:\s*", re.I)
# A placeholder standing in the text (``_replace_known`` put it there) is left as it is.
_STANDING = re.compile(r"\[[A-Z][A-Z_]*_\d+\]", re.I)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    # None for a standing placeholder: it keeps its place but is not replaced.
    kind: SlotKind | None

    def overlaps(self, other: _Span) -> bool:
        return self.start < other.end and other.start < self.end

    def holds(self, other: _Span) -> bool:
        """Whether ``other`` lies inside this span and is shorter."""
        return self.start <= other.start and other.end <= self.end and self.size > other.size

    @property
    def size(self) -> int:
        return self.end - self.start


def _entity_spans(text: str) -> list[_Span]:
    """Where the entities of ``text`` are, in text order, none overlapping another.

    Every kind's pattern is matched against the whole text, so no pattern can take part of
    an entity before another kind's pattern sees it (an expression reading the ``(x`` of
    ``(xavier@example.com)`` once cut that email). Standing placeholders come first; then
    among the other candidates, one that holds another whole (an email holding an order id)
    beats it, and the rest are taken by rank and position, each only where it overlaps
    nothing taken. Expressions are read last, in the gaps left between those spans, and end
    where the next span begins.
    """
    # Rank -1: a standing placeholder comes before every kind.
    candidates = [(-1, _Span(m.start(), m.end(), None)) for m in _STANDING.finditer(text)]
    for rank, kind in enumerate(_RANKED):
        for match in _PATTERNS[kind].finditer(text):
            span = _trimmed(text, match.start(), match.end(), kind)
            if span is not None:
                candidates.append((rank, span))
    taken: list[_Span] = []
    for group in _overlapping_groups(candidates):
        # A candidate that another holds whole is part of that one (the same span twice:
        # the higher rank keeps it).
        outer = [
            (rank, span)
            for rank, span in group
            if not any(_part_of(span, rank, other, other_rank) for other_rank, other in group)
        ]
        chosen: list[_Span] = []
        for _rank, span in sorted(outer, key=lambda pair: (pair[0], pair[1].start)):
            if not any(span.overlaps(other) for other in chosen):
                chosen.append(span)
        taken += sorted(chosen, key=lambda span: span.start)
    return sorted(taken + _expression_spans(text, taken), key=lambda span: span.start)


def _overlapping_groups(
    candidates: list[tuple[int, _Span]],
) -> Iterator[list[tuple[int, _Span]]]:
    """The candidates in text order, in groups that overlap only within themselves."""
    group: list[tuple[int, _Span]] = []
    group_end = -1
    for rank, span in sorted(candidates, key=lambda pair: (pair[1].start, pair[0])):
        if group and span.start >= group_end:
            yield group
            group = []
        group.append((rank, span))
        group_end = max(group_end, span.end)
    if group:
        yield group


def _part_of(span: _Span, rank: int, other: _Span, other_rank: int) -> bool:
    """Whether ``other`` holds ``span`` whole: longer, or as long and of a higher rank."""
    if rank < 0:  # a standing placeholder is nobody's part
        return False
    if (span.start, span.end) == (other.start, other.end):
        return other_rank < rank
    return other.holds(span)


def _expression_spans(text: str, taken: list[_Span]) -> list[_Span]:
    """The expressions in the gaps between ``taken`` spans (sorted, not overlapping).

    An expression is matched against the whole text, as if nothing were taken, so that its
    look-arounds see the real neighbours; only one that would run into a taken span is read
    again from the text cut where that span begins. A match without a digit (a lone ``x``)
    is no expression but still consumes its characters, as it always has.
    """
    found: list[_Span] = []
    ahead: re.Match[str] | None = None  # a match already found beyond the current gap
    gap_start = 0
    for gap_end, next_start in [(span.start, span.end) for span in taken] + [
        (len(text), len(text))
    ]:
        pos = gap_start
        while pos < gap_end:
            if ahead is not None and ahead.start() >= pos:
                match: re.Match[str] | None = ahead
            else:
                match = _EXPRESSION.search(text, pos)
            ahead = None
            if match is None:
                break
            if match.start() >= gap_end:
                ahead = match
                break
            if match.end() > gap_end:
                match = _EXPRESSION.search(text, pos, gap_end)
                if match is None:
                    break
            pos = match.end()
            span = _trimmed(text, match.start(), match.end(), SlotKind.EXPR)
            if span is not None:
                found.append(span)
        gap_start = next_start
    return found


def _trimmed(text: str, start: int, end: int, kind: SlotKind) -> _Span | None:
    """A matched span without the punctuation around it that belongs to the sentence.

    An amount's pattern takes a trailing comma (``$5,`` of ``I paid $5, thanks``), and an
    expression's takes a bracket that opens or closes the sentence around it (``(2`` of
    ``(2 items)``, or both of ``(2 + 3)``); an expression with no digit left is none.
    """
    value = text[start:end]
    if kind is SlotKind.AMOUNT:
        end -= len(value) - len(value.rstrip(","))
    elif kind is SlotKind.EXPR:
        # "Solve for x: 2x + 3 = 11": the unknown named before a colon is the sentence's.
        lead_in = _LEAD_IN.match(text, start, end)
        if lead_in is not None:
            start = lead_in.end()
        start, end = _without_loose_brackets(text, start, end)
        if not any(ch.isnumeric() for ch in text[start:end]):  # a digit or a vulgar fraction
            return None
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return _Span(start, end, kind) if start < end else None


def _without_loose_brackets(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop an unmatched bracket at either end, and a pair that encloses the whole span."""
    while True:
        value = text[start:end]
        stripped = value.strip()
        start += len(value) - len(value.lstrip())
        end -= len(value) - len(value.rstrip())
        if not stripped:
            return start, end
        partner = _partner(stripped)
        if stripped[0] == "(" and (partner is None or partner == len(stripped) - 1):
            # Unmatched, or the pair around everything: the sentence's own brackets.
            start += 1
            if partner is not None:
                end -= 1
            continue
        depth = 0
        for ch in stripped:
            depth += (ch == "(") - (ch == ")")
        if stripped[-1] == ")" and depth < 0:
            end -= 1
            continue
        return start, end


def _partner(value: str) -> int | None:
    """The index of the bracket that closes ``value[0]`` (an opening one), if any."""
    depth = 0
    for index, ch in enumerate(value):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return index
    return None


def _normalize(kind: SlotKind, value: str) -> str:
    value = value.strip()
    if kind is SlotKind.ORDER_ID:
        letters, digits = value[:2].upper(), value[-6:]
        return f"{letters}-{digits}"
    if kind in (SlotKind.EMAIL,):
        return value.lower()
    if kind is SlotKind.TRACKING:
        return value.upper()
    return value


@dataclass
class Resolved:
    text: str
    # Placeholders the model wrote that the table does not know; removed from ``text``.
    unresolved: list[str] = field(default_factory=list)


class UnresolvedSlot(ValueError):
    """Tool arguments name a placeholder that no message or result filled."""


@dataclass
class SlotTable:
    """The placeholders of one conversation and the values behind them."""

    values: dict[str, str] = field(default_factory=dict)
    # False for a model that reads and copies entities itself (a per-model setting): the
    # table then passes text and tool results through unchanged.
    enabled: bool = True
    _by_value: dict[tuple[SlotKind, str], str] = field(default_factory=dict)
    _counts: dict[SlotKind, int] = field(default_factory=dict)

    def slot(self, kind: SlotKind, value: str) -> str:
        """The placeholder of ``value`` (the same one each time the value recurs)."""
        value = _normalize(kind, value)
        key = (kind, value.lower() if kind is not SlotKind.HINT else value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        index = self._counts.get(kind, 0) + 1
        self._counts[kind] = index
        placeholder = f"[{kind.value}_{index}]"
        self._by_value[key] = placeholder
        self.values[placeholder] = value
        return placeholder

    # Into the model ---------------------------------------------------------------------

    def delexicalize(self, text: str) -> str:
        """Replace the entities in a text by placeholders.

        Values the table already holds that no pattern finds (product names, article
        answers, hints) are replaced first, longest first, so that a stored reply quoting a
        tool result maps back to the placeholders the model wrote.
        """
        if not self.enabled:
            return text
        # Someone typing a placeholder must not be able to name a slot: neutralise it.
        text = PLACEHOLDER.sub(lambda m: "(" + m.group(0)[1:-1] + ")", text)
        text = self._replace_known(text)

        pieces: list[str] = []
        done = 0
        for span in _entity_spans(text):
            if span.kind is None:  # a standing placeholder
                continue
            pieces += [text[done : span.start], self.slot(span.kind, text[span.start : span.end])]
            done = span.end
        return "".join(pieces) + text[done:]

    def _replace_known(self, text: str) -> str:
        known = [
            (value, placeholder)
            for placeholder, value in self.values.items()
            if PLACEHOLDER.fullmatch(placeholder)
            and placeholder[1:].rsplit("_", 1)[0] in _UNEXTRACTED
            and value
        ]
        for value, placeholder in sorted(known, key=lambda pair: -len(pair[0])):
            if placeholder[1:].rsplit("_", 1)[0] in _WHOLE_WORD:
                pattern = rf"(?<![\w\[]){re.escape(value)}(?!\w)"
                text = re.sub(pattern, placeholder, text)
            else:
                text = text.replace(value, placeholder)
        return text

    def delexicalize_fields(self, obj: Any, kinds: Mapping[str, SlotKind]) -> Any:
        """Replace the values of the named fields (at any depth) by placeholders.

        Tool results enter the prompt this way: ``{"tracking_number": "1Z..."}`` becomes
        ``{"tracking_number": "[TRACKING_1]"}``. A list under a named field has each of its
        scalar items replaced.
        """
        if not self.enabled:
            return obj
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for key, value in obj.items():
                kind = kinds.get(key)
                if kind is not None and isinstance(value, list):
                    out[key] = [
                        self.slot(kind, str(v))
                        if _is_scalar(v) and v is not None
                        else self.delexicalize_fields(v, kinds)
                        for v in value
                    ]
                elif kind is not None and _is_scalar(value) and value is not None:
                    out[key] = self.slot(kind, str(value))
                else:
                    out[key] = self.delexicalize_fields(value, kinds)
            return out
        if isinstance(obj, list):
            return [self.delexicalize_fields(v, kinds) for v in obj]
        return obj

    # Out of the model -------------------------------------------------------------------

    def resolve(self, text: str) -> Resolved:
        """Put the real values back into a finished reply; drop unknown placeholders."""
        unresolved: list[str] = []

        def replace(match: re.Match[str]) -> str:
            value = self.values.get(match.group(0))
            if value is None:
                unresolved.append(match.group(0))
                return ""
            return value

        resolved = PLACEHOLDER.sub(replace, text)
        if unresolved:
            resolved = re.sub(r"[ \t]{2,}", " ", resolved)
            resolved = re.sub(r"\s+([.,;:!?])", r"\1", resolved).strip()
        return Resolved(resolved, unresolved)

    def resolve_draft(self, text: str, placeholder: str = "░") -> str:
        """Resolve a draft for display: known slots filled, unknown or half-drafted hidden.
        A table that is off shows the draft as its final reply would read (:meth:`resolve`):
        a model without slots writes no half placeholders, so a bracket is its own text."""
        if not self.enabled:
            return self.resolve(text).text
        text = PLACEHOLDER.sub(lambda m: self.values.get(m.group(0), placeholder), text)
        return _PARTIAL_PLACEHOLDER.sub(placeholder, text)

    def resolve_arguments(self, obj: Any) -> Any:
        """Fill the placeholders in tool arguments; an unknown one raises UnresolvedSlot."""
        if isinstance(obj, str):

            def replace(match: re.Match[str]) -> str:
                value = self.values.get(match.group(0))
                if value is None:
                    raise UnresolvedSlot(f"unknown placeholder {match.group(0)}")
                return value

            return PLACEHOLDER.sub(replace, obj)
        if isinstance(obj, dict):
            return {key: self.resolve_arguments(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [self.resolve_arguments(value) for value in obj]
        return obj


def _is_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))
