"""Dropping the oldest history so that a prompt and its reply fit the model's context.

Pure code: whether a history fits is the caller's question (it encodes the prompt); this
module only decides what to drop. The unit dropped is an *exchange*: a user message and
everything after it up to the next user message (tool calls with their results, replies,
operator messages), so a tool call never loses its result and a reply never loses its
question. The last exchange (the turn being answered, with this turn's tool rounds) is never
dropped, and neither are ``system`` items, wherever they stand: they are instructions. The
system prompt itself is not part of the history; the prompt builder always puts it first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
