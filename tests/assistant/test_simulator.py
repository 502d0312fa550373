"""The user simulator's conversations: split by construction, state-following replies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from assistant.demo.shop import build_shop
from assistant.lab.corpus import simulator
from assistant.lab.corpus.build import build_corpus, conversations, read_dialogues
from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.phrases import Phrases
from assistant.lab.evaluation import asks_something, too_short, unfinished
from assistant.tools.lookup_order import NOT_FOUND


@pytest.fixture(scope="module")
def train() -> list[Dialogue]:
    return list(conversations(600, "train", 5, build_shop()))


@pytest.fixture(scope="module")
def heldout() -> list[Dialogue]:
    return list(conversations(300, "heldout", 5, build_shop()))


def _user_texts(dialogues: list[Dialogue]) -> set[str]:
    return {item.text for d in dialogues for item in d.items if item.role == "user"}


def test_every_phrase_list_has_a_heldout_template() -> None:
    lists = [v for v in vars(simulator).values() if isinstance(v, Phrases)]
    lists += [p for pair in simulator.SMALL_TALK for p in pair]
    lists += list(simulator.PROBLEM_WORDS.values())
    assert len(lists) > 20
    for phrases in lists:
        assert phrases.of("heldout") and not set(phrases.of("heldout")) & set(phrases.of("train"))


def test_heldout_conversations_share_no_entity_or_message_with_training(
    train: list[Dialogue], heldout: list[Dialogue]
) -> None:
    store = build_shop()
    train_text = json.dumps([[vars(i) for i in d.items] for d in train])
    for order in store.orders_in("heldout"):
        assert order.number not in train_text and order.email not in train_text
    # Messages made of one template and no entity (small talk, a problem in the customer's
    # own words, a request for a person) are the sharpest check that templates are disjoint.
    held_plain = {t for t in _user_texts(heldout) if "@" not in t and "-" not in t}
    assert held_plain
    assert not held_plain & _user_texts(train)


def test_conversations_have_one_to_six_user_turns_and_a_handoff_only_last(
    train: list[Dialogue],
) -> None:
    for dialogue in train:
        assert 1 <= len(dialogue.turns) <= simulator.MAX_USER_TURNS
        tools = [t.tool for t in dialogue.turns]
        if "handoff_to_human" in tools:
            assert tools.index("handoff_to_human") == len(tools) - 1
    assert sum(len(d.turns) >= 3 for d in train) > len(train) / 3


def test_every_user_turn_is_answered_by_what_its_expectation_says(train: list[Dialogue]) -> None:
    """The assistant side follows the state: the tool expected is the one called, with the
    expected arguments, and the reply after it quotes the expected facts."""
    for dialogue in train:
        for number, turn in enumerate(dialogue.turns):
            end = (
                dialogue.turns[number + 1].index
                if number + 1 < len(dialogue.turns)
                else len(dialogue.items)
            )
            after = dialogue.items[turn.index + 1 : end]
            calls = [i for i in after if i.role == "tool_call"]
            if turn.tool is None:
                assert not calls
            else:
                assert calls[0].tool == turn.tool and calls[0].payload == turn.arguments
            reply = after[-1]
            assert reply.role == "assistant"
            for fact in turn.facts:
                if not fact.startswith("T-") or turn.tool == "create_ticket":
                    assert fact in reply.text, (fact, reply.text)


def test_a_new_question_never_gets_an_earlier_answer(train: list[Dialogue]) -> None:
    for dialogue in train:
        said: list[str] = []
        for item_index, item in enumerate(dialogue.items):
            if item.role != "assistant":
                continue
            turn = max((t for t in dialogue.turns if t.index < item_index), key=lambda t: t.index)
            if turn.tool is not None or turn.facts:
                assert item.text not in said
            said.append(item.text)


def test_replies_are_whole_sentences(train: list[Dialogue]) -> None:
    """Every reply ends its sentence; one that answers a question has three words or more
    (a reply to "thanks" may be "My pleasure!")."""
    for dialogue in train:
        for item_index, item in enumerate(dialogue.items):
            if item.role != "assistant":
                continue
            turn = max((t for t in dialogue.turns if t.index < item_index), key=lambda t: t.index)
            assert not unfinished(item.text), item.text
            if asks_something(turn, dialogue.items[turn.index].text):
                assert not too_short(item.text), item.text


def test_the_simulator_covers_the_multi_turn_cases_of_issue_14(train: list[Dialogue]) -> None:
    """Slots across turns, corrections, follow-ups, mid-conversation hand-offs, problems in
    the customer's words, another customer's order."""
    seen = {
        "slot across turns": 0,
        "correction": 0,
        "follow-up": 0,
        "late handoff": 0,
        "ticket after asking the number": 0,
        "other customer": 0,
    }
    for d in train:
        items = d.items
        for n, turn in enumerate(d.turns):
            before = [i for i in items[: turn.index] if i.role == "tool_result"]
            if (
                turn.tool == "lookup_order"
                and n
                and not any(
                    c in items[turn.index].text for c in (turn.arguments or {}).values() if "@" in c
                )
            ):
                seen["slot across turns"] += 1
            if turn.tool == "lookup_order" and before and before[-1].payload == NOT_FOUND:
                seen["correction"] += 1
            if turn.tool is None and turn.facts:
                seen["follow-up"] += 1
            if turn.tool == "handoff_to_human" and n >= 2:
                seen["late handoff"] += 1
            if turn.tool == "create_ticket" and n and d.turns[n - 1].tool is None:
                seen["ticket after asking the number"] += 1
            if turn.tool == "lookup_order" and "other_customer" in d.intent:
                seen["other customer"] += 1
    assert all(count > 5 for count in seen.values()), seen


def test_corpus_build_writes_conversation_files(tmp_path: Path) -> None:
    stats = build_corpus(
        tmp_path, train_dialogues=20, heldout_dialogues=10, seed=2, conversation_counts=(30, 8, 4)
    )
    assert stats["train"]["domains"]["conversation"] == 30
    held = list(read_dialogues(tmp_path / "heldout_conversations.jsonl"))
    dev = list(read_dialogues(tmp_path / "dev_conversations.jsonl"))
    assert len(held) == 8 and {d.split for d in held} == {"heldout"}
    assert len(dev) == 4 and {d.split for d in dev} == {"dev"}
    # The single-turn held-out set does not move when conversations are added.
    alone = tmp_path / "alone"
    build_corpus(alone, train_dialogues=20, heldout_dialogues=10, seed=2)
    assert (alone / "heldout_dialogues.jsonl").read_text() == (
        tmp_path / "heldout_dialogues.jsonl"
    ).read_text()


def test_training_examples_are_cut_as_serving_cuts_them() -> None:
    """With a token budget, the oldest exchanges go first and the turn to learn stays."""
    from assistant.lab.corpus.build import training_examples

    dialogue = simulator.conversation(random.Random(1), build_shop(), "train")
    while len(dialogue.turns) < 4:
        dialogue = simulator.conversation(random.Random(len(dialogue.items)), build_shop(), "train")

    def fits(channel: str, history: list[object]) -> bool:
        return sum(1 for item in history if getattr(item, "role", "") == "user") <= 2

    for example in training_examples(dialogue, fits=fits):
        users = [m for m in example["messages"] if m["role"] == "user"]
        assert 1 <= len(users) <= 2


def test_training_only_tasks_never_reach_heldout_conversations(
    train: list[Dialogue], heldout: list[Dialogue]
) -> None:
    from assistant.lab.corpus.refusals import UNSAFE

    assert any("unsafe" in d.intent for d in train)
    assert not any("unsafe" in d.intent for d in heldout)
    # The held-out split draws its goals from ``TASKS`` alone, so its draws are those from
    # before the training-only tasks were added.
    assert simulator.tasks_of("heldout") is simulator.TASKS
    assert set(simulator.tasks_of("train")) == set(simulator.TASKS) | set(simulator.TRAINING_TASKS)
    assert set(UNSAFE.of("train")) & _user_texts(train)
