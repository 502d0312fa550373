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
from collections.abc import Mapping
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
_UNIT_SYMBOLS = "km m cm mm mi yd ft in kg g mg lb lbs oz l ml cl dl h hr hrs min s sec"
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
_NUMBER = r"\d+(?:[.,]\d+)*(?:/\d+)?"
_TERM = rf"(?:\(\s*)?-?(?:{_NUMBER}[xyn]?|[xyn])(?:\s*%|\s*(?:{_UNITS})\b)?(?:\s*\))?"
_OP = r"\s*(?:[-+*/\u00d7\u00f7^=:]|\b(?:of|to|in|x|times)\b)\s*"
# A conversion's target unit belongs to its expression ("2.5 km to m" is one slot): left as
# text, the model had to copy the unit from the exercise and wrote the wrong one.
_TARGET_UNIT = rf"(?:\s+(?:to|in)\s+(?:{_UNITS})\b(?!\s*\d))?"

# Alternatives are tried in this order at each position: the most specific first.
_EXTRACTOR = re.compile(
    r"|".join(
        [
            r"(?P<PLACEHOLDER>\[[A-Z][A-Z_]*_\d+\])",
            r"(?P<EMAIL>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b)",
            r"(?P<TRACKING>\b(?:1Z[0-9A-Z]{16}|\d{12,22}|[A-Z]{2}\d{9}[A-Z]{2})\b)",
            r"(?P<ORDER_ID>\b[A-Za-z]{2}-?\d{6}\b)",
            r"(?P<AMOUNT>[$€£]\s?\d[\d,]*(?:\.\d{1,2})?"
            r"|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:USD|EUR|GBP|dollars?|euros?)\b)",
            rf"(?P<DATE>\b\d{{4}}-\d{{2}}-\d{{2}}\b"
            rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b)",
            rf"(?P<EXPR>(?<![\w.]){_TERM}(?:{_OP}{_TERM})*{_TARGET_UNIT})",
        ]
    ),
    re.IGNORECASE,
)


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

        def replace(match: re.Match[str]) -> str:
            kind_name = match.lastgroup
            value = match.group(0)
            if kind_name == "PLACEHOLDER":  # one that _replace_known just put there
                return value
            if kind_name == "EXPR" and not any(ch.isdigit() for ch in value):
                return value
            assert kind_name is not None
            stripped = value.strip()
            lead = value[: len(value) - len(value.lstrip())]
            trail = value[len(value.rstrip()) :]
            return lead + self.slot(SlotKind(kind_name), stripped) + trail

        return _EXTRACTOR.sub(replace, text)

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
        """Resolve a draft for display: known slots filled, unknown or half-drafted hidden."""
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
