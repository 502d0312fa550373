"""Dropping the oldest history so that a prompt and its reply fit the model's context.

Pure code: whether a history fits is the caller's question (it encodes the prompt); this
module only decides what to drop. The unit dropped is an *exchange*: a user message and
everything after it up to the next user message (tool calls with their results, replies,
operator messages), so a tool call never loses its result and a reply never loses its
question. The last exchange (the turn being answered, with this turn's tool rounds) is never
dropped, and neither are ``system`` items, wherever they stand: they are instructions. The
system prompt itself is not part of the history; the prompt builder always puts it first.

``fit_history`` goes further when that is not enough, one step at a time and only while the
prompt still does not fit (see its docstring); a prompt that does not fit even then is the
caller's to report (the agent loop ends the turn with its fallback reply, once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from assistant.agent.prompting import HistoryItem

Fits = Callable[[Sequence[HistoryItem]], bool]


def exchanges(history: Sequence[HistoryItem]) -> list[list[HistoryItem]]:
    """``history`` split before each user message (items before the first form one group)."""
    groups: list[list[HistoryItem]] = []
    for item in history:
        if item.role == "user" or not groups:
            groups.append([])
        groups[-1].append(item)
    return groups


def without_oldest(groups: Sequence[Sequence[HistoryItem]], count: int) -> list[HistoryItem]:
    """The history without its ``count`` oldest exchanges, their system items kept."""
    kept = [item for group in groups[:count] for item in group if item.role == "system"]
    return kept + [item for group in groups[count:] for item in group]


def trim_history(history: Sequence[HistoryItem], fits: Fits) -> tuple[list[HistoryItem], int]:
    """The longest tail of whole exchanges that ``fits``, and how many items were dropped.

    ``fits`` must be monotone (a shorter history never fits worse), which lets a binary
    search ask it O(log n) times. When even the last exchange alone does not fit, that is
    what is returned: there is nothing older left to drop, and the caller reports it.
    """
    items = list(history)
    if fits(items):
        return items, 0
    groups = exchanges(items)
    low, high = 1, max(1, len(groups) - 1)  # drop at least one; always keep the last
    while low < high:
        middle = (low + high) // 2
        if fits(without_oldest(groups, middle)):
            high = middle
        else:
            low = middle + 1
    trimmed = without_oldest(groups, low) if len(groups) > 1 else items
    return trimmed, len(items) - len(trimmed)


ELISION = " … "


def shorten_text(text: str, length: int) -> str:
    """``text`` cut to about ``length`` characters: its start and its end, the middle elided.

    A long message usually pastes something (a log, an email) around the actual question,
    which tends to come first or last.
    """
    if len(text) <= length:
        return text
    keep = max(0, length - len(ELISION))
    head = keep // 3
    return text[:head].rstrip() + ELISION + text[len(text) - (keep - head) :].lstrip()


def shorten_last_user_message(
    history: Sequence[HistoryItem], fits: Fits
) -> tuple[list[HistoryItem], int]:
    """When even the current exchange does not fit, cut its user message until it does.

    Returns the history and how many characters were left out (0: it already fit, or there
    is no user message to cut). The longest fitting length is found by binary search.
    """
    items = list(history)
    if fits(items):
        return items, 0
    users = [index for index, item in enumerate(items) if item.role == "user"]
    if not users:
        return items, 0
    at = users[-1]
    text = items[at].text

    def with_length(length: int) -> list[HistoryItem]:
        shortened = HistoryItem("user", shorten_text(text, length))
        return [*items[:at], shortened, *items[at + 1 :]]

    low, high = 0, len(text)  # with_length(low) is tried last if nothing longer fits
    while low < high:
        middle = (low + high + 1) // 2
        if fits(with_length(middle)):
            low = middle
        else:
            high = middle - 1
    shortened = with_length(low)
    return shortened, len(text) - len(shortened[at].text)


# The current user message is first cut to this many characters, before anything of the
# turn's own tool rounds is left out; only then, when still needed, cut further.
KEEP_USER_CHARS = 400


def _longest(fits: Callable[[int], bool], high: int) -> int:
    """The largest ``n`` in [0, high] with ``fits(n)``, by binary search (0 if none fits).

    ``fits`` must be monotone: a larger ``n`` never fits better.
    """
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _last_user(items: Sequence[HistoryItem]) -> int:
    """The index of the last user message (-1: none)."""
    users = [index for index, item in enumerate(items) if item.role == "user"]
    return users[-1] if users else -1


def cut_last_user_message(
    history: Sequence[HistoryItem], fits: Fits, floor: int = 0
) -> tuple[list[HistoryItem], int]:
    """Like :func:`shorten_last_user_message`, but never below ``floor`` characters."""
    items = list(history)
    at = _last_user(items)
    if at < 0 or fits(items) or len(items[at].text) <= floor:
        return items, 0
    text = items[at].text

    def with_length(length: int) -> list[HistoryItem]:
        shortened = HistoryItem("user", shorten_text(text, length))
        return [*items[:at], shortened, *items[at + 1 :]]

    length = max(floor, _longest(lambda n: n <= floor or fits(with_length(n)), len(text)))
    shortened = with_length(length)
    return shortened, len(text) - len(shortened[at].text)


def _tool_rounds(items: Sequence[HistoryItem]) -> list[int]:
    """Indexes of the tool calls after the last user message (this turn's rounds)."""
    start = _last_user(items) + 1
    return [i for i in range(start, len(items)) if items[i].role == "tool_call"]


def drop_tool_rounds(history: Sequence[HistoryItem], fits: Fits) -> tuple[list[HistoryItem], int]:
    """Leave out this turn's oldest tool rounds (a call with its result), the latest kept.

    The loop still holds them (and holds the reply to them); only the prompt loses them.
    Returns the history and how many rounds were left out.
    """
    items = list(history)
    calls = _tool_rounds(items)
    if fits(items) or len(calls) < 2:
        return items, 0

    def without(count: int) -> list[HistoryItem]:
        gone: set[int] = set()
        for index in calls[:count]:
            gone.add(index)
            if index + 1 < len(items) and items[index + 1].role == "tool_result":
                gone.add(index + 1)
        return [item for i, item in enumerate(items) if i not in gone]

    # The fewest rounds to leave out: the most kept that fit, counted from the newest.
    kept = _longest(lambda n: fits(without(len(calls) - 1 - n)), len(calls) - 1)
    return without(len(calls) - 1 - kept), len(calls) - 1 - kept


def _shorten_values(value: Any, length: int) -> Any:
    """``value`` with every string in it cut to about ``length`` characters."""
    if isinstance(value, str):
        return shorten_text(value, length)
    if isinstance(value, dict):
        return {key: _shorten_values(item, length) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten_values(item, length) for item in value]
    return value


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((_longest_string(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(item) for item in value), default=0)
    return 0


def shorten_tool_payloads(
    history: Sequence[HistoryItem], fits: Fits
) -> tuple[list[HistoryItem], int]:
    """Cut the strings of this turn's tool calls and results to a common length that fits.

    Returns the history and that length (0: nothing was cut).
    """
    items = list(history)
    start = _last_user(items) + 1
    tools = [i for i in range(start, len(items)) if items[i].role in ("tool_call", "tool_result")]
    longest = max((_longest_string(items[i].payload) for i in tools), default=0)
    if fits(items) or longest == 0:
        return items, 0

    def with_length(length: int) -> list[HistoryItem]:
        out = list(items)
        for i in tools:
            payload = _shorten_values(items[i].payload, length)
            out[i] = dataclasses.replace(items[i], payload=payload)
        return out

    length = _longest(lambda n: fits(with_length(n)), longest - 1)
    return with_length(length), length


def shorten_system_items(
    history: Sequence[HistoryItem], fits: Fits
) -> tuple[list[HistoryItem], int]:
    """The last resort: system items other than the latest left out, then the rest cut.

    Returns the history and how many characters of system text were left out.
    """
    items = list(history)
    systems = [i for i, item in enumerate(items) if item.role == "system"]
    if fits(items) or not systems:
        return items, 0
    before = sum(len(items[i].text) for i in systems)
    latest = systems[-1]
    items = [item for i, item in enumerate(items) if item.role != "system" or i == latest]
    at = next(i for i, item in enumerate(items) if item.role == "system")
    if not fits(items):
        text = items[at].text

        def with_length(length: int) -> list[HistoryItem]:
            shortened = HistoryItem("system", shorten_text(text, length))
            return [*items[:at], shortened, *items[at + 1 :]]

        items = with_length(_longest(lambda n: fits(with_length(n)), len(text)))
    return items, before - len(items[at].text)


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit_history` kept and what it left out, for the log."""

    items: list[HistoryItem]
    fits: bool
    dropped_items: int = 0  # items of whole earlier exchanges
    cut_chars: int = 0  # characters of the current user message
    dropped_rounds: int = 0  # this turn's earlier tool rounds
    payload_chars: int = 0  # the length tool strings were cut to (0: not cut)
    system_chars: int = 0  # characters of system items

    @property
    def changed(self) -> bool:
        return bool(
            self.dropped_items
            or self.cut_chars
            or self.dropped_rounds
            or self.payload_chars
            or self.system_chars
        )


def fit_history(history: Sequence[HistoryItem], fits: Fits) -> Fitted:
    """The history, reduced until ``fits`` holds, each step only while it does not yet.

    1. the oldest exchanges (``trim_history``);
    2. the current user message cut to ``KEEP_USER_CHARS``;
    3. this turn's older tool rounds (``drop_tool_rounds``);
    4. the current user message cut further, to nothing if need be;
    5. the strings of this turn's tool calls and results (``shorten_tool_payloads``);
    6. system items (``shorten_system_items``).

    ``fits`` must be monotone in each step. ``Fitted.fits`` is False when even all of that
    does not fit (a context too small for the system prompt and the reply).
    """
    items, dropped = trim_history(history, fits)
    items, cut = cut_last_user_message(items, fits, floor=KEEP_USER_CHARS)
    items, rounds = drop_tool_rounds(items, fits)
    items, more = cut_last_user_message(items, fits)
    items, payload = shorten_tool_payloads(items, fits)
    items, system = shorten_system_items(items, fits)
    return Fitted(items, fits(items), dropped, cut + more, rounds, payload, system)
