"""Trimming the oldest history to fit the context: pure tests with a character budget."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from assistant.agent.prompting import HistoryItem
from assistant.agent.trimming import (
    ELISION,
    Fits,
    exchanges,
    shorten_last_user_message,
    shorten_text,
    trim_history,
)


def user(text: str) -> HistoryItem:
    return HistoryItem("user", text)


def bot(text: str) -> HistoryItem:
    return HistoryItem("assistant", text)


def call(tool: str) -> HistoryItem:
    return HistoryItem("tool_call", tool=tool, payload={"q": tool})


def result(tool: str) -> HistoryItem:
    return HistoryItem("tool_result", tool=tool, payload={"ok": True})


def size(items: Sequence[HistoryItem]) -> int:
    return sum(len(i.text) + 10 for i in items)


def fits_in(budget: int) -> Fits:
    return lambda items: size(items) <= budget


HISTORY = [
    HistoryItem("operator", "Hi, how can we help?"),
    user("where is my order"),
    call("lookup_order"),
    result("lookup_order"),
    bot("It shipped yesterday."),
    HistoryItem("system", "Be brief."),
    user("and my refund"),
    bot("It is on its way."),
    user("thanks, one more question"),
    call("search_kb"),
    result("search_kb"),
]


def test_a_history_that_fits_is_kept_whole() -> None:
    assert trim_history(HISTORY, fits_in(10_000)) == (HISTORY, 0)


def test_exchanges_start_at_each_user_message() -> None:
    groups = exchanges(HISTORY)
    assert [len(g) for g in groups] == [1, 5, 2, 3]
    assert [g[0].role for g in groups] == ["operator", "user", "user", "user"]


def test_oldest_exchanges_go_first_whole() -> None:
    """Enough room for the last two exchanges: the first two go, tool pair included."""
    budget = size(HISTORY[5:])
    trimmed, dropped = trim_history(HISTORY, fits_in(budget))
    assert trimmed == HISTORY[5:]
    assert dropped == 5


def test_system_items_survive_and_the_current_exchange_is_never_dropped() -> None:
    trimmed, dropped = trim_history(HISTORY, fits_in(1))  # nothing fits
    assert trimmed == [HistoryItem("system", "Be brief."), *HISTORY[8:]]
    assert dropped == len(HISTORY) - len(trimmed)
    only_current = [user("x" * 100), call("search_kb"), result("search_kb")]
    assert trim_history(only_current, fits_in(1)) == (only_current, 0)


@given(
    st.lists(st.sampled_from(["user", "assistant", "tool", "system"]), max_size=30),
    st.integers(min_value=0, max_value=600),
)
def test_trimmed_history_is_a_fitting_suffix_with_pairs_intact(
    roles: list[str], budget: int
) -> None:
    history: list[HistoryItem] = []
    for i, role in enumerate(roles):
        if role == "tool":
            history += [call(f"t{i}"), result(f"t{i}")]
        else:
            history.append(HistoryItem(role, f"m{i}" * (i % 4)))
    trimmed, dropped = trim_history(history, fits_in(budget))
    assert dropped == len(history) - len(trimmed)
    # Every tool call is followed by its result.
    for a, b in itertools.pairwise(trimmed):
        if a.role == "tool_call":
            assert b.role == "tool_result" and b.tool == a.tool
    assert not trimmed or trimmed[-1].role != "tool_call"
    # Fits, unless only the current exchange (and system items) is left.
    groups = exchanges(history)
    if size(trimmed) > budget and len(groups) > 1:
        minimal = [i for g in groups[:-1] for i in g if i.role == "system"] + groups[-1]
        assert trimmed == minimal
    # Nothing kept is older than something dropped (system items aside).
    kept_plain = [i for i in trimmed if i.role != "system"]
    all_plain = [i for i in history if i.role != "system"]
    assert kept_plain == all_plain[len(all_plain) - len(kept_plain) :]


def test_shorten_text_keeps_start_and_end() -> None:
    """A cut text keeps its head and tail around an elision, within the length."""
    text = "Hello, my order. " + "x" * 500 + " Where is it?"
    short = shorten_text(text, 60)
    assert len(short) <= 60 and ELISION in short
    assert short.startswith("Hello") and short.endswith("Where is it?")
    assert shorten_text("short", 60) == "short"


def test_overlong_current_message_is_cut_until_it_fits() -> None:
    """When the current exchange alone is too long, its user message is cut to fit."""
    history = [HistoryItem("system", "Exercise: 2 + 2"), user("y" * 1000), call("lookup_order")]
    fits = fits_in(300)
    shortened, cut = shorten_last_user_message(history, fits)
    assert fits(shortened) and cut > 0
    assert shortened[0] == history[0] and shortened[2] == history[2]
    # The longest that fits: one more character would not.
    longer = shorten_text("y" * 1000, len(shortened[1].text) + 1)
    assert not fits([history[0], user(longer), history[2]])
    assert shorten_last_user_message(HISTORY, fits_in(10**6)) == (HISTORY, 0)
