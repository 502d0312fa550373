"""Trimming the oldest history to fit the context: pure tests with a character budget."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from assistant.agent.prompting import HistoryItem
from assistant.agent.trimming import (
    ELISION,
    KEEP_USER_CHARS,
    Fits,
    exchanges,
    fit_history,
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


# fit_history: what goes after whole exchanges -----------------------------------------------


def weight(items: Sequence[HistoryItem]) -> int:
    """A budget that also counts tool payloads (the prompt shows them)."""
    return sum(len(i.text) + len(json.dumps(i.payload)) + 10 for i in items)


def within(budget: int) -> Fits:
    return lambda items: weight(items) <= budget


def long_call(i: int) -> list[HistoryItem]:
    return [
        HistoryItem("tool_call", tool="lookup_order", payload={"order_id": f"{i}" + "x" * 200}),
        HistoryItem("tool_result", tool="lookup_order", payload={"message": f"{i}" + "y" * 200}),
    ]


TURN = [
    HistoryItem("system", "Old note."),
    user("hello"),
    bot("hi"),
    HistoryItem("system", "Exercise: 3/4 + 1/8"),
    user("q" * 2000),
    *long_call(0),
    *long_call(1),
    *long_call(2),
]


def test_fit_history_keeps_what_fits_untouched() -> None:
    fitted = fit_history(TURN, within(10**6))
    assert fitted.items == TURN and fitted.fits and not fitted.changed


def test_the_user_message_is_cut_to_its_floor_before_tool_rounds_go() -> None:
    budget = weight(TURN) - 2000 + KEEP_USER_CHARS + 50
    fitted = fit_history(TURN, within(budget))
    assert fitted.fits and fitted.dropped_rounds == 0
    (message,) = [i for i in fitted.items if i.role == "user"]
    assert len(message.text) >= KEEP_USER_CHARS


def test_older_tool_rounds_of_this_turn_go_before_the_message_is_cut_further() -> None:
    """Room for one round beside the floor: the two older rounds go, the latest stays."""
    floor = [*TURN[3:4], user("q" * KEEP_USER_CHARS), *long_call(2)]
    fitted = fit_history(TURN, within(weight(floor) + 40))
    assert fitted.fits and fitted.dropped_rounds == 2
    assert fitted.items[-2:] == long_call(2)
    assert [i.role for i in fitted.items].count("tool_call") == 1


def test_tool_payloads_then_system_items_are_cut_as_a_last_resort() -> None:
    """Even the latest round with a one-character message does not fit: strings are cut."""
    fitted = fit_history(TURN, within(330))
    assert fitted.fits and 0 < fitted.payload_chars < 200
    assert fitted.items[-1].role == "tool_result" and fitted.items[-2].role == "tool_call"
    assert "Old note." not in [i.text for i in fitted.items] or fitted.system_chars == 0
    tighter = fit_history(TURN, within(120))
    assert tighter.fits and tighter.system_chars > 0
    assert [i.role for i in tighter.items].count("system") == 1


def test_a_budget_nothing_fits_in_is_reported() -> None:
    fitted = fit_history(TURN, within(5))
    assert not fitted.fits and fitted.changed
